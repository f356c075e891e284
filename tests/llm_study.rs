//! The LLM-scale study's pipeline end to end at its miniature profile (`llm_study --profile mini`, well under two
//! minutes on lavapipe): data, tokenizer, SFT, on-policy sampling, judging, the four pair scenarios, every
//! preference training, the reward model, PPO and the evaluations, through the `dpo3d` binary; then the report,
//! figures and metrics it promises. This checks the plumbing, not the science (the miniature's model is too small
//! for the paper's effects). A rerun resumes: every phase is skipped and the report is rebuilt.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dpo3d");

/// The example binary `cargo test` builds next to the crate's binaries.
fn study_bin() -> PathBuf {
    let dir = Path::new(BIN).parent().expect("target dir");
    let exe = dir.join("examples").join(format!("llm_study{}", std::env::consts::EXE_SUFFIX));
    assert!(
        exe.is_file(),
        "{} is missing: run the suite with `cargo test` (which builds the examples) or `cargo build --examples`",
        exe.display()
    );
    exe
}

fn run_study(out: &Path) -> String {
    let o = Command::new(study_bin())
        .args(["--profile", "mini", "--out"])
        .arg(out)
        .args(["--dpo3d", BIN])
        .output()
        .expect("llm_study runs");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "llm_study --profile mini failed:\n{stderr}");
    stderr
}

#[test]
fn should_run_the_llm_study_pipeline_end_to_end_and_resume() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("llm_study_mini");
    let _ = std::fs::remove_dir_all(&out);
    run_study(&out);

    let results: Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let models = results["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    for want in [
        "sft",
        "weak",
        "dpo-on_on-s0",
        "dpo-on_off-s0",
        "dpo-off_on-s0",
        "dpo-off_off-s0",
        "sft-dpo",
        "ipo",
        "slic",
        "ppo",
    ] {
        assert!(names.contains(&want), "results.json lacks {want}: {names:?}");
    }
    for m in models {
        let greedy = &m["greedy"];
        let rate = greedy["judge/full_score_rate"].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&rate), "{}: full-score rate {rate}", m["name"]);
        assert_eq!(greedy["judge/samples"].as_u64(), Some(16), "{}: one answer per held-out problem", m["name"]);
        let lp = m["train_pairs"]["eval_logps/chosen_token_mean"].as_f64().unwrap_or(1.0);
        assert!(lp < 0.0 && lp.is_finite(), "{}: chosen log-prob {lp}", m["name"]);
        assert!(m["entropy_per_token"].as_f64().is_some_and(|e| e > 0.0), "{}: entropy", m["name"]);
    }
    // The four scenarios hold the same problems: equal pair counts.
    let pairs = &results["pairs"]["train"];
    let n = pairs["on_on"].as_u64().unwrap();
    assert!(n > 0, "no training pairs: {pairs}");
    for sc in ["on_off", "off_on", "off_off"] {
        assert_eq!(pairs[sc].as_u64(), Some(n), "{sc}");
    }
    // DPO against its reference (the SFT model): the SFT model's own implicit reward is zero.
    let sft = models.iter().find(|m| m["name"] == "sft").unwrap();
    assert_eq!(sft["train_pairs"]["eval_rewards/margins"].as_f64(), Some(0.0));

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for section in [
        "How it ran",
        "Table 1 analogue",
        "Table 3 analogue",
        "Table 7 analogue",
        "token level",
        "Figures 5/7/8",
        "Figure 4",
    ] {
        assert!(report.contains(section), "report.md lacks the section {section:?}");
    }
    assert!(!report.contains("NaN"), "report.md shows NaN");
    for f in ["accuracy.svg", "logps.svg"] {
        let svg = std::fs::read_to_string(out.join("figures").join(f)).unwrap();
        assert!(svg.contains("<svg") && svg.contains("polyline"), "{f} has no curve");
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    for run in ["sft", "rm", "ppo", "dpo-on_on-s0"] {
        assert!(metrics.contains(&format!("\"run\":\"{run}\"")), "metrics.jsonl has no rows of {run}");
    }
    assert!(metrics.contains("rewards/accuracies") && metrics.contains("objective/scores"), "TRL metric names");
    let phases: Value = serde_json::from_str(&std::fs::read_to_string(out.join("phases.json")).unwrap()).unwrap();
    assert!(phases["SFT"].as_f64().is_some_and(|s| s > 0.0), "phases.json: {phases}");

    // A rerun skips every finished phase (it only re-reads the evaluations) and rebuilds the report.
    let stderr = run_study(&out);
    assert!(stderr.contains("sft: done already") && stderr.contains("ppo: done already"), "{stderr}");
    assert!(!stderr.contains("train-dpo-on_on-s0: dpo3d"), "a finished run was trained again:\n{stderr}");
}
