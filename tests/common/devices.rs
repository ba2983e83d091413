//! The devices the op tests run on, and `per_device!`, which writes a test once and
//! instantiates it per device: `cpu::<name>` always, `cuda::<name>` on the CUDA device the
//! build has (the emulator with `--features cuda-emu`, as in CI; a GPU with `cuda` when one is
//! present). Without one, the CUDA instance says so and passes.

use ember::tensor::testing::{numeric_gradients, random, relative_error};
use ember::tensor::{DType, Device, Result, Tensor};

/// A device the op tests run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestDevice(pub Device);

/// The smallest relative tolerance a check gets on a CUDA device, whose kernels are f32.
pub const F32_TOLERANCE: f64 = 2e-5;

impl TestDevice {
    pub const CPU: TestDevice = TestDevice(Device::Cpu);

    /// The CUDA device of this build (opened once per process), or `None` without one.
    pub fn cuda() -> Option<TestDevice> {
        static OPENED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let available = *OPENED.get_or_init(|| match ember::tensor::cuda::device(0) {
            Ok(_) => true,
            Err(e) => {
                eprintln!("no CUDA device in this build ({e}): the cuda:: tests pass without running");
                false
            }
        });
        available.then_some(TestDevice(Device::Cuda(0)))
    }

    pub fn is_cuda(self) -> bool {
        matches!(self.0, Device::Cuda(_))
    }

    /// The dtype a check written for `dtype` runs in here: itself on the CPU, f32 on a CUDA
    /// device (its kernels are f32).
    pub fn dtype(self, dtype: DType) -> DType {
        if self.is_cuda() { DType::F32 } else { dtype }
    }

    /// The relative tolerance of a check written with `tolerance` for the CPU: the same there,
    /// at least [`F32_TOLERANCE`] on a CUDA device.
    pub fn tolerance(self, tolerance: f64) -> f64 {
        if self.is_cuda() { tolerance.max(F32_TOLERANCE) } else { tolerance }
    }

    /// `t` converted to `self.dtype(t.dtype())` and moved here.
    pub fn put(self, t: &Tensor) -> Tensor {
        t.to_dtype(self.dtype(t.dtype())).unwrap().to_device(self.0).unwrap()
    }

    /// The gradients (of `Σ f(x) ⊙ r` for a fixed random `r`) of every input, computed in
    /// `self.dtype(dtype)` here: to compare a backward's gradients across dtypes and devices.
    pub fn grads_in(self, dtype: DType, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) -> Vec<Vec<f64>> {
        let vars: Vec<Tensor> = inputs.iter().map(|t| self.put(&t.to_dtype(dtype).unwrap()).variable()).collect();
        let y = f(&vars).unwrap();
        let r = self.put(&random(y.shape(), -1.0, 1.0, 999).to_dtype(dtype).unwrap());
        let grads = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        vars.iter().map(|v| grads.get(v).expect("gradient").to_vec_f64()).collect()
    }

    /// The gradient check of `testing::assert_gradcheck` with the analytic gradients computed
    /// on this device: on the CPU, f64 against f64 central differences to 1e-6; on a CUDA
    /// device, the f32 gradients its backward kernels give against the same f64 central
    /// differences (computed on the CPU) to 1e-4.
    pub fn assert_gradcheck(self, what: &str, f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) {
        if !self.is_cuda() {
            return ember::tensor::testing::assert_gradcheck(what, f, inputs);
        }
        let variables: Vec<Tensor> = inputs.iter().map(|t| self.put(t).variable()).collect();
        let output = f(&variables).unwrap_or_else(|e| panic!("{what} on {:?}: {e}", self.0));
        assert_eq!(output.device(), self.0, "{what}: the output left the device");
        let weights = random(output.shape(), -1.0, 1.0, 0x5eed);
        let loss = output.mul(&self.put(&weights)).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let numeric = numeric_gradients(&f, inputs, &weights, 1e-6).unwrap_or_else(|e| panic!("{what}: {e}"));
        for (i, (variable, expected)) in variables.iter().zip(&numeric).enumerate() {
            let analytic = grads.get(variable).map_or_else(|| vec![0.0; expected.len()], |g| g.to_vec_f64());
            let err = relative_error(&analytic, expected);
            assert!(err < 1e-4, "{what} on {:?}: gradient of input {i} has relative error {err:.3e}", self.0);
        }
    }
}

/// Writes each test once and instantiates it per device (`#[macro_use] mod common;` in the
/// test file):
/// `per_device! { fn name(dev) { … } }` makes `cpu::name` and `cuda::name`, with `dev` the
/// [`TestDevice`] (see the module doc).
macro_rules! per_device {
    ($($(#[$meta:meta])* fn $name:ident($dev:ident) $body:block)*) => {
        mod cpu {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    let $dev = $crate::common::TestDevice::CPU;
                    $body
                }
            )*
        }
        mod cuda {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    let Some($dev) = $crate::common::TestDevice::cuda() else { return };
                    $body
                }
            )*
        }
    };
}
