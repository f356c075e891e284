//! The LLM-scale study's pipeline end to end at its miniature profile (`llm_study --profile mini`, about two minutes
//! on lavapipe), both tasks: data, tokenizer, SFT, on-policy sampling, judging, the four pair scenarios (math), every
//! preference training, the reward model, PPO (with the reward model, and on the poem judge's score) and the
//! evaluations, through the `dpo3d` binary; then the report, figures and metrics it promises. This checks the plumbing, not the science (the miniature's model is too small
//! for the paper's effects). A rerun resumes: every phase is skipped and the report is rebuilt. A second test runs
//! `--shape-check` (a profile's sizes with the runs cut short) on the math task.

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

fn run_study(out: &Path, extra: &[&str]) -> String {
    let o = Command::new(study_bin())
        .args(["--profile", "mini", "--out"])
        .arg(out)
        .args(["--dpo3d", BIN])
        .args(extra)
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
    run_study(&out, &[]);

    let results: Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let tasks = [
        (
            "math",
            &[
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
            ][..],
        ),
        ("poem", &["sft", "weak", "dpo-on_on-s0", "flex-0.05", "flex-0.05-s1", "sft-dpo", "ppo", "ppo-rule"][..]),
    ];
    for (task, want) in tasks {
        let res = &results["tasks"][task];
        let models = res["models"].as_array().unwrap_or_else(|| panic!("{task}: no models in results.json"));
        let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
        for w in want {
            assert!(names.contains(w), "{task}: results.json lacks {w}: {names:?}");
        }
        let full = if task == "math" { "judge/full_score_rate" } else { "judge/full_rate" };
        for m in models {
            let rate = m["greedy"][full].as_f64().unwrap_or(-1.0);
            assert!((0.0..=1.0).contains(&rate), "{task}/{}: full rate {rate}", m["name"]);
            assert_eq!(
                m["greedy"]["judge/samples"].as_u64(),
                Some(16),
                "{task}/{}: one answer per held-out prompt",
                m["name"]
            );
            let lp = m["train_pairs"]["eval_logps/chosen_token_mean"].as_f64().unwrap_or(1.0);
            assert!(lp < 0.0 && lp.is_finite(), "{task}/{}: chosen log-prob {lp}", m["name"]);
            assert!(m["entropy_per_token"].as_f64().is_some_and(|e| e > 0.0), "{task}/{}: entropy", m["name"]);
        }
        // The four scenarios hold the same prompts: equal pair counts.
        let pairs = &res["pairs"]["train"];
        let n = pairs["on_on"].as_u64().unwrap();
        assert!(n > 0, "{task}: no training pairs: {pairs}");
        for sc in ["on_off", "off_on", "off_off"] {
            assert_eq!(pairs[sc].as_u64(), Some(n), "{task}: {sc}");
        }
        // Against its reference (the SFT model) the SFT model's implicit reward is zero.
        let sft = models.iter().find(|m| m["name"] == "sft").unwrap();
        assert_eq!(sft["train_pairs"]["eval_rewards/margins"].as_f64(), Some(0.0), "{task}");
        // Token level: the SFT model (step 0) and DPO's checkpoints, every category counted.
        let points = res["token_level"]["points"].as_array().unwrap();
        assert!(points.len() >= 2 && points[0]["step"] == 0, "{task}: token-level points {points:?}");
        let tokens = |k: &str| points[0][k].as_u64().unwrap_or(0);
        assert!(
            tokens("rejected_rest_tokens") > 0 && tokens("chosen_only_tokens") + tokens("chosen_in_both_tokens") > 0
        );
        for f in ["accuracy", "logps"] {
            let svg = std::fs::read_to_string(out.join("figures").join(format!("{task}_{f}.svg"))).unwrap();
            assert!(svg.contains("<svg") && svg.contains("polyline"), "{task}_{f}.svg has no curve");
        }
    }
    // The beta_neg sweep's row holds each seed's rate and their mean (mini trains 2 seeds per beta_neg).
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    // The last Figure 4 section is the poem task's (math has one only when it sweeps several beta_neg).
    assert!(report.contains("## Figure 4 analogue"), "no beta_neg sweep section");
    let sweep = report.rsplit("## Figure 4 analogue").next().unwrap();
    let row = sweep.lines().find(|l| l.starts_with("| 0.05 |")).expect("the sweep's 0.05 row");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(cells[3].split(", ").count(), 2, "two seeds in {row}");
    assert!(report.contains("Flex-DPO beta_neg 0.05, seed 1"), "the letter table lists each seed");
    let ppo_rule =
        &results["tasks"]["poem"]["models"].as_array().unwrap().iter().find(|m| m["name"] == "ppo-rule").unwrap()
            ["ppo_final"];
    let score = ppo_rule["objective/scores"].as_f64().unwrap_or(-1.0);
    assert!((0.0..=1.0).contains(&score), "PPO on the poem rules: objective/scores {score} is not a rule fraction");

    // Every poem model's greedy answers come with the judge's last-letter summary, and the rule's overall rate is
    // made of the two parts it splits into: the top initial's instructions and the others.
    for m in results["tasks"]["poem"]["models"].as_array().unwrap() {
        let g = &m["greedy"];
        let f = |k: &str| g[k].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&f("judge/last_letter_prior")) && f("judge/last_letter_prior") > 0.0, "{m}");
        assert!((0.0..=1.0).contains(&f("judge/last_initial_top_share")), "{}: {g}", m["name"]);
        assert!((0.0..=1.0).contains(&f("judge/rule_last_letter_blind")), "{}: {g}", m["name"]);
        let others = g["judge/last_letter_other_count"].as_f64().unwrap_or(-1.0);
        assert!((0.0..=f("judge/samples")).contains(&others), "{}: {g}", m["name"]);
        if others > 0.0 {
            let passed_other = f("judge/rule_last_letter_other") * others;
            assert!(passed_other <= f("judge/rule_last_letter") * f("judge/samples") + 1e-6, "{}: {g}", m["name"]);
        }
    }

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for section in [
        "The last letter: read from the instruction",
        "How it ran",
        "Table 1 analogue",
        "Table 2 analogue",
        "Table 3 analogue",
        "Table 7 analogue",
        "token level",
        "Figures 5/7/8",
        "Figure 4",
    ] {
        assert!(report.contains(section), "report.md lacks the section {section:?}");
    }
    assert!(!report.contains("NaN"), "report.md shows NaN");
    // PPO's responses end at <|endoftext|> (the reward scores the answer, not what was sampled after it).
    for task in ["math", "poem"] {
        let cfg = std::fs::read_to_string(out.join(task).join("models/ppo/training_config.yaml")).unwrap();
        assert!(cfg.contains("stop_token: eos"), "{task} PPO ran without a stop token:\n{cfg}");
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    for run in ["sft", "rm", "ppo", "ppo-rule", "dpo-on_on-s0"] {
        assert!(metrics.contains(&format!("\"run\":\"{run}\"")), "metrics.jsonl has no rows of {run}");
    }
    assert!(metrics.contains("rewards/accuracies") && metrics.contains("objective/scores"), "TRL metric names");
    let phases: Value = serde_json::from_str(&std::fs::read_to_string(out.join("phases.json")).unwrap()).unwrap();
    assert!(phases["math: SFT"].as_f64().is_some_and(|s| s > 0.0), "phases.json: {phases}");

    // A rerun skips every finished phase (it only re-reads the evaluations) and rebuilds the report.
    let stderr = run_study(&out, &[]);
    assert!(stderr.contains("math/sft: done already") && stderr.contains("poem/ppo-rule: done already"), "{stderr}");
    assert!(!stderr.contains("train-dpo-on_on-s0: dpo3d"), "a finished run was trained again:\n{stderr}");
}

/// `--shape-check`: the profile's model, batch and sequence sizes with the data and the runs cut short, end to end
/// (math: the task with every scenario), and a report that says its numbers mean nothing.
#[test]
fn should_shape_check_a_profile_end_to_end() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("llm_study_shape_check");
    let _ = std::fs::remove_dir_all(&out);
    run_study(&out, &["--shape-check", "--tasks", "math"]);
    let profile: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("math/profile.json")).unwrap()).unwrap();
    assert_eq!(profile["name"], "mini (shape check)");
    assert_eq!((profile["width"].as_u64(), profile["layers"].as_u64()), (Some(48), Some(1)), "sizes are the profile's");
    assert_eq!((profile["ppo_steps"].as_u64(), profile["eval_steps"].as_u64()), (Some(2), Some(2)));
    assert!(profile["sft_steps"].as_u64().is_some_and(|s| s <= 300), "{profile}");
    // One generation batch of samples: gen_batch / samples_per_problem problems.
    assert_eq!(profile["pair_problems"].as_u64(), Some(8), "{profile}");
    for model in ["sft", "dpo-on_on-s0", "dpo-off_off-s0", "ipo", "slic", "rm", "ppo"] {
        assert!(out.join("math/models").join(model).join("model.safetensors").is_file(), "no {model} model");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("A shape check") && report.contains("Table 3 analogue"), "{report}");
    let results: Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["profile"], "mini (shape check)");

    // The real profile into the same directory would skip the shape check's finished phases and report them under
    // its name: it is refused.
    let o = Command::new(study_bin())
        .args(["--profile", "mini", "--tasks", "math", "--out"])
        .arg(&out)
        .args(["--dpo3d", BIN])
        .output()
        .expect("llm_study runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("holds runs of another profile") && stderr.contains("--out"), "{stderr}");
}
