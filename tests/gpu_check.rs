//! scripts/gpu-check.sh up to the GPU boundary, as CI can run it: no GPU, no network (the tiny
//! fixture model stands in for the config's base model), the binary under test instead of a build.
//! The steps after the boundary run only on a GPU machine (tests/gpu.rs, training on SST-2).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Fixture, stderr};
use serde_json::Value;

fn gpu_check(fx: &Fixture, out: &Path, args: &[&str]) -> (Output, Value) {
    // Never a real GPU, even on a machine that has one.
    gpu_check_with(
        fx,
        out,
        &[args, &["--no-reference"]].concat(),
        &[("GPU_CHECK_NVIDIA_SMI", fx.path("no-such-nvidia-smi"))],
    )
}

fn gpu_check_with(
    fx: &Fixture,
    out: &Path,
    args: &[&str],
    env: &[(&str, PathBuf)],
) -> (Output, Value) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("bash")
        .arg(repo.join("scripts/gpu-check.sh"))
        .args(args)
        .arg("--out")
        .arg(out)
        .env("BERTCLS", env!("CARGO_BIN_EXE_bertcls"))
        .env("GPU_CHECK_BASE_MODEL", &fx.model)
        .env("BERTCLS_CACHE", &fx.cache)
        .env("HF_HUB_OFFLINE", "1")
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .output()
        .unwrap();
    let report = std::fs::read(out.join("gpu-check.json"))
        .unwrap_or_else(|e| panic!("no gpu-check.json ({e}): {}", stderr(&output)));
    (output, serde_json::from_slice(&report).unwrap())
}

fn statuses(report: &Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The report's entry for step `name`.
fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {report}"))
}

const CPU_STEPS: [&str; 4] = ["preflight", "cpu_build", "base_model", "cpu_smoke"];

#[test]
fn runs_every_step_before_the_gpu_then_stops_there() {
    let fx = Fixture::new("gpu-check");

    // --until-gpu: the CPU steps pass, the GPU steps are planned, exit 0.
    let out = fx.path("until-gpu");
    let (run, report) = gpu_check(&fx, &out, &["--until-gpu"]);
    let err = stderr(&run);
    assert!(run.status.success(), "{err}");
    assert_eq!(report["mode"], "until-gpu");
    assert_eq!(report["ok"], true, "{report}");
    let steps = statuses(&report);
    for name in CPU_STEPS {
        assert!(
            steps.contains(&(name.into(), "ok".into())),
            "{name}: {steps:?}\n{err}"
        );
    }
    for name in ["gpu_probe", "cuda_build", "device_tests", "train_gpu_bf16"] {
        assert!(
            steps.contains(&(name.into(), "planned".into())),
            "{name}: {steps:?}"
        );
    }
    assert_eq!(
        report["steps_run"].as_array().unwrap().len(),
        CPU_STEPS.len()
    );
    // The exact GPU training command ran one step on the CPU over every SST-2 training row.
    assert_eq!(report["results"]["cpu_smoke"]["train_samples"], 67349);
    let smoke = step(&report, "cpu_smoke");
    let command = smoke["commands"][0].as_str().unwrap();
    assert!(
        command.contains("--set max_train_samples=67349"),
        "{command}"
    );
    assert!(err.contains("step cpu_smoke: ok in"), "{err}");
    let table = std::fs::read_to_string(out.join("gpu-check.md")).unwrap();
    assert!(table.contains("| cuda_build | planned |"), "{table}");

    // Without --until-gpu and without a GPU: stops at the probe with a clear message, exit 1,
    // and nothing after it (not the CUDA build) runs.
    let out = fx.path("no-gpu");
    let (run, report) = gpu_check(&fx, &out, &[]);
    let err = stderr(&run);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert_eq!(report["ok"], false);
    assert_eq!(report["stopped_at"], "gpu_probe");
    let message = report["message"].as_str().unwrap();
    assert!(
        message.starts_with("no NVIDIA GPU: nvidia-smi not found"),
        "{message}"
    );
    assert!(err.contains("STOPPED at gpu_probe: no NVIDIA GPU"), "{err}");
    assert_eq!(report["failed_steps"], serde_json::json!(["gpu_probe"]));
    let steps = statuses(&report);
    for name in CPU_STEPS {
        assert!(steps.contains(&(name.into(), "ok".into())), "{steps:?}");
    }
    for name in ["cuda_build", "device_tests", "train_gpu_f32", "predict"] {
        assert!(
            steps.contains(&(name.into(), "not_run".into())),
            "{name}: {steps:?}"
        );
    }
    assert!(!out.join("runs/gpu-f32").exists());
}

/// An executable shell script at `path`.
fn script(path: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

/// A GPU machine without Rust: the CUDA build and the device tests come prebuilt
/// (BERTCLS_CUDA, GPU_TESTS), so nothing is compiled there. Here a stand-in nvidia-smi passes
/// the probe, the "CUDA build" is this CPU build, and the first GPU training step must then fail
/// with bertcls' own one-line error, recorded in the report. The PyTorch steps run with a
/// stand-in Python: its environment probe fails without a word (the step is recorded as failed
/// and the check goes on), and its torch sees no GPU, so the reference is skipped, and says so.
#[test]
fn prebuilt_cuda_binaries_skip_the_build() {
    let fx = Fixture::new("gpu-check-prebuilt");
    let smi = script(
        &fx.path("nvidia-smi"),
        "echo 'Stand-in GPU, 580.0, 1024 MiB, 9.0'",
    );
    let tests_ran = fx.path("device-tests-ran");
    let device_tests = script(
        &fx.path("gpu-tests"),
        &format!("echo \"$@\" > '{}'", tests_ran.display()),
    );
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_bertcls"));
    let python = script(
        &fx.path("python"),
        "case \"$*\" in *sys.exit*) exit 1 ;; *transformers*) exit 3 ;; esac",
    );

    let out = fx.path("not-executable");
    let (run, report) = gpu_check_with(
        &fx,
        &out,
        &["--no-reference"],
        &[
            ("GPU_CHECK_NVIDIA_SMI", smi.clone()),
            ("BERTCLS_CUDA", fx.path("no-such-bertcls")),
        ],
    );
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let first = &report["steps"][0];
    assert_eq!(first["name"], "preflight");
    assert_eq!(first["status"], "failed");
    assert!(
        first["error"].as_str().unwrap().contains("BERTCLS_CUDA=")
            && first["error"]
                .as_str()
                .unwrap()
                .contains("is not an executable"),
        "{first}"
    );

    let out = fx.path("prebuilt");
    let (run, report) = gpu_check_with(
        &fx,
        &out,
        &[],
        &[
            ("GPU_CHECK_NVIDIA_SMI", smi),
            ("BERTCLS_CUDA", bin),
            ("GPU_TESTS", device_tests),
            ("REFERENCE_PYTHON", python),
        ],
    );
    let err = stderr(&run);
    assert_eq!(run.status.code(), Some(1), "{err}");
    let steps = statuses(&report);
    assert_eq!(step(&report, "reference_env")["error"], "exit status 3");
    for name in ["gpu_probe", "cuda_build", "device_tests", "reference_gpu"] {
        assert!(
            steps.contains(&(name.into(), "ok".into())),
            "{name}: {steps:?}\n{err}"
        );
    }
    assert_eq!(report["results"]["gpu_probe"]["name"], "Stand-in GPU");
    assert!(err.contains("using BERTCLS_CUDA="), "{err}");
    let build = step(&report, "cuda_build");
    assert_eq!(
        build["commands"],
        serde_json::json!([format!("{} --version", env!("CARGO_BIN_EXE_bertcls"))]),
        "{build}"
    );
    assert_eq!(
        std::fs::read_to_string(&tests_ran).unwrap().trim(),
        "--ignored --test-threads 1"
    );
    assert!(
        steps.contains(&("train_gpu_f32".into(), "failed".into())),
        "{steps:?}"
    );
    assert_eq!(
        report["results"]["reference"]["skipped"],
        "torch does not see CUDA"
    );
    let failed = step(&report, "train_gpu_f32");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("--features cuda"),
        "{failed}"
    );
}
