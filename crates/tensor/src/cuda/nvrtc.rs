//! Run-time compilation of our kernel files with NVRTC, to a cubin for one real architecture.
//!
//! A cubin (`nvrtcGetCUBIN`) rather than PTX: the driver loads it as is, so an NVRTC newer
//! than the driver cannot produce PTX the driver refuses. The kernels' headers
//! ([`super::sources::HEADERS`]) is handed to NVRTC in memory, so no CUDA include directory
//! is needed. NVRTC is loaded dynamically (cudarc finds `libnvrtc.so*` through
//! `LD_LIBRARY_PATH`); when it is absent every call returns [`TensorError::Cuda`].

use std::ffi::{CStr, CString, c_char, c_int};

use cudarc::nvrtc::sys;

use super::sources;
use crate::{Result, TensorError};

/// A compiled kernel file: the cubin and NVRTC's log (warnings; with `verbose_ptxas`, the
/// registers, spills and shared memory of each kernel).
#[derive(Clone, Debug)]
pub struct Compiled {
    pub cubin: Vec<u8>,
    pub log: String,
}

/// The NVRTC options for a real architecture (`arch` = 10 * major + minor: 80, 90, ...).
///
/// No `--use_fast_math`: the kernels are compared with the CPU to 1e-5.
pub fn options(arch: u32, verbose_ptxas: bool) -> Vec<String> {
    let mut options = vec![format!("--gpu-architecture=sm_{arch}"), "-std=c++17".to_string(), "-default-device".to_string()];
    if verbose_ptxas {
        options.push("--ptxas-options=-v".to_string());
    }
    options
}

/// Whether the NVRTC library can be loaded.
pub fn is_available() -> bool {
    // SAFETY: only tries to open the library by its candidate names and closes it again.
    unsafe { sys::is_culib_present() }
}

/// NVRTC's version, (major, minor).
pub fn version() -> Result<(i32, i32)> {
    ensure_available("nvrtcVersion")?;
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: two valid out-pointers.
    check("nvrtcVersion", unsafe { sys::nvrtcVersion(&mut major, &mut minor) })?;
    Ok((major, minor))
}

/// Compiles one kernel file (`file` names it in errors and in NVRTC's log) to a cubin for
/// `sm_{arch}`. A compile error is [`TensorError::Cuda`] holding the full log.
pub fn compile_cubin(file: &str, source: &str, arch: u32, verbose_ptxas: bool) -> Result<Compiled> {
    ensure_available(file)?;
    let program = Program::new(file, source)?;
    let options = options(arch, verbose_ptxas);
    let options: Vec<CString> = options.iter().map(|o| c_string(file, o)).collect::<Result<_>>()?;
    let option_ptrs: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();

    // SAFETY: a live program; `option_ptrs` points into `options`, alive for the call.
    let compiled = unsafe { sys::nvrtcCompileProgram(program.0, option_ptrs.len() as c_int, option_ptrs.as_ptr()) };
    let log = program.log(file)?;
    if compiled != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(TensorError::Cuda { what: format!("NVRTC compile of {file} for sm_{arch}"), msg: format!("{}\n{log}", error_string(compiled)) });
    }
    let cubin = program.cubin(file)?;
    Ok(Compiled { cubin, log })
}

/// An NVRTC program, destroyed on drop.
struct Program(sys::nvrtcProgram);

impl Program {
    /// A program over `source`, with our headers available to `#include` ([`sources::HEADERS`]).
    fn new(file: &str, source: &str) -> Result<Self> {
        let source = c_string(file, source)?;
        let name = c_string(file, file)?;
        let header_texts = sources::HEADERS.iter().map(|(name, text)| c_string(name, text)).collect::<Result<Vec<_>>>()?;
        let header_names = sources::HEADERS.iter().map(|(name, _)| c_string(name, name)).collect::<Result<Vec<_>>>()?;
        let headers: Vec<_> = header_texts.iter().map(|h| h.as_ptr()).collect();
        let include_names: Vec<_> = header_names.iter().map(|h| h.as_ptr()).collect();
        let mut program: sys::nvrtcProgram = std::ptr::null_mut();
        // SAFETY: every pointer is to a NUL-terminated string alive for the call (NVRTC
        // copies them); the arrays hold one entry per header, as `numHeaders` says.
        check(file, unsafe {
            sys::nvrtcCreateProgram(&mut program, source.as_ptr(), name.as_ptr(), headers.len() as c_int, headers.as_ptr(), include_names.as_ptr())
        })?;
        Ok(Program(program))
    }

    /// The compile log, without its trailing NUL.
    fn log(&self, file: &str) -> Result<String> {
        let mut size = 0usize;
        // SAFETY: a live program and a valid out-pointer.
        check(file, unsafe { sys::nvrtcGetProgramLogSize(self.0, &mut size) })?;
        let mut log = vec![0u8; size.max(1)];
        // SAFETY: `log` has room for the `size` bytes NVRTC writes.
        check(file, unsafe { sys::nvrtcGetProgramLog(self.0, log.as_mut_ptr().cast()) })?;
        let text = CStr::from_bytes_until_nul(&log).map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|_| String::from_utf8_lossy(&log).into_owned());
        Ok(text.trim_end().to_string())
    }

    fn cubin(&self, file: &str) -> Result<Vec<u8>> {
        let mut size = 0usize;
        // SAFETY: a live, compiled program and a valid out-pointer.
        check(file, unsafe { sys::nvrtcGetCUBINSize(self.0, &mut size) })?;
        if size == 0 {
            return Err(TensorError::Cuda { what: format!("NVRTC cubin of {file}"), msg: "empty cubin (was a virtual architecture compute_XX given?)".into() });
        }
        let mut cubin = vec![0u8; size];
        // SAFETY: `cubin` has room for the `size` bytes NVRTC writes.
        check(file, unsafe { sys::nvrtcGetCUBIN(self.0, cubin.as_mut_ptr().cast()) })?;
        Ok(cubin)
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by nvrtcCreateProgram and destroyed only here. A failure to
        // destroy leaks the program; there is nothing better to do in drop.
        unsafe {
            sys::nvrtcDestroyProgram(&mut self.0);
        }
    }
}

/// A typed error, before cudarc's loader would panic on a missing library.
fn ensure_available(what: &str) -> Result<()> {
    if is_available() {
        Ok(())
    } else {
        Err(TensorError::Cuda {
            what: format!("NVRTC ({what})"),
            msg: "the NVRTC library (libnvrtc.so) was not found; add its directory to \
                  LD_LIBRARY_PATH (`cargo xtask kernels` installs one from PyPI)"
                .into(),
        })
    }
}

fn check(what: &str, result: sys::nvrtcResult) -> Result<()> {
    if result == sys::nvrtcResult::NVRTC_SUCCESS { Ok(()) } else { Err(TensorError::Cuda { what: format!("NVRTC ({what})"), msg: error_string(result) }) }
}

/// NVRTC's name for an error code ("NVRTC_ERROR_COMPILATION").
fn error_string(result: sys::nvrtcResult) -> String {
    // SAFETY: nvrtcGetErrorString returns a static NUL-terminated string (or null).
    let text = unsafe { sys::nvrtcGetErrorString(result) };
    if text.is_null() {
        format!("{result:?}")
    } else {
        // SAFETY: non-null, static and NUL-terminated, as above.
        unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
    }
}

fn c_string(what: &str, text: &str) -> Result<CString> {
    CString::new(text).map_err(|_| TensorError::Cuda { what: format!("NVRTC ({what})"), msg: "text holds a NUL byte".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_name_a_real_architecture_and_no_fast_math() {
        let options = options(90, true);
        assert!(options.contains(&"--gpu-architecture=sm_90".to_string()));
        assert!(options.contains(&"--ptxas-options=-v".to_string()));
        assert!(!options.iter().any(|o| o.contains("fast_math")));
    }

    /// Without libnvrtc on the library path this is a typed error, not cudarc's panic;
    /// with it, the embedded kernels compile.
    #[test]
    fn compile_without_nvrtc_is_an_error_not_a_panic() {
        let (file, source) = sources::FILES[0];
        let result = compile_cubin(file, source, 80, false);
        if is_available() {
            assert!(result.is_ok(), "{result:?}");
        } else {
            assert!(matches!(result, Err(TensorError::Cuda { .. })));
        }
    }
}
