//! Device selection: everything that differs between CPU and CUDA lives here.

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device};

use crate::model::Products;
use std::fmt;
use std::str::FromStr;

/// What the user asked for with `--device` or the `device` config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => bail!("invalid device `{s}`: expected auto, cpu, cuda or cuda:N"),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Whether this binary was built with `--features cuda`.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// Opens the requested device. `auto` takes the first GPU when the build supports CUDA and one
/// is present, else the CPU.
pub fn open(spec: DeviceSpec) -> Result<Device> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Auto => {
            if CUDA_BUILT
                && candle_core::utils::cuda_is_available()
                && let Ok(dev) = Device::new_cuda(0)
            {
                return Ok(dev);
            }
            Ok(Device::Cpu)
        }
        DeviceSpec::Cuda(n) => {
            if !CUDA_BUILT {
                bail!(
                    "device cuda:{n} requested, but this bertcls was built without CUDA support \
                     (rebuild with `cargo build --release --features cuda`, or use --device cpu)"
                );
            }
            Device::new_cuda(n).with_context(|| format!("cannot open device cuda:{n}"))
        }
    }
}

/// How training computes with `bf16` on `device`: the dtype of the forward and backward
/// passes and how linear layers multiply. On a GPU, `bf16` runs the whole pass in bfloat16;
/// on the CPU the tensors stay f32 and the linear layers multiply bf16-rounded operands with
/// f32 sums (see [`crate::model::bf16`]: candle's CPU matrix products have no bfloat16),
/// which is refused on a CPU without AVX512-BF16 unless `BERTCLS_BF16_KERNEL` names an
/// emulating kernel.
pub fn mixed_precision(device: &Device, bf16: bool) -> Result<(DType, Products)> {
    match (bf16, device) {
        (false, _) => Ok((DType::F32, Products::Plain)),
        (true, Device::Cuda(_)) => Ok((DType::BF16, Products::Plain)),
        (true, Device::Cpu) => {
            let kernel = crate::model::bf16::Kernel::from_env()
                .map_err(|why| anyhow::anyhow!("bf16 = true: {why}"))?;
            Ok((DType::F32, Products::Bf16(kernel)))
        }
        (true, _) => bail!(
            "bf16 = true runs on CUDA or the CPU, not on {} (set bf16 = false)",
            describe(device)
        ),
    }
}

/// A short human description such as `cpu (2 threads)` or `cuda:0`.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
        Device::Cuda(_) => match device.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            _ => "cuda".to_string(),
        },
        Device::Metal(_) => "metal".to_string(),
    }
}

/// CPU runtime settings, applied once at start-up before any thread exists.
///
/// - Threads: candle runs element-wise ops on a spinning thread pool of its own, beside the
///   rayon pool that runs the matrix products and bertcls' fused kernels. On a machine with
///   few cores the two pools spin against each other; keeping candle's pool to the calling
///   thread (`CANDLE_NUM_THREADS=1`, unless the user set it) measured 10-15% faster per
///   training step at 32x14 and 32x64 tokens (`cargo bench --bench step`).
/// - Memory: freed memory stays in the process instead of going back to the kernel on every
///   large free: training allocates and drops tensors of several MB per op, and with glibc's
///   default mmap threshold every one of them costs page faults (measured: up to 40% of a
///   step). Nor is the top of the heap ever trimmed: with a 256 MiB threshold it was given
///   back every few training steps (500 MB at a time, `strace -e brk`) and faulted in again
///   page by page, 786k and 816k page faults in 60 steps of configs/sentiment.toml against 257k
///   untrimmed (`perf stat -e page-faults`). The process keeps its peak, which it reached
///   anyway.
pub fn tune_cpu_runtime() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: called first thing in main, while the process has a single thread.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before other threads
    // allocate, and both options are documented for glibc. 32 MiB is glibc's largest allowed
    // mmap threshold on 64-bit targets.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!("CPU".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!("tpu".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn auto_without_gpu_is_cpu() {
        if !CUDA_BUILT {
            assert!(open(DeviceSpec::Auto).unwrap().is_cpu());
            let err = open(DeviceSpec::Cuda(0)).unwrap_err().to_string();
            assert!(err.contains("without CUDA support"), "{err}");
        }
    }
}
