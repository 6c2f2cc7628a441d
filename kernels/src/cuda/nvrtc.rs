//! Run-time compilation of `kernels/cuda/*.cu` with NVRTC, for the architecture of the device
//! at hand, and loading of their kernels into candle's per-device module cache.
//!
//! Why at run time: the PTX then targets exactly the GPU it runs on (`compute_XY` of the
//! device, capped at the newest the NVRTC library knows, since PTX runs on any later GPU), and
//! building the crate needs no CUDA toolkit beyond what candle's own kernels need. Each
//! program is the prelude `common.cuh` followed by one `.cu` file (see that file for why there
//! is no `#include`); `scripts/nvrtc_check.py` compiles the same programs with the same
//! options in CI, without a GPU.
//!
//! Caches: PTX per (file, architecture) for the process, the architecture per device, and the
//! loaded module per device (candle's `get_or_load_custom_func`), so a file is compiled once
//! per process and loaded once per device.

use candle_core::cuda_backend::{CudaDevice, DeviceId};
use candle_core::{Error, Result};
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaFunction, CudaStream, LaunchArgs};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// A process-wide cache.
type Cache<K, V> = OnceLock<Mutex<HashMap<K, V>>>;

/// Options for every program besides `--gpu-architecture` (scripts/nvrtc_check.py reads this
/// list). No fast math: results must stay close to the CPU path.
pub(crate) const NVRTC_OPTIONS: &[&str] = &["--std=c++17"];

const PRELUDE: &str = include_str!("../../cuda/common.cuh");

/// One `.cu` file of `kernels/cuda`, loaded as one CUDA module.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Program {
    /// The file name, for messages and `#line`.
    file: &'static str,
    /// The module name in candle's cache: unique within the process.
    module: &'static str,
    src: &'static str,
}

pub(crate) const SOFTMAX: Program = Program {
    file: "softmax.cu",
    module: "cotyle-softmax",
    src: include_str!("../../cuda/softmax.cu"),
};
pub(crate) const RMS_NORM: Program = Program {
    file: "rms_norm.cu",
    module: "cotyle-rms-norm",
    src: include_str!("../../cuda/rms_norm.cu"),
};
pub(crate) const LAYER_NORM: Program = Program {
    file: "layer_norm.cu",
    module: "cotyle-layer-norm",
    src: include_str!("../../cuda/layer_norm.cu"),
};
pub(crate) const LINEAR: Program = Program {
    file: "linear.cu",
    module: "cotyle-linear",
    src: include_str!("../../cuda/linear.cu"),
};
pub(crate) const ACTIVATION: Program = Program {
    file: "activation.cu",
    module: "cotyle-activation",
    src: include_str!("../../cuda/activation.cu"),
};
pub(crate) const ROPE: Program = Program {
    file: "rope.cu",
    module: "cotyle-rope",
    src: include_str!("../../cuda/rope.cu"),
};
pub(crate) const VQ: Program = Program {
    file: "vq.cu",
    module: "cotyle-vq",
    src: include_str!("../../cuda/vq.cu"),
};
pub(crate) const ATTENTION: Program = Program {
    file: "attention.cu",
    module: "cotyle-attention",
    src: include_str!("../../cuda/attention.cu"),
};
pub(crate) const ADAMW: Program = Program {
    file: "adamw.cu",
    module: "cotyle-adamw",
    src: include_str!("../../cuda/adamw.cu"),
};

/// A loaded kernel and the stream of the device it runs on (candle's own `CudaFunc`, whose
/// type candle does not export).
pub(crate) struct Kernel {
    func: CudaFunction,
    stream: Arc<CudaStream>,
}

impl Kernel {
    /// A launch on candle's stream of the device, so it is ordered with candle's own ops.
    pub(crate) fn builder(&self) -> LaunchArgs<'_> {
        self.stream.launch_builder(&self.func)
    }

    /// Lets launches of this kernel take `bytes` of dynamic shared memory. Up to 48 KiB every
    /// GPU grants; beyond, a kernel must opt in, up to the device's limit (an error naming
    /// `what` past it). The opt-in is to the limit itself, not to `bytes`, so that threads
    /// launching one kernel with different sizes cannot undo each other's opt-in.
    pub(crate) fn allow_shared(&self, what: &str, bytes: usize) -> Result<()> {
        const DEFAULT: usize = 48 << 10;
        if bytes <= DEFAULT {
            return Ok(());
        }
        let err = |e: cudarc::driver::DriverError| {
            Error::Msg(format!("cotyle kernels: shared memory for {what}: {e}"))
        };
        let ctx = self.stream.context();
        let attr = CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN;
        let max = ctx.attribute(attr).map_err(err)?.max(0) as usize;
        let fixed = self.func.shared_size_bytes().map_err(err)?.max(0) as usize;
        let limit = max.saturating_sub(fixed);
        if bytes > limit {
            return Err(Error::Msg(format!(
                "{what}: needs {bytes} bytes of shared memory per block; this GPU allows {limit}"
            )));
        }
        ctx.bind_to_thread().map_err(err)?;
        let attr = CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
        self.func.set_attribute(attr, limit as i32).map_err(err)
    }
}

/// Kernel `name` of `prog` on `dev`, compiling and loading the program on first use.
pub(crate) fn function(dev: &CudaDevice, prog: Program, name: &str) -> Result<Kernel> {
    let arch = arch(dev)?;
    let ptx = ptx(prog, arch)?;
    let func = dev
        .get_or_load_custom_func(name, prog.module, &ptx)
        .map_err(|e| load_error(prog, arch, name, e))?;
    Ok(Kernel {
        func: func.into_cuda_function(),
        stream: dev.cuda_stream(),
    })
}

/// The number of multiprocessors of `dev` (to size grids).
pub(crate) fn multiprocessors(dev: &CudaDevice) -> Result<u32> {
    let attr = CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT;
    let n = dev
        .cuda_stream()
        .context()
        .attribute(attr)
        .map_err(|e| Error::Msg(format!("cotyle kernels: querying the device: {e}")))?;
    Ok(n.max(1) as u32)
}

/// The architecture to compile for on `dev`, as 10 * major + minor (90 for an H100).
fn arch(dev: &CudaDevice) -> Result<u32> {
    static ARCH: Cache<DeviceId, u32> = OnceLock::new();
    let cache = ARCH.get_or_init(Default::default);
    if let Some(&a) = lock(cache).get(&dev.id()) {
        return Ok(a);
    }
    let (major, minor) = dev
        .cuda_stream()
        .context()
        .compute_capability()
        .map_err(|e| Error::Msg(format!("cotyle kernels: querying the device: {e}")))?;
    let device = (major * 10 + minor) as u32;
    let a = match supported_archs() {
        // The newest NVRTC knows that the device can run (PTX is forward compatible).
        Some(archs) => match archs.into_iter().filter(|&a| a <= device).max() {
            Some(a) => a,
            None => {
                return Err(Error::Msg(format!(
                    "cotyle kernels: this GPU (compute capability {major}.{minor}) is older than \
                     every architecture the installed NVRTC ({}) can compile for",
                    nvrtc_version()
                )))
            }
        },
        None => device,
    };
    lock(cache).insert(dev.id(), a);
    Ok(a)
}

/// The PTX of `prog` for `arch`, compiled once per process.
fn ptx(prog: Program, arch: u32) -> Result<Arc<str>> {
    static PTX: Cache<(&'static str, u32), Arc<str>> = OnceLock::new();
    let cache = PTX.get_or_init(Default::default);
    if let Some(p) = lock(cache).get(&(prog.file, arch)) {
        return Ok(p.clone());
    }
    // Compiled outside the lock: two threads may both compile a program the first time, and
    // the second result is dropped; holding the lock would stall every other launch instead.
    let src = format!(
        "#line 1 \"common.cuh\"\n{PRELUDE}\n#line 1 \"{}\"\n{}",
        prog.file, prog.src
    );
    let mut options: Vec<String> = NVRTC_OPTIONS.iter().map(|s| s.to_string()).collect();
    options.push(format!("--gpu-architecture=compute_{arch}"));
    let opts = CompileOptions {
        options,
        name: Some(prog.file.to_string()),
        ..Default::default()
    };
    let ptx: Arc<str> = match compile_ptx_with_opts(src, opts) {
        Ok(p) => p.to_src().into(),
        Err(e) => return Err(compile_error(prog, arch, e)),
    };
    Ok(lock(cache).entry((prog.file, arch)).or_insert(ptx).clone())
}

fn compile_error(prog: Program, arch: u32, e: CompileError) -> Error {
    let detail = match e {
        CompileError::CompileError {
            nvrtc,
            options,
            log,
        } => format!(
            "{nvrtc:?} with options {options:?}:\n{}",
            log.to_string_lossy()
        ),
        e => format!("{e:?}"),
    };
    Error::Msg(format!(
        "cotyle kernels: NVRTC {} could not compile kernels/cuda/{} for compute_{arch}: {detail}",
        nvrtc_version(),
        prog.file
    ))
}

fn load_error(prog: Program, arch: u32, name: &str, e: Error) -> Error {
    let msg = e.to_string();
    let hint = if msg.contains("PTX") {
        format!(
            " (the PTX comes from NVRTC {}; a driver older than that NVRTC cannot load it: \
             update the driver or use an older libnvrtc)",
            nvrtc_version()
        )
    } else {
        String::new()
    };
    Error::Msg(format!(
        "cotyle kernels: loading kernel `{name}` of kernels/cuda/{} (compute_{arch}): {msg}{hint}",
        prog.file
    ))
}

/// The architectures (10 * major + minor) the loaded NVRTC compiles for; None if it cannot say.
fn supported_archs() -> Option<Vec<u32>> {
    use cudarc::nvrtc::sys::{nvrtcGetNumSupportedArchs, nvrtcGetSupportedArchs, nvrtcResult};
    let mut n: std::ffi::c_int = 0;
    // SAFETY: plain out-parameters, sized by the first call.
    unsafe {
        if nvrtcGetNumSupportedArchs(&mut n) != nvrtcResult::NVRTC_SUCCESS || n <= 0 {
            return None;
        }
        let mut archs = vec![0 as std::ffi::c_int; n as usize];
        if nvrtcGetSupportedArchs(archs.as_mut_ptr()) != nvrtcResult::NVRTC_SUCCESS {
            return None;
        }
        Some(archs.into_iter().map(|a| a as u32).collect())
    }
}

/// "major.minor" of the loaded NVRTC, for messages.
fn nvrtc_version() -> String {
    use cudarc::nvrtc::sys::{nvrtcResult, nvrtcVersion};
    let (mut major, mut minor): (std::ffi::c_int, std::ffi::c_int) = (0, 0);
    // SAFETY: plain out-parameters.
    match unsafe { nvrtcVersion(&mut major, &mut minor) } {
        nvrtcResult::NVRTC_SUCCESS => format!("{major}.{minor}"),
        _ => "(unknown version)".to_string(),
    }
}

/// A poisoned cache lock only means another thread panicked mid-insert; the map is still valid.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
