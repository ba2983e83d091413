//! [`Tensor`]: a shared, immutable handle to a strided view of a storage, plus the autograd
//! record of the op that made it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use half::{bf16, f16};

use crate::autograd::{self, GradFn};
use crate::error::{Result, TensorError, invalid};
use crate::layout::Layout;
use crate::storage::{CpuStorage, GpuStorage, Storage};
use crate::{DType, Device};

/// A process-unique tensor identity (gradients are keyed by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn next() -> TensorId {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        TensorId(COUNTER.fetch_add(1, Ordering::Relaxed))
    }
}

/// An n-dimensional array. Cloning is cheap (an `Arc`); ops return new tensors. A tensor made
/// by an op from inputs that require gradients remembers the op (its [`GradFn`]) so that
/// [`Tensor::backward`] can send gradients back; the record is freed with the tensor.
#[derive(Clone)]
pub struct Tensor(Arc<TensorInner>);

struct TensorInner {
    id: TensorId,
    storage: Arc<RwLock<Storage>>,
    layout: Layout,
    dtype: DType,
    grad_fn: Option<Arc<GradFn>>,
    /// A leaf whose gradient `backward` returns (a parameter or an input being differentiated).
    is_variable: bool,
}

/// Types a tensor can be built from and read back as.
pub trait Element: Copy + Send + Sync + 'static {
    const DTYPE: DType;
    fn into_cpu_storage(data: Vec<Self>) -> CpuStorage;
    fn from_cpu_storage(storage: &CpuStorage) -> Option<&[Self]>;
}

macro_rules! impl_element {
    ($t:ty, $dtype:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$dtype;
            fn into_cpu_storage(data: Vec<Self>) -> CpuStorage {
                CpuStorage::$dtype(data)
            }
            fn from_cpu_storage(storage: &CpuStorage) -> Option<&[Self]> {
                match storage {
                    CpuStorage::$dtype(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
impl_element!(f32, F32);
impl_element!(f64, F64);
impl_element!(f16, F16);
impl_element!(bf16, BF16);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = self.0.grad_fn.as_ref().map(|g| g.op);
        write!(f, "Tensor({:?}, {:?}, {:?}", self.shape(), self.dtype(), self.device())?;
        if let Some(op) = op {
            write!(f, ", grad_fn={op}")?;
        }
        if self.numel() <= 16 {
            write!(f, ", {:?}", self.to_vec_f64())?;
        }
        write!(f, ")")
    }
}

impl Tensor {
    // ---- construction ------------------------------------------------------------------

    /// A tensor on `device` holding `data` in row-major order.
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize], device: Device) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if data.len() != numel {
            return invalid("from_vec", format!("{} elements do not fill shape {shape:?}", data.len()));
        }
        Tensor::from_storage(Storage::Cpu(T::into_cpu_storage(data)), Layout::contiguous(shape)).to_device(device)
    }

    /// A CPU tensor of `dtype` from f64 values (rounded to the dtype).
    pub fn from_f64(values: &[f64], shape: &[usize], dtype: DType) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if values.len() != numel {
            return invalid("from_f64", format!("{} elements do not fill shape {shape:?}", values.len()));
        }
        let storage = CpuStorage::from_f64(values.iter().copied(), dtype);
        Ok(Tensor::from_storage(Storage::Cpu(storage), Layout::contiguous(shape)))
    }

    /// A rank-0 tensor.
    pub fn scalar(value: f64, dtype: DType) -> Tensor {
        Tensor::full(&[], value, dtype)
    }

    /// A CPU tensor of `shape` with every element `value`.
    pub fn full(shape: &[usize], value: f64, dtype: DType) -> Tensor {
        let numel = shape.iter().product();
        let storage = CpuStorage::from_f64(std::iter::repeat_n(value, numel), dtype);
        Tensor::from_storage(Storage::Cpu(storage), Layout::contiguous(shape))
    }

    pub fn zeros(shape: &[usize], dtype: DType) -> Tensor {
        let numel = shape.iter().product();
        Tensor::from_storage(Storage::Cpu(CpuStorage::zeros(numel, dtype)), Layout::contiguous(shape))
    }

    pub fn ones(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::full(shape, 1.0, dtype)
    }

    /// Zeros with the shape, dtype and device of `self`.
    /// Zeros of this tensor's shape and dtype, on its device.
    pub fn zeros_like(&self) -> Result<Tensor> {
        self.full_like(0.0)
    }

    /// Ones of this tensor's shape and dtype, on its device.
    pub fn ones_like(&self) -> Result<Tensor> {
        self.full_like(1.0)
    }

    /// `value` in every element, with this tensor's shape and dtype, on its device.
    pub fn full_like(&self, value: f64) -> Result<Tensor> {
        match self.device() {
            Device::Cuda(ordinal) if self.dtype() == DType::F32 => {
                let buffer = crate::ops::movement::cuda::full(&crate::cuda::device(ordinal)?, self.numel(), value as f32)?;
                Ok(Tensor::from_storage(Storage::Cuda(GpuStorage { buffer, dtype: DType::F32, ordinal }), Layout::contiguous(self.shape())))
            }
            device => Tensor::full(self.shape(), value, self.dtype()).to_device(device),
        }
    }

    pub(crate) fn from_storage(storage: Storage, layout: Layout) -> Tensor {
        Tensor::from_shared_storage(Arc::new(RwLock::new(storage)), layout)
    }

    fn from_shared_storage(storage: Arc<RwLock<Storage>>, layout: Layout) -> Tensor {
        let dtype = storage.read().unwrap().dtype();
        Tensor(Arc::new(TensorInner { id: TensorId::next(), storage, layout, dtype, grad_fn: None, is_variable: false }))
    }

    /// A view of the same storage with another layout (no autograd record: the op that makes
    /// the view adds one).
    pub(crate) fn view_with_layout(&self, layout: Layout) -> Tensor {
        Tensor::from_shared_storage(self.0.storage.clone(), layout)
    }

    /// Records how to send gradients back to `inputs`: `backward(grad_of_self)` returns one
    /// optional gradient per input, each of that input's shape. Recorded only when grad mode
    /// is on and some input requires a gradient; otherwise `self` is returned unchanged.
    ///
    /// The closure must not capture the returned tensor (that would be a cycle); capture
    /// `self` before calling this (it carries no record) to save the output.
    pub(crate) fn with_backward(
        self,
        op: &'static str,
        inputs: &[&Tensor],
        backward: impl Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Tensor {
        crate::profile::mark_forward(op);
        if !autograd::is_grad_enabled() || !inputs.iter().any(|t| t.requires_grad()) {
            return self;
        }
        let id = TensorId::next();
        let grad_fn = GradFn::new(op, id, inputs, Box::new(backward));
        self.new_handle(id, Some(Arc::new(grad_fn)), false)
    }

    /// A new tensor (id `id`) over the same storage and layout, with its own autograd role.
    fn new_handle(&self, id: TensorId, grad_fn: Option<Arc<GradFn>>, is_variable: bool) -> Tensor {
        Tensor(Arc::new(TensorInner { id, storage: self.0.storage.clone(), layout: self.0.layout.clone(), dtype: self.0.dtype, grad_fn, is_variable }))
    }

    /// A leaf sharing this tensor's storage whose gradient [`Tensor::backward`] returns.
    pub fn variable(&self) -> Tensor {
        self.new_handle(TensorId::next(), None, true)
    }

    /// A tensor sharing this storage but cut off from the graph: no gradient flows through it.
    pub fn detach(&self) -> Tensor {
        self.view_with_layout(self.0.layout.clone())
    }

    // ---- accessors -----------------------------------------------------------------------

    pub fn id(&self) -> TensorId {
        self.0.id
    }
    pub fn shape(&self) -> &[usize] {
        self.0.layout.shape()
    }
    pub fn rank(&self) -> usize {
        self.0.layout.rank()
    }
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    /// Where the storage is (read from the storage itself, which [`Tensor::relocate`] may move).
    pub fn device(&self) -> Device {
        self.storage().device()
    }
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }
    /// Size of axis `axis` (negative counts from the end).
    pub fn dim(&self, axis: isize) -> Result<usize> {
        Ok(self.shape()[crate::layout::normalize_axis("dim", axis, self.rank())?])
    }
    /// Whether gradients flow into this tensor (a variable, or made from one with grad on).
    pub fn requires_grad(&self) -> bool {
        self.0.is_variable || self.0.grad_fn.is_some()
    }
    pub fn is_variable(&self) -> bool {
        self.0.is_variable
    }
    pub(crate) fn grad_fn(&self) -> Option<&Arc<GradFn>> {
        self.0.grad_fn.as_ref()
    }
    /// How many tensors (handles and saved views) hold this storage.
    #[cfg(test)]
    pub(crate) fn storage_holders(&self) -> usize {
        Arc::strong_count(&self.0.storage)
    }
    /// A weak handle on the storage, to see when it is freed.
    #[cfg(test)]
    pub(crate) fn storage_weak(&self) -> std::sync::Weak<RwLock<Storage>> {
        Arc::downgrade(&self.0.storage)
    }
    /// Whether two tensors are views of one storage.
    pub fn shares_storage_with(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    /// Read access to the storage (kernels read through this).
    pub(crate) fn storage(&self) -> RwLockReadGuard<'_, Storage> {
        self.0.storage.read().unwrap()
    }

    /// `self + other` (same shape): written into this tensor's own storage when this handle is
    /// its only holder (no other handle, view or weak reference can see the change), it is a
    /// whole contiguous CPU buffer and `other` has its dtype; else a fresh sum. The backward
    /// pass sums gradients with it.
    pub(crate) fn add_into_own(mut self, other: &Tensor) -> Result<Tensor> {
        let whole = self.layout().contiguous_range().is_some_and(|r| r.start == 0);
        if whole && self.shape() == other.shape() && self.dtype() == other.dtype() && other.device() == Device::Cpu {
            let other = other.contiguous()?;
            let other_storage = other.storage();
            let range = other.layout().contiguous_range().expect("contiguous");
            if let Some(inner) = Arc::get_mut(&mut self.0)
                && let Some(lock) = Arc::get_mut(&mut inner.storage)
                && let Storage::Cpu(mine) = lock.get_mut().unwrap_or_else(|p| p.into_inner())
                && let Storage::Cpu(theirs) = &*other_storage
            {
                let added = match (mine, theirs) {
                    (CpuStorage::F32(a), CpuStorage::F32(b)) => add_assign_slices(a, &b[range]),
                    (CpuStorage::F64(a), CpuStorage::F64(b)) => add_assign_slices(a, &b[range]),
                    _ => false,
                };
                if added {
                    drop(other_storage);
                    return Ok(self);
                }
            }
        }
        self.add(other)
    }

    /// Write access to the storage, for in-place updates (optimizers).
    pub(crate) fn storage_mut(&self) -> std::sync::RwLockWriteGuard<'_, Storage> {
        self.0.storage.write().unwrap()
    }

    /// A copy with its own fresh contiguous storage (no autograd record).
    pub fn deep_copy(&self) -> Result<Tensor> {
        let storage = match &*self.storage() {
            Storage::Cpu(cpu) => Storage::Cpu(crate::cpu::copy::gather_storage(cpu, self.layout())),
            Storage::Cuda(gpu) => {
                check_f32_on_device("deep_copy", gpu)?;
                let buffer = crate::ops::movement::cuda::gather(&gpu.buffer, self.layout())?;
                Storage::Cuda(GpuStorage { buffer, dtype: gpu.dtype, ordinal: gpu.ordinal })
            }
        };
        Ok(Tensor::from_storage(storage, Layout::contiguous(self.shape())))
    }

    // ---- reading values out -------------------------------------------------------------

    /// The elements in row-major order, converted to f64 (copied from the device first if
    /// the tensor is on one; panics only if that copy fails, as a driver error).
    pub fn to_vec_f64(&self) -> Vec<f64> {
        let storage = self.storage();
        let offsets = self.layout().offsets();
        match &*storage {
            Storage::Cpu(cpu) => cpu.gather_f64(offsets.into_iter()),
            Storage::Cuda(gpu) => {
                crate::cuda::download(gpu).unwrap_or_else(|e| panic!("to_vec_f64: copying from the device failed: {e}")).gather_f64(offsets.into_iter())
            }
        }
    }

    /// The elements in row-major order as `T`, which must be the tensor's dtype.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(TensorError::DTypeMismatch { op: "to_vec", lhs: self.dtype(), rhs: T::DTYPE });
        }
        if self.device() != Device::Cpu {
            return self.to_device(Device::Cpu)?.to_vec();
        }
        let storage = self.storage();
        let data = T::from_cpu_storage(storage.cpu("to_vec")?).expect("dtype checked");
        Ok(match self.layout().contiguous_range() {
            Some(range) => data[range].to_vec(),
            None => self.layout().offsets().into_iter().map(|o| data[o]).collect(),
        })
    }

    /// The value of a one-element tensor.
    pub fn item(&self) -> Result<f64> {
        if self.numel() != 1 {
            return invalid("item", format!("tensor of shape {:?} has {} elements, not 1", self.shape(), self.numel()));
        }
        Ok(self.to_vec_f64()[0])
    }

    // ---- device and dtype ------------------------------------------------------------------

    /// This tensor on `device` (the same tensor if it is there already), contiguous when
    /// copied. Backward: the gradient moves back to this tensor's device.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        let source = self.device();
        if device == source {
            return Ok(self.clone());
        }
        // Through the host: gather the view there, then upload if the target is a GPU.
        let host = match &*self.storage() {
            Storage::Cpu(cpu) => crate::cpu::copy::gather_storage(cpu, self.layout()),
            Storage::Cuda(gpu) => crate::cpu::copy::gather_storage(&crate::cuda::download(gpu)?, self.layout()),
        };
        let storage = match device {
            Device::Cpu => Storage::Cpu(host),
            Device::Cuda(ordinal) => Storage::Cuda(crate::cuda::upload(&host, ordinal)?),
        };
        let out = Tensor::from_storage(storage, Layout::contiguous(self.shape()));
        Ok(out.with_backward("to_device", &[self], move |grad| Ok(vec![Some(grad.to_device(source)?)])))
    }

    /// Moves this tensor's whole storage to `device`, in place: this tensor and every view
    /// of the storage now live there (layouts unchanged). For moving a model's parameters
    /// (`ember_unet::module::to_device`); an op's output is moved with [`Tensor::to_device`].
    pub fn relocate(&self, device: Device) -> Result<()> {
        let mut storage = self.0.storage.write().unwrap();
        if storage.device() == device {
            return Ok(());
        }
        let moved = match (&*storage, device) {
            (Storage::Cpu(cpu), Device::Cuda(ordinal)) => Storage::Cuda(crate::cuda::upload(cpu, ordinal)?),
            (Storage::Cuda(gpu), Device::Cpu) => Storage::Cpu(crate::cuda::download(gpu)?),
            (Storage::Cuda(gpu), Device::Cuda(ordinal)) => Storage::Cuda(crate::cuda::upload(&crate::cuda::download(gpu)?, ordinal)?),
            (Storage::Cpu(_), Device::Cpu) => unreachable!("same device returned above"),
        };
        *storage = moved;
        Ok(())
    }

    /// This tensor converted to `dtype` (values rounded). Differentiable between f32 and f64.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let storage = CpuStorage::from_f64(self.to_vec_f64().into_iter(), dtype);
        let source_dtype = self.dtype();
        let out = Tensor::from_storage(Storage::Cpu(storage), Layout::contiguous(self.shape())).to_device(self.device())?.detach();
        Ok(out.with_backward("to_dtype", &[self], move |grad| Ok(vec![Some(grad.to_dtype(source_dtype)?)])))
    }

    /// Overwrites this tensor's elements with `values`' (same shape and dtype), in place: every
    /// view of the storage sees the change. Optimizers update parameters this way. Not
    /// recorded by autograd.
    pub fn assign(&self, values: &Tensor) -> Result<()> {
        if values.shape() != self.shape() {
            return Err(TensorError::ShapeMismatch { op: "assign", lhs: self.shape().to_vec(), rhs: values.shape().to_vec() });
        }
        if values.dtype() != self.dtype() {
            return Err(TensorError::DTypeMismatch { op: "assign", lhs: self.dtype(), rhs: values.dtype() });
        }
        crate::ops::check_same("assign", &[self, values])?;
        crate::dispatch::kernels(self).assign(self, values)
    }
}

/// `a += b` element by element (threads for long runs); false if the lengths differ.
fn add_assign_slices<T: crate::FloatElem>(a: &mut [T], b: &[T]) -> bool {
    use rayon::prelude::*;
    if a.len() != b.len() {
        return false;
    }
    a.par_chunks_mut(1 << 15).zip(b.par_chunks(1 << 15)).for_each(|(a, b)| {
        for (x, &y) in a.iter_mut().zip(b) {
            *x += y;
        }
    });
    true
}

/// A copy of `storage[range]`.
pub(crate) fn slice_storage(storage: &CpuStorage, range: std::ops::Range<usize>) -> CpuStorage {
    match storage {
        CpuStorage::F32(v) => CpuStorage::F32(v[range].to_vec()),
        CpuStorage::F64(v) => CpuStorage::F64(v[range].to_vec()),
        CpuStorage::F16(v) => CpuStorage::F16(v[range].to_vec()),
        CpuStorage::BF16(v) => CpuStorage::BF16(v[range].to_vec()),
    }
}

/// The CUDA kernels are f32; other dtypes may live on a device but have no kernels there.
pub(crate) fn check_f32_on_device(op: &'static str, storage: &GpuStorage) -> Result<()> {
    if storage.dtype != DType::F32 {
        return Err(TensorError::UnsupportedDType { op, dtype: storage.dtype });
    }
    Ok(())
}
