//! `examples/lavapipe_ceiling` and `examples/dispatch_cost` at small sizes. lavapipe_ceiling: the three forms of the
//! vec4 GEMM body run, the shipped form computes A @ B (the example checks it against the CPU and fails otherwise),
//! each prints a positive GFLOP/s, so does the subgroup GEMM on lavapipe (which has subgroups), and a size the kernels
//! cannot tile is refused with a clear error. dispatch_cost: see its test below.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The example binary `cargo test` builds next to the crate's binaries.
fn example_bin() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_dpo3d")).parent().expect("target dir");
    let exe = dir.join("examples").join(format!("lavapipe_ceiling{}", std::env::consts::EXE_SUFFIX));
    assert!(exe.is_file(), "{} is missing: run the suite with `cargo test` (which builds the examples)", exe.display());
    exe
}

#[test]
fn should_time_the_three_forms_and_check_the_product() {
    let o = Command::new(example_bin()).args(["--n", "256", "--runs", "1"]).output().expect("example runs");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    let mut forms = vec!["full", "a_only", "no_loads"];
    if stdout.contains("llvmpipe") {
        forms.push("subgroup");
    }
    for form in forms {
        let line = stdout.lines().find(|l| l.starts_with(form)).unwrap_or_else(|| panic!("no {form} row:\n{stdout}"));
        let gflops: f64 = line.split_whitespace().nth(2).and_then(|x| x.parse().ok()).expect("GFLOP/s column");
        assert!(gflops.is_finite() && gflops > 0.0, "{line}");
    }

    let o = Command::new(example_bin()).args(["--n", "100"]).output().expect("example runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--n 100") && stderr.contains("multiple of 128"), "{stderr}");
}

/// `examples/dispatch_cost`: each of its three sizes prints a positive time per dispatch, after checking that the
/// kernel ran as many times as recorded; zero repetitions are refused with a clear error.
#[test]
fn should_time_dispatches_that_ran() {
    let exe = example_bin().with_file_name(format!("dispatch_cost{}", std::env::consts::EXE_SUFFIX));
    let o = Command::new(&exe).args(["--reps", "5", "--runs", "1"]).output().expect("example runs");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    for groups in ["1", "512", "2048"] {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(groups))
            .unwrap_or_else(|| panic!("no row for {groups} workgroups:\n{stdout}"));
        let us: f64 = line.split_whitespace().nth(2).and_then(|x| x.parse().ok()).expect("time column");
        assert!(us.is_finite() && us > 0.0, "{line}");
    }
    let o = Command::new(&exe).args(["--reps", "0"]).output().expect("example runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--reps"), "{stderr}");
}
