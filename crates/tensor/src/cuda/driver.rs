//! [`CudaDevice`]: the [`GpuBackend`] of a real GPU, through the CUDA driver API (cudarc).
//!
//! - One primary context and one stream per device: every copy, fill and launch is queued
//!   on that stream, so they run in the order they were issued.
//! - Kernel files are compiled with NVRTC on the first launch of one of their kernels, to a
//!   cubin for the device's architecture, and the loaded module is kept for the device's
//!   life. With `EMBER_CUDA_CACHE=<dir>` the cubins are also kept on disk, named by a hash of
//!   the source, the header, the architecture and the NVRTC options.
//! - A caching allocator: freed blocks go to a free list per size class and are handed out
//!   again without a driver call. Reuse is safe because the one stream orders the new owner's
//!   work after the old owner's. On out-of-memory the cache is emptied and the allocation
//!   tried once more.
//!
//! cudarc loads `libcuda.so` lazily and panics if it is missing, so [`CudaDevice::new`] checks
//! for it first and returns [`TensorError::DeviceUnavailable`] instead.

use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use cudarc::driver::result::{self as cu, DriverError};
use cudarc::driver::sys;

use super::backend::{GpuBackend, Kernel, KernelArg, LaunchConfig};
use super::{nvrtc, sources};
use crate::{Device, Result, TensorError};

/// Dynamic shared memory a kernel may use without opting in (`cuFuncSetAttribute`).
const DEFAULT_DYNAMIC_SHARED_BYTES: u32 = 48 * 1024;

/// A CUDA GPU: its context, its stream, its loaded kernel files and its memory cache.
pub struct CudaDevice {
    ordinal: usize,
    name: String,
    /// Compute capability as 10 * major + minor (80 for sm_80, 90 for sm_90).
    arch: u32,
    /// The most dynamic shared memory a block may opt in to.
    max_shared_optin: u32,
    device: sys::CUdevice,
    context: sys::CUcontext,
    stream: sys::CUstream,
    modules: Mutex<Modules>,
    pool: Mutex<Pool>,
    /// The last kernel queued, to name it when a later call reports an asynchronous fault.
    last_kernel: Mutex<Option<Kernel>>,
}

// SAFETY: the driver API is thread-safe; the handles (context, stream, modules, functions)
// are plain identifiers valid on any thread once the context is made current, which every
// method does first (`bind`). Mutable state is behind mutexes.
unsafe impl Send for CudaDevice {}
unsafe impl Sync for CudaDevice {}

/// Loaded kernel files and the functions looked up in them.
#[derive(Default)]
struct Modules {
    by_file: HashMap<&'static str, sys::CUmodule>,
    functions: HashMap<Kernel, Function>,
}

#[derive(Clone, Copy)]
struct Function {
    handle: sys::CUfunction,
    /// The dynamic shared memory this function has been allowed so far.
    max_dynamic_shared: u32,
}

/// The caching allocator's state: free blocks by size class.
#[derive(Default)]
struct Pool {
    free: HashMap<usize, Vec<u64>>,
    cached_bytes: usize,
    in_use_bytes: usize,
    /// The most `in_use_bytes` has been since the device opened or [`CudaDevice::reset_peak`].
    peak_in_use_bytes: usize,
}

impl Pool {
    /// Counts a block of `class` bytes as handed out.
    fn hand_out(&mut self, class: usize) {
        self.in_use_bytes += class;
        self.peak_in_use_bytes = self.peak_in_use_bytes.max(self.in_use_bytes);
    }
}

impl CudaDevice {
    /// Opens GPU `ordinal`: retains its primary context and creates its stream.
    ///
    /// [`TensorError::DeviceUnavailable`] when the driver library is absent, the driver fails
    /// to initialize, or there is no such device.
    pub fn new(ordinal: usize) -> Result<Arc<CudaDevice>> {
        let unavailable = |reason: String| TensorError::DeviceUnavailable { op: "CudaDevice::new", device: Device::Cuda(ordinal), reason };
        // SAFETY: only tries to open the library by its candidate names.
        if !unsafe { sys::is_culib_present() } {
            return Err(unavailable("the CUDA driver library (libcuda.so) was not found".into()));
        }
        cu::init().map_err(|e| unavailable(format!("cuInit failed: {}", describe_error(e))))?;
        let count = cu::device::get_count().map_err(|e| unavailable(format!("cuDeviceGetCount: {}", describe_error(e))))?;
        if ordinal >= count.max(0) as usize {
            return Err(unavailable(format!("{count} CUDA device(s) present")));
        }
        let device = cu::device::get(ordinal as i32).map_err(|e| unavailable(format!("cuDeviceGet: {}", describe_error(e))))?;
        let name = cu::device::get_name(device).map_err(|e| driver_error("cuDeviceGetName", e))?;
        let attribute = |attribute: sys::CUdevice_attribute| {
            // SAFETY: `device` came from cuDeviceGet.
            unsafe { cu::device::get_attribute(device, attribute) }.map_err(|e| driver_error(&format!("cuDeviceGetAttribute({attribute:?})"), e))
        };
        use sys::CUdevice_attribute::*;
        let major = attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let max_shared_optin = attribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;

        // SAFETY: `device` came from cuDeviceGet; the context is released in Drop.
        let context = unsafe { cu::primary_ctx::retain(device) }.map_err(|e| driver_error("cuDevicePrimaryCtxRetain", e))?;
        let stream = (|| {
            // SAFETY: a context just retained.
            unsafe { cu::ctx::set_current(context) }.map_err(|e| driver_error("cuCtxSetCurrent", e))?;
            cu::stream::create(cu::stream::StreamKind::NonBlocking).map_err(|e| driver_error("cuStreamCreate", e))
        })();
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // SAFETY: retained above and not used after this.
                let _ = unsafe { cu::primary_ctx::release(device) };
                return Err(e);
            }
        };
        Ok(Arc::new(CudaDevice {
            ordinal,
            name,
            arch: (major * 10 + minor) as u32,
            max_shared_optin: max_shared_optin.max(0) as u32,
            device,
            context,
            stream,
            modules: Mutex::default(),
            pool: Mutex::default(),
            last_kernel: Mutex::default(),
        }))
    }

    /// The process's one [`CudaDevice`] for `ordinal`, opened on first use, so that kernel
    /// files are compiled and loaded once per process.
    pub fn shared(ordinal: usize) -> Result<Arc<CudaDevice>> {
        static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<CudaDevice>>>> = OnceLock::new();
        let mut devices = lock(DEVICES.get_or_init(Mutex::default));
        if let Some(device) = devices.get(&ordinal) {
            return Ok(device.clone());
        }
        let device = CudaDevice::new(ordinal)?;
        devices.insert(ordinal, device.clone());
        Ok(device)
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Compute capability as 10 * major + minor (the `XY` of `sm_XY`).
    pub fn arch(&self) -> u32 {
        self.arch
    }

    /// Bytes held in the allocator's free lists (allocated from the driver, not in use).
    pub fn cached_bytes(&self) -> usize {
        lock(&self.pool).cached_bytes
    }

    /// Bytes handed out by [`GpuBackend::alloc`] and not yet freed (rounded to size classes).
    pub fn in_use_bytes(&self) -> usize {
        lock(&self.pool).in_use_bytes
    }

    /// The most bytes in use at once since the device opened or the last [`CudaDevice::reset_peak`]
    /// (PyTorch's `torch.cuda.max_memory_allocated`, in size classes).
    pub fn peak_in_use_bytes(&self) -> usize {
        lock(&self.pool).peak_in_use_bytes
    }

    /// Starts a new peak from the bytes in use now.
    pub fn reset_peak(&self) {
        let mut pool = lock(&self.pool);
        pool.peak_in_use_bytes = pool.in_use_bytes;
    }

    /// Waits for the stream, then gives every cached free block back to the driver.
    pub fn empty_cache(&self) -> Result<()> {
        self.bind()?;
        self.empty_pool(&mut lock(&self.pool))
    }

    fn empty_pool(&self, pool: &mut Pool) -> Result<()> {
        // A cached block may still be read by queued work of its previous owner.
        self.sync_stream()?;
        let mut first_error = None;
        for (class, blocks) in pool.free.drain() {
            for ptr in blocks {
                // SAFETY: allocated by cuMemAlloc, owned by the free list, no work pending.
                if let Err(e) = unsafe { cu::free_sync(ptr) } {
                    first_error.get_or_insert(driver_error(&format!("cuMemFree of {class} bytes"), e));
                }
            }
        }
        pool.cached_bytes = 0;
        first_error.map_or(Ok(()), Err)
    }

    /// Makes this device's context current on the calling thread.
    fn bind(&self) -> Result<()> {
        let current = cu::ctx::get_current().map_err(|e| driver_error("cuCtxGetCurrent", e))?;
        if current != Some(self.context) {
            // SAFETY: our retained primary context, released only in Drop.
            unsafe { cu::ctx::set_current(self.context) }.map_err(|e| driver_error("cuCtxSetCurrent", e))?;
        }
        Ok(())
    }

    /// Waits for the stream. A fault in queued work is reported naming the last kernel.
    fn sync_stream(&self) -> Result<()> {
        // SAFETY: our stream, destroyed only in Drop.
        unsafe { cu::stream::synchronize(self.stream) }.map_err(|e| {
            let what = match *lock(&self.last_kernel) {
                Some(kernel) => {
                    format!("cuStreamSynchronize (last kernel queued: {}::{})", kernel.file, kernel.name)
                }
                None => "cuStreamSynchronize".into(),
            };
            driver_error(&what, e)
        })
    }

    /// The function for `kernel`, compiling and loading its file on first use.
    fn function(&self, modules: &mut Modules, kernel: Kernel) -> Result<Function> {
        if let Some(function) = modules.functions.get(&kernel) {
            return Ok(*function);
        }
        let module = match modules.by_file.get(kernel.file) {
            Some(module) => *module,
            None => {
                let module = self.load_file(kernel.file)?;
                modules.by_file.insert(kernel.file, module);
                module
            }
        };
        let name = CString::new(kernel.name).map_err(|_| TensorError::Cuda { what: kernel_name(kernel), msg: "kernel name holds a NUL byte".into() })?;
        // SAFETY: a module loaded in this context and not unloaded before Drop.
        let handle = unsafe { cu::module::get_function(module, name) }.map_err(|e| driver_error(&format!("cuModuleGetFunction {}", kernel_name(kernel)), e))?;
        let function = Function { handle, max_dynamic_shared: DEFAULT_DYNAMIC_SHARED_BYTES };
        modules.functions.insert(kernel, function);
        Ok(function)
    }

    /// Compiles (or reads from the disk cache) and loads one kernel file.
    fn load_file(&self, file: &'static str) -> Result<sys::CUmodule> {
        let source = sources::source(file).ok_or_else(|| TensorError::Cuda { what: format!("kernel file {file}"), msg: "not in sources::FILES".into() })?;
        let cache = disk_cache_path(file, source, self.arch);
        // A cached cubin that does not load (truncated, foreign) is compiled afresh.
        if let Some(path) = &cache
            && let Ok(cubin) = std::fs::read(path)
            && let Ok(module) = load_cubin(file, &cubin)
        {
            return Ok(module);
        }
        let compiled = nvrtc::compile_cubin(file, source, self.arch, false)?;
        let module = load_cubin(file, &compiled.cubin)?;
        if let Some(path) = &cache {
            write_atomically(path, &compiled.cubin);
        }
        Ok(module)
    }
}

impl GpuBackend for CudaDevice {
    fn describe(&self) -> String {
        format!("{} (sm_{}, CUDA device {})", self.name, self.arch, self.ordinal)
    }

    /// With `EMBER_CUDA_POISON` set (scripts/gpu_check.sh sets it), blocks are filled with
    /// 0xff bytes (NaN as f32) before they are handed out, new or reused, so an output
    /// element a kernel fails to write shows, as in the emulator.
    fn alloc(&self, bytes: usize) -> Result<u64> {
        static POISON: OnceLock<bool> = OnceLock::new();
        let ptr = self.allocate_block(bytes)?;
        if *POISON.get_or_init(|| std::env::var_os("EMBER_CUDA_POISON").is_some()) {
            self.fill_bytes(ptr, bytes, 0xff)?;
        }
        Ok(ptr)
    }

    fn free(&self, ptr: u64, bytes: usize) {
        // Every size that `alloc` accepted has a class.
        let Some(class) = size_class(bytes) else {
            return;
        };
        let mut pool = lock(&self.pool);
        pool.in_use_bytes = pool.in_use_bytes.saturating_sub(class);
        pool.cached_bytes += class;
        pool.free.entry(class).or_default().push(ptr);
    }

    fn copy_to_device(&self, dst: u64, src: &[u8]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: `dst` holds at least `src.len()` bytes (the caller's buffer). From pageable
        // memory the driver stages `src` before returning, so it may be dropped after.
        unsafe { cu::memcpy_htod_async(dst, src, self.stream) }.map_err(|e| driver_error(&format!("cuMemcpyHtoDAsync of {} bytes", src.len()), e))
    }

    fn copy_to_host(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        if dst.is_empty() {
            return self.synchronize();
        }
        self.bind()?;
        // SAFETY: `src` holds at least `dst.len()` bytes; the stream is synchronized below
        // before `dst` is read.
        unsafe { cu::memcpy_dtoh_async(dst, src, self.stream) }.map_err(|e| driver_error(&format!("cuMemcpyDtoHAsync of {} bytes", dst.len()), e))?;
        self.sync_stream()
    }

    fn fill_bytes(&self, dst: u64, bytes: usize, value: u8) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: `dst` holds at least `bytes` bytes.
        unsafe { cu::memset_d8_async(dst, value, bytes, self.stream) }.map_err(|e| driver_error(&format!("cuMemsetD8Async of {bytes} bytes"), e))
    }

    fn launch(&self, kernel: Kernel, config: &LaunchConfig, args: &[KernelArg]) -> Result<()> {
        self.bind()?;
        let handle = {
            let mut modules = lock(&self.modules);
            let mut function = self.function(&mut modules, kernel)?;
            if config.shared_bytes > function.max_dynamic_shared {
                self.allow_dynamic_shared(kernel, &mut function, config.shared_bytes)?;
                modules.functions.insert(kernel, function);
            }
            function.handle
        };

        // cuLaunchKernel takes one pointer per argument, to the argument's value; the values
        // live in `slots`, which outlives the call (the driver copies them at launch).
        let mut slots: Vec<Vec<u64>> = args.iter().map(KernelArg::to_slot).collect();
        let mut params: Vec<*mut c_void> = slots.iter_mut().map(|slot| slot.as_mut_ptr().cast::<c_void>()).collect();
        let grid = (config.grid[0], config.grid[1], config.grid[2]);
        let block = (config.block[0], config.block[1], config.block[2]);
        *lock(&self.last_kernel) = Some(kernel);
        // SAFETY: `handle` is a function of a module loaded in this context; `params` has one
        // pointer per kernel parameter (the host code in `kernels` matches the signature).
        unsafe { cu::launch_kernel(handle, grid, block, config.shared_bytes, self.stream, &mut params) }.map_err(|e| {
            driver_error(
                &format!("launch of {} (grid {:?}, block {:?}, {} B dynamic shared)", kernel_name(kernel), config.grid, config.block, config.shared_bytes),
                e,
            )
        })
    }

    fn synchronize(&self) -> Result<()> {
        self.bind()?;
        self.sync_stream()
    }
}

impl CudaDevice {
    /// A block of at least `bytes`, from the cache or from the driver (emptying the cache
    /// and retrying once on out-of-memory).
    fn allocate_block(&self, bytes: usize) -> Result<u64> {
        let class = size_class(bytes).ok_or_else(|| TensorError::Cuda { what: format!("cuMemAlloc of {bytes} bytes"), msg: "size too large".into() })?;
        let mut pool = lock(&self.pool);
        if let Some(ptr) = pool.free.get_mut(&class).and_then(Vec::pop) {
            pool.cached_bytes -= class;
            pool.hand_out(class);
            return Ok(ptr);
        }
        self.bind()?;
        // SAFETY: plain allocation in our (current) context.
        let ptr = match unsafe { cu::malloc_sync(class) } {
            Ok(ptr) => ptr,
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                self.empty_pool(&mut pool)?;
                // SAFETY: as above.
                unsafe { cu::malloc_sync(class) }.map_err(|e| {
                    driver_error(
                        &format!(
                            "cuMemAlloc of {bytes} bytes (rounded to {class}; {} in use, \
                             after emptying the cache)",
                            pool.in_use_bytes
                        ),
                        e,
                    )
                })?
            }
            Err(e) => return Err(driver_error(&format!("cuMemAlloc of {bytes} bytes"), e)),
        };
        pool.hand_out(class);
        Ok(ptr)
    }
    /// Opts `function` in to `bytes` of dynamic shared memory (above the default 48 KiB).
    fn allow_dynamic_shared(&self, kernel: Kernel, function: &mut Function, bytes: u32) -> Result<()> {
        if bytes > self.max_shared_optin {
            return Err(TensorError::Cuda {
                what: format!("launch of {}", kernel_name(kernel)),
                msg: format!("{bytes} B of dynamic shared memory asked for; the device allows {} B a block", self.max_shared_optin),
            });
        }
        // SAFETY: a function of a module loaded in this context.
        unsafe {
            cu::function::set_function_attribute(function.handle, sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32)
        }
        .map_err(|e| driver_error(&format!("cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES = {bytes}) for {}", kernel_name(kernel)), e))?;
        function.max_dynamic_shared = bytes;
        Ok(())
    }
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        // Errors here have nowhere to go; the driver reclaims everything at process exit.
        if self.bind().is_err() {
            return;
        }
        let _ = self.empty_pool(&mut lock(&self.pool));
        for module in lock(&self.modules).by_file.values() {
            // SAFETY: loaded in this context; no launch can follow (we are being dropped).
            let _ = unsafe { cu::module::unload(*module) };
        }
        // SAFETY: our stream and our retain of the primary context, used no more.
        unsafe {
            let _ = cu::stream::destroy(self.stream);
            let _ = cu::primary_ctx::release(self.device);
        }
    }
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice").field("ordinal", &self.ordinal).field("name", &self.name).field("arch", &self.arch).finish_non_exhaustive()
    }
}

/// The allocator's size class for a request: multiples of 512 B up to 1 MiB; above, four
/// classes per power of two (2^k times 1, 1.25, 1.5, 1.75), so at most 25% is wasted.
/// `None` when the request is too large to round.
fn size_class(bytes: usize) -> Option<usize> {
    const SMALL_STEP: usize = 512;
    const LARGE: usize = 1 << 20;
    if bytes <= LARGE {
        return Some(bytes.max(1).div_ceil(SMALL_STEP) * SMALL_STEP);
    }
    let step = bytes.checked_next_power_of_two()? / 8;
    bytes.div_ceil(step).checked_mul(step)
}

/// Loads a cubin into the current context.
fn load_cubin(file: &str, cubin: &[u8]) -> Result<sys::CUmodule> {
    // SAFETY: `cubin` is a complete image, alive for the call (the driver copies it).
    unsafe { cu::module::load_data(cubin.as_ptr().cast()) }.map_err(|e| driver_error(&format!("cuModuleLoadData of {file}"), e))
}

/// Where the cubin of `file` for `arch` is kept on disk, if `EMBER_CUDA_CACHE` names a
/// directory.
fn disk_cache_path(file: &str, source: &str, arch: u32) -> Option<PathBuf> {
    let dir = std::env::var_os("EMBER_CUDA_CACHE").filter(|dir| !dir.is_empty())?;
    Some(PathBuf::from(dir).join(cache_file_name(file, source, arch)))
}

/// `<file>-sm<arch>-<hash>.cubin`, the hash over everything that shapes the cubin: the
/// source, the header, the architecture and the NVRTC options.
fn cache_file_name(file: &str, source: &str, arch: u32) -> String {
    let mut hash = Fnv1a::default();
    hash.write(file.as_bytes());
    hash.write(source.as_bytes());
    for (_, header) in sources::HEADERS {
        hash.write(header.as_bytes());
    }
    hash.write(&arch.to_le_bytes());
    for option in nvrtc::options(arch, false) {
        hash.write(option.as_bytes());
    }
    let stem = file.trim_end_matches(".cu");
    format!("{stem}-sm{arch}-{:016x}.cubin", hash.0)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so that a reader never
/// sees half a cubin. Failures are ignored: the disk cache is only an optimization.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) {
    let Some(dir) = path.parent() else { return };
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&temporary, bytes)).and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
}

/// 64-bit FNV-1a, stable across Rust versions (unlike `DefaultHasher`), for cache names.
/// Each part is length-prefixed so that different splits of the same bytes differ.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn write(&mut self, part: &[u8]) {
        for &byte in (part.len() as u64).to_le_bytes().iter().chain(part) {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn kernel_name(kernel: Kernel) -> String {
    format!("{}::{}", kernel.file, kernel.name)
}

fn describe_error(e: DriverError) -> String {
    let name = e.error_name().map(|s| s.to_string_lossy().into_owned());
    let text = e.error_string().map(|s| s.to_string_lossy().into_owned());
    match (name, text) {
        (Ok(name), Ok(text)) => format!("{name}: {text}"),
        _ => format!("{:?}", e.0),
    }
}

fn driver_error(what: &str, e: DriverError) -> TensorError {
    TensorError::Cuda { what: what.to_string(), msg: describe_error(e) }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a driver (this crate's CI) opening a device is an error, not a panic; with
    /// one, device 0 opens and a far ordinal does not.
    #[test]
    fn opening_a_missing_device_is_an_error_not_a_panic() {
        // SAFETY: only tries to open the library.
        if unsafe { sys::is_culib_present() } {
            assert!(CudaDevice::new(1 << 20).is_err());
        } else {
            let result = CudaDevice::new(0);
            assert!(matches!(result, Err(TensorError::DeviceUnavailable { .. })), "{result:?}");
        }
    }

    #[test]
    fn size_classes_round_up_and_waste_at_most_a_quarter_above_one_mebibyte() {
        assert_eq!(size_class(0), Some(512));
        assert_eq!(size_class(1), Some(512));
        assert_eq!(size_class(512), Some(512));
        assert_eq!(size_class(513), Some(1024));
        assert_eq!(size_class(1 << 20), Some(1 << 20));
        assert_eq!(size_class((1 << 20) + 1), Some(5 << 18));
        assert_eq!(size_class(3 << 20), Some(3 << 20));
        for bytes in [(1 << 20) + 1, 3_000_001, 100_000_000, 1 << 33] {
            let class = size_class(bytes).unwrap();
            assert!(class >= bytes && class as f64 <= bytes as f64 * 1.25, "{bytes} -> {class}");
        }
        assert_eq!(size_class(usize::MAX), None);
    }

    #[test]
    fn cache_names_change_with_the_source_and_the_architecture() {
        let (file, source) = sources::FILES[0];
        let name = cache_file_name(file, source, 80);
        assert!(name.starts_with(&format!("{}-sm80-", file.trim_end_matches(".cu"))), "{name}");
        assert_eq!(name, cache_file_name(file, source, 80));
        assert_ne!(name, cache_file_name(file, source, 90));
        assert_ne!(name, cache_file_name(file, &format!("{source}\n"), 80));
    }
}
