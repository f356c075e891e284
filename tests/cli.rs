//! The `dpo3d` command line end to end, through the built binary on small generated data and a tiny GPT
//! (2 layers, width 32, T <= 32): tokenizer -> sft -> reward -> dpo (two loss types) -> eval -> generate -> ppo, each
//! producing its files; `--resume` ending bit-for-bit equal to the uninterrupted run; config files with flag
//! overrides; and every malformed input failing with one line naming the file and line or the config key, without
//! touching what `output_dir` already holds.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dpo3d");

/// A fresh directory for one test.
fn workdir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Sums as preference pairs (the right sum against one off by one), SFT rows and prompts; deterministic.
fn write_data(dir: &Path, n: usize) {
    let (mut pairs, mut sft, mut prompts) = (String::new(), String::new(), String::new());
    for i in 0..n {
        let (a, b) = ((i * 7) % 10, (i * 3 + 1) % 10);
        let p = format!("what is {a}+{b}? ");
        pairs.push_str(&format!(
            "{}\n",
            serde_json::json!({"prompt": p, "chosen": format!("{}.", a + b), "rejected": format!("{}.", a + b + 1)})
        ));
        sft.push_str(&format!("{}\n", serde_json::json!({"prompt": p, "completion": format!("{}.", a + b)})));
        prompts.push_str(&format!("{}\n", serde_json::json!({ "prompt": p })));
    }
    std::fs::write(dir.join("pairs.jsonl"), pairs).unwrap();
    std::fs::write(dir.join("sft.jsonl"), sft).unwrap();
    std::fs::write(dir.join("prompts.jsonl"), prompts).unwrap();
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN).args(args).current_dir(dir).output().expect("dpo3d runs")
}

/// Runs and asserts success, returning stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dpo3d {args:?} failed:\n{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// Runs and asserts a clean failure: non-zero exit, no panic, exactly one `error:` line on stderr containing
/// every one of `needles`.
fn fails(dir: &Path, args: &[&str], needles: &[&str]) {
    let out = run(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "dpo3d {args:?} should fail; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "dpo3d {args:?} panicked:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "dpo3d {args:?}: expected one error line, stderr:\n{stderr}");
    for n in needles {
        assert!(errors[0].contains(n), "dpo3d {args:?}: error line lacks {n:?}: {}", errors[0]);
    }
}

fn metrics(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn assert_model_dir(dir: &Path, tokenizer: bool) {
    for f in ["model.safetensors", "config.json", "training_config.yaml"] {
        assert!(dir.join(f).is_file(), "{} lacks {f}", dir.display());
    }
    assert_eq!(dir.join("tokenizer.json").is_file(), tokenizer, "{}: tokenizer.json", dir.display());
    dpo3d::checkpoint::load_gpt(dir).unwrap();
}

/// The tiny model and short run every training test uses.
const TINY: &[&str] = &[
    "--layers",
    "2",
    "--width",
    "32",
    "--heads",
    "2",
    "--max-length",
    "32",
    "--per-device-train-batch-size",
    "4",
    "--seed",
    "7",
];

#[test]
fn pipeline_tokenizer_sft_reward_dpo_eval_generate_ppo() {
    let d = workdir("pipeline");
    write_data(&d, 48);
    ok(&d, &["tokenizer", "--data", "sft.jsonl", "pairs.jsonl", "--vocab-size", "300", "--output-dir", "tok"]);
    let tok = dpo3d::data::HfTokenizer::from_file(d.join("tok/tokenizer.json")).unwrap();
    use dpo3d::data::TextEncoder;
    assert!(tok.vocab_size().unwrap() > 256 && tok.vocab_size().unwrap() <= 300);

    let mut sft = vec!["sft", "--data", "sft.jsonl", "--tokenizer", "tok/tokenizer.json", "--output-dir", "sft"];
    sft.extend_from_slice(TINY);
    sft.extend_from_slice(&["--max-steps", "12", "--learning-rate", "3e-3", "--logging-steps", "1"]);
    sft.extend_from_slice(&["--eval-split", "0.1", "--eval-steps", "6", "--save-steps", "6"]);
    ok(&d, &sft);
    assert_model_dir(&d.join("sft"), true);
    assert_model_dir(&d.join("sft/checkpoint-6"), true);
    assert!(d.join("sft/checkpoint-6/trainer_state.json").is_file());
    assert!(d.join("sft/checkpoint-6/optimizer.safetensors").is_file());
    assert!(d.join("sft/plots/loss.svg").is_file() && d.join("sft/plots/eval_loss.svg").is_file());
    let m = metrics(&d.join("sft/metrics.jsonl"));
    let losses: Vec<f64> = m.iter().filter_map(|r| r.get("loss")?.as_f64()).collect();
    assert_eq!(losses.len(), 12);
    assert!(losses[11] < losses[0], "SFT loss did not fall: {losses:?}");
    assert_eq!(m.iter().filter(|r| r.get("eval_loss").is_some()).count(), 2, "eval at steps 6 and 12");

    let pref = ["--model", "sft", "--data", "pairs.jsonl", "--max-steps", "4", "--learning-rate", "1e-3"];
    let mut rm = vec!["reward", "--output-dir", "rm", "--eval-split", "0.1"];
    rm.extend_from_slice(&pref);
    rm.extend_from_slice(&TINY[6..]);
    ok(&d, &rm);
    assert_model_dir(&d.join("rm"), true);
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(d.join("rm/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "GPT2ForSequenceClassification");
    let last = metrics(&d.join("rm/metrics.jsonl")).pop().unwrap();
    assert!(last.get("eval_rewards/accuracies").is_some(), "{last}");

    for (loss, out) in [("sigmoid", "dpo"), ("ipo", "ipo")] {
        let mut dpo = vec!["dpo", "--loss-type", loss, "--output-dir", out, "--eval-split", "0.1"];
        dpo.extend_from_slice(&pref);
        dpo.extend_from_slice(&TINY[6..]);
        ok(&d, &dpo);
        assert_model_dir(&d.join(out), true);
        let m = metrics(&d.join(out).join("metrics.jsonl"));
        for k in ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen"]
        {
            assert!(m[0].get(k).is_some(), "{out}: no {k} in {}", m[0]);
        }
        assert!(m.last().unwrap().get("eval_rewards/margins").is_some());
        assert!(d.join(out).join("plots/rewards_margins.svg").is_file());
    }

    let e = ok(&d, &["eval", "--model", "dpo", "--ref-model", "sft", "--data", "pairs.jsonl"]);
    let e: Value = serde_json::from_str(e.trim()).unwrap();
    let acc = e["eval_rewards/accuracies"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{e}");
    assert_eq!(e["eval_samples"], 48);
    let e: Value = serde_json::from_str(ok(&d, &["eval", "--model", "rm", "--data", "pairs.jsonl"]).trim()).unwrap();
    assert!(e.get("eval_rewards/accuracies").is_some() && e.get("eval_logps/chosen").is_none(), "{e}");

    let g = ok(
        &d,
        &["generate", "--model", "dpo", "--prompt", "what is 1+2? ", "--num-samples", "3", "--max-new-tokens", "6"],
    );
    let lines: Vec<Value> = g.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["prompt"] == "what is 1+2? " && l["completion"].is_string()));

    let mut ppo =
        vec!["ppo", "--model", "sft", "--reward-model", "rm", "--data", "prompts.jsonl", "--output-dir", "ppo"];
    ppo.extend_from_slice(&[
        "--max-steps",
        "2",
        "--response-length",
        "4",
        "--num-ppo-epochs",
        "1",
        "--logging-steps",
        "1",
    ]);
    ppo.extend_from_slice(&TINY[8..]);
    let with = |extra: &[&'static str]| -> Vec<&'static str> { ppo.iter().chain(extra).copied().collect() };
    fails(&d, &with(&["--stop-token", "newline"]), &["stop_token", "newline", "eos"]);
    fails(&d, &with(&["--stop-token", "eos", "--stop-token-id", "3"]), &["stop_token", "stop_token_id", "not both"]);
    ok(&d, &with(&["--stop-token", "eos"]));
    assert_model_dir(&d.join("ppo"), true);
    let m = metrics(&d.join("ppo/metrics.jsonl"));
    assert_eq!(m.len(), 2);
    for k in ["objective/kl", "objective/scores", "loss/policy_avg", "val/clipfrac_avg"] {
        assert!(m[1].get(k).is_some(), "ppo: no {k} in {}", m[1]);
    }
}

/// Stopped at step 3 (its checkpoint-3 kept, everything after removed) and resumed: the final weights and every
/// metrics line equal the uninterrupted run's, byte for byte (same device, same seed). Gradient accumulation,
/// warmup and a decaying schedule are on, so optimizer moments, step counters and the data order all matter.
#[test]
fn resume_is_bit_for_bit() {
    let d = workdir("resume");
    write_data(&d, 24);
    let mut args = vec!["dpo", "--data", "pairs.jsonl", "--output-dir", "run", "--max-steps", "6", "--save-steps", "3"];
    args.extend_from_slice(&["--gradient-accumulation-steps", "2", "--warmup-steps", "2", "--learning-rate", "2e-3"]);
    args.extend_from_slice(&["--logging-steps", "1", "--lr-scheduler-type", "cosine"]);
    args.extend_from_slice(TINY);
    ok(&d, &args);
    let full = std::fs::read(d.join("run/model.safetensors")).unwrap();
    let full_metrics = std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap();
    std::fs::remove_dir_all(d.join("run/checkpoint-6")).unwrap();
    std::fs::remove_file(d.join("run/model.safetensors")).unwrap();
    // Without --resume, a directory holding a run is refused and left as it is.
    fails(&d, &args, &["already holds a run", "--resume"]);
    assert_eq!(std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap(), full_metrics);
    let mut resumed = args.clone();
    resumed.push("--resume");
    // The checkpoint lists its kernel choices, and the resumed run builds its plans with them even where this
    // process would choose otherwise: here the LayerNorms are forced to the other row form, whose sums run in
    // another order (a tree over workgroup memory, or one invocation's loop), so unpinned they would differ.
    let kernels: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("run/checkpoint-3/kernels.json")).unwrap()).unwrap();
    let choices = kernels["choices"].as_object().expect("kernels.json has choices");
    let (_, form) = choices.iter().find(|(k, _)| k.starts_with("layernorm forward ")).expect("a layernorm choice");
    let other = if form == "invocation" { "layernorm=workgroup" } else { "layernorm=invocation" };
    let out = Command::new(BIN).args(&resumed).current_dir(&d).env("DPO3D_KERNELS", other).output().unwrap();
    assert!(out.status.success(), "resume failed:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(d.join("run/model.safetensors")).unwrap() == full, "resumed weights differ");
    assert_eq!(std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap(), full_metrics);
    let m = metrics(&d.join("run/metrics.jsonl"));
    assert_eq!(m.len(), 6);
    assert_eq!(m[0]["learning_rate"], 0.0, "warmup starts at 0 as in transformers");
}

/// A YAML file of TRL's keys, overridden by flags in both spellings; TOML and JSON files too; `--print-config`.
#[test]
fn config_files_and_flag_overrides() {
    let d = workdir("config");
    std::fs::write(
        d.join("dpo.yaml"),
        "learning_rate: 1.0e-3\nper_device_train_batch_size: 2\nbeta: 0.25\nloss_type: hinge\n\
         lr_scheduler_type: cosine\nwarmup_ratio: 0.1\noutput_dir: from-file\n",
    )
    .unwrap();
    let show = |args: &[&str]| -> Value {
        let y = ok(&d, args);
        serde_yaml::from_str(&y).unwrap()
    };
    let c = show(&["dpo", "--config", "dpo.yaml", "--print-config"]);
    assert_eq!(c["learning_rate"].as_f64().unwrap() as f32, 1e-3);
    assert_eq!(c["per_device_train_batch_size"], 2);
    assert_eq!(c["loss_type"], "hinge");
    assert_eq!(c["output_dir"], "from-file");
    assert_eq!(c["max_steps"], -1, "TRL's default");
    let c = show(&["dpo", "--config", "dpo.yaml", "--learning_rate", "0.002", "--beta=0.5", "--print-config"]);
    assert_eq!(c["learning_rate"].as_f64().unwrap() as f32, 2e-3);
    assert_eq!(c["beta"].as_f64().unwrap() as f32, 0.5);
    assert_eq!(c["per_device_train_batch_size"], 2, "file values stay where no flag overrides them");
    let c = show(&["dpo", "--config", "dpo.yaml", "--per-device-train-batch-size", "6", "--print-config"]);
    assert_eq!(c["per_device_train_batch_size"], 6);
    assert!(c.get("kl_coef").is_none(), "PPO keys are not dpo's");

    std::fs::write(d.join("sft.toml"), "learning_rate = 0.01\nmax_steps = 7\nseed = 3\n").unwrap();
    let c = show(&["sft", "--config", "sft.toml", "--print-config"]);
    assert_eq!((c["max_steps"].as_i64(), c["seed"].as_i64()), (Some(7), Some(3)));
    std::fs::write(d.join("ppo.json"), r#"{"kl_coef": 0.2, "response_length": 5}"#).unwrap();
    let c = show(&["ppo", "--config", "ppo.json", "--cliprange", "0.3", "--print-config"]);
    assert_eq!(c["kl_coef"].as_f64().unwrap() as f32, 0.2);
    assert_eq!(c["cliprange"].as_f64().unwrap() as f32, 0.3);
    assert_eq!(c["response_length"], 5);
}

/// Every malformed input fails with one line naming the file and line or the key, and leaves output_dir as it was.
#[test]
fn malformed_inputs_fail_with_one_clear_line() {
    let d = workdir("malformed");
    write_data(&d, 8);
    let good = std::fs::read_to_string(d.join("pairs.jsonl")).unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    lines[2] = r#"{"prompt": "what is 1+1? ", "chosen": "2."}"#;
    std::fs::write(d.join("missing_field.jsonl"), lines.join("\n")).unwrap();
    lines[2] = r#"{"prompt": "what is 1+1? ", "chosen": "2.", "rejected": "3."#;
    std::fs::write(d.join("bad_json.jsonl"), lines.join("\n")).unwrap();
    lines[2] = r#"{"prompt": [{"role": "user", "content": "1+1?"}], "chosen": [{"role": "assistant", "content": "2"}], "rejected": [{"role": "assistant", "content": "3"}]}"#;
    std::fs::write(d.join("chat.jsonl"), lines.join("\n")).unwrap();
    std::fs::write(d.join("unknown.yaml"), "learning_rate: 1.0e-3\nbogus_key: 1\n").unwrap();
    std::fs::write(d.join("wrong_type.yaml"), "learning_rate: fast\n").unwrap();
    std::fs::write(d.join("wrong_task.yaml"), "kl_coef: 0.1\n").unwrap();

    // An output_dir that already holds something: none of the failures below may change it.
    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "keep me").unwrap();
    let base = |data: &'static str| -> Vec<&'static str> {
        let mut v = vec!["dpo", "--data", data, "--output-dir", "out", "--max-steps", "1"];
        v.extend_from_slice(TINY);
        v
    };
    let with = |mut v: Vec<&'static str>, extra: &[&'static str]| {
        v.extend_from_slice(extra);
        v
    };
    fails(&d, &base("missing_field.jsonl"), &["missing_field.jsonl:3:", "rejected"]);
    fails(&d, &base("bad_json.jsonl"), &["bad_json.jsonl:3:", "invalid JSON"]);
    fails(&d, &base("chat.jsonl"), &["chat.jsonl:3:", "chat template"]);
    fails(&d, &base("nope.jsonl"), &["nope.jsonl"]);
    fails(&d, &with(base("pairs.jsonl"), &["--config", "unknown.yaml"]), &["unknown.yaml", "bogus_key"]);
    fails(&d, &with(base("pairs.jsonl"), &["--config", "wrong_type.yaml"]), &["wrong_type.yaml", "learning_rate"]);
    fails(&d, &with(base("pairs.jsonl"), &["--config", "wrong_task.yaml"]), &["kl_coef", "dpo3d dpo"]);
    fails(&d, &with(base("pairs.jsonl"), &["--learning-rate", "fast"]), &["--learning-rate", "number"]);
    fails(&d, &with(base("pairs.jsonl"), &["--loss-type", "nonsense"]), &["loss_type", "nonsense"]);
    fails(
        &d,
        &with(base("pairs.jsonl"), &["--per-device-eval-batch-size", "3"]),
        &["per_device_eval_batch_size", "per_device_train_batch_size"],
    );
    fails(&d, &with(base("pairs.jsonl"), &["--tokenizer", "missing/tokenizer.json"]), &["missing/tokenizer.json"]);
    fails(&d, &["eval", "--model", "no-such-model", "--data", "pairs.jsonl"], &["no-such-model"]);

    // Vocabulary mismatch: a 300-token tokenizer against a byte-level (V = 256) model.
    ok(&d, &["tokenizer", "--data", "sft.jsonl", "--vocab-size", "300", "--min-frequency", "1", "--output-dir", "tok"]);
    // The byte-level model comes from an --init-config file (dpo3d's keys; V defaults to the tokenizer's, bytes).
    std::fs::write(d.join("model.json"), r#"{"context": 32, "layers": 2, "heads": 2, "width": 32}"#).unwrap();
    let sft = [
        "sft",
        "--data",
        "sft.jsonl",
        "--output-dir",
        "bytes-model",
        "--max-steps",
        "1",
        "--init-config",
        "model.json",
    ];
    ok(&d, &sft);
    assert_eq!(dpo3d::checkpoint::load_gpt(&d.join("bytes-model")).unwrap().0.vocab_size, 256);
    std::fs::write(d.join("bad_model.json"), r#"{"context": 32, "layers": "two", "heads": 2, "width": 32}"#).unwrap();
    fails(&d, &with(base("pairs.jsonl"), &["--init-config", "bad_model.json"]), &["bad_model.json", "layers"]);
    fails(
        &d,
        &with(base("pairs.jsonl"), &["--model", "bytes-model", "--tokenizer", "tok/tokenizer.json"]),
        &["vocabulary mismatch", "tok/tokenizer.json", "256"],
    );
    let left: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(left, vec!["notes.txt".to_string()]);
    assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "keep me");
}

/// TRL's other row formats: SFT `{"text"}` rows and implicit-prompt preference rows `{"chosen", "rejected"}` (the
/// prompt is their common prefix); rows over `max_length` are truncated and counted in the log.
#[test]
fn trl_text_and_implicit_prompt_rows_train_and_truncation_is_counted() {
    let d = workdir("formats");
    let (mut text, mut implicit) = (String::new(), String::new());
    for i in 0..6 {
        let (a, b) = (i % 10, (i * 3) % 10);
        text.push_str(&format!("{}\n", serde_json::json!({ "text": format!("{a}+{b}={}.", a + b) })));
        let p = format!("what is {a}+{b}? ");
        implicit.push_str(&format!(
            "{}\n",
            serde_json::json!({"chosen": format!("{p}{}.", a + b), "rejected": format!("{p}{}.", a + b + 1)})
        ));
    }
    std::fs::write(d.join("text.jsonl"), text).unwrap();
    std::fs::write(d.join("implicit.jsonl"), implicit).unwrap();
    let mut sft = vec!["sft", "--data", "text.jsonl", "--output-dir", "sft", "--max-steps", "2"];
    sft.extend_from_slice(TINY);
    ok(&d, &sft);
    assert_eq!(metrics(&d.join("sft/metrics.jsonl")).len(), 2);
    let mut dpo = vec!["dpo", "--data", "implicit.jsonl", "--output-dir", "dpo", "--max-steps", "2"];
    dpo.extend_from_slice(&["--model", "sft", "--per-device-train-batch-size", "2", "--max-length", "12"]);
    let out = run(&d, &dpo);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Every row is 15 or 16 bytes (prompt "what is a+b? " of 13, a response of 2 or 3): all 6 are cut to 12.
    assert!(stderr.contains("6 truncated to max_length 12; T = 12"), "{stderr}");
    let m = metrics(&d.join("dpo/metrics.jsonl"));
    assert!(m[0]["logps/chosen"].as_f64().unwrap() < 0.0, "responses survive truncation: {}", m[0]);
}

/// PPO resumes bit-for-bit too: policy and value weights, both optimizers, the step (the GPU sampler and minibatch
/// order derive from seed and step) and the prompt order. A rule-based reward (count of byte 'a') and a model from
/// scratch keep it small.
#[test]
fn ppo_resume_is_bit_for_bit() {
    let d = workdir("ppo_resume");
    write_data(&d, 12);
    let mut args = vec!["ppo", "--data", "prompts.jsonl", "--output-dir", "run", "--max-steps", "4"];
    args.extend_from_slice(&["--save-steps", "2", "--response-length", "4", "--num-ppo-epochs", "2"]);
    args.extend_from_slice(&["--reward-token-id", "97", "--learning-rate", "1e-3", "--logging-steps", "1"]);
    args.extend_from_slice(TINY);
    ok(&d, &args);
    assert!(d.join("run/checkpoint-2/value/model.safetensors").is_file());
    let full = std::fs::read(d.join("run/model.safetensors")).unwrap();
    let full_metrics = std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap();
    std::fs::remove_dir_all(d.join("run/checkpoint-4")).unwrap();
    std::fs::remove_file(d.join("run/model.safetensors")).unwrap();
    let mut resumed = args.clone();
    resumed.push("--resume");
    ok(&d, &resumed);
    assert!(std::fs::read(d.join("run/model.safetensors")).unwrap() == full, "resumed PPO weights differ");
    assert_eq!(std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap(), full_metrics);
}

/// `task-data` writes deterministic task files whose reference answers the crate's judges give full marks, with
/// held-out rows that differ from the training ones.
#[test]
fn should_write_generated_tasks_that_their_judges_accept() {
    use dpo3d::data::tasks::{judge_math, judge_poem, MathProblem, PoemTask};
    let dir = workdir("task_data");
    for task in ["math", "poem"] {
        let out = task.to_string();
        ok(
            &dir,
            &["task-data", "--task", task, "--output-dir", &out, "--rows", "30", "--eval-rows", "10", "--seed", "3"],
        );
        let rows = |f: &str| metrics(&dir.join(&out).join(f));
        let (sft, eval, prompts) = (rows("sft.jsonl"), rows("eval.jsonl"), rows("prompts.jsonl"));
        assert_eq!((sft.len(), eval.len(), prompts.len()), (30, 10, 30), "{task}");
        assert!(eval.iter().all(|e| !sft.contains(e)), "{task}: a held-out row is also a training row");
        for (i, r) in sft.iter().enumerate() {
            assert_eq!(r["prompt"], prompts[i]["prompt"], "{task} row {i}");
            let completion = r["completion"].as_str().unwrap();
            let completion = completion.strip_suffix("<|endoftext|>").expect("completions end with the stop token");
            if task == "math" {
                let p = &MathProblem::set(3, 30)[i];
                assert_eq!(r["prompt"].as_str().unwrap(), format!("{}\n", p.question));
                assert_eq!(judge_math(p, completion).score, 5, "row {i}: {completion:?}");
            } else {
                let t = &PoemTask::set(3, 30)[i];
                assert!(judge_poem(t, completion).full(), "row {i}: {completion:?}");
            }
        }
        if task == "poem" {
            // The judge's letter summary of the held-out references: every poem reads its letter, so the poems' top
            // last initial is the most requested letter and the rule holds on every other instruction too.
            let summary: serde_json::Value =
                serde_json::from_str(&ok(&dir, &["judge", "--task", "poem", "--data", &format!("{out}/eval.jsonl")]))
                    .unwrap();
            let mut asked = std::collections::BTreeMap::new();
            for r in &eval {
                let t = PoemTask::parse(r["prompt"].as_str().unwrap()).expect("a poem instruction");
                *asked.entry(t.last_letter).or_insert(0usize) += 1;
            }
            let most = *asked.values().max().unwrap();
            let top = *asked.iter().find(|(_, &k)| k == most).unwrap().0;
            assert_eq!(summary["judge/full_rate"], 1.0);
            assert_eq!(summary["judge/last_letter_prior"].as_f64(), Some(most as f64 / 10.0));
            assert_eq!(summary["judge/last_initial_top"].as_str(), Some(top.to_string().as_str()));
            assert_eq!(summary["judge/last_letter_other_count"].as_u64(), Some(10 - most as u64));
            assert_eq!(summary["judge/rule_last_letter_other"].as_f64(), Some(1.0), "{summary}");
            // Each reference ends with a word of its own letter, so the initials' shares are the instructions' and
            // the letter-blind rate is the sum of their squares.
            let blind: f64 = asked.values().map(|&k| (k as f64 / 10.0).powi(2)).sum();
            let got = summary["judge/rule_last_letter_blind"].as_f64().unwrap();
            assert!((got - blind).abs() < 1e-12, "letter-blind rate {got}, expected {blind}");
        }
        // Deterministic: the same seed writes the same files.
        let again = format!("{task}_again");
        ok(
            &dir,
            &["task-data", "--task", task, "--output-dir", &again, "--rows", "30", "--eval-rows", "10", "--seed", "3"],
        );
        for f in ["sft.jsonl", "eval.jsonl", "prompts.jsonl"] {
            assert_eq!(
                std::fs::read(dir.join(&out).join(f)).unwrap(),
                std::fs::read(dir.join(&again).join(f)).unwrap()
            );
        }
    }
    fails(&dir, &["task-data", "--task", "chess", "--output-dir", "x"], &["chess"]);
}

/// A task's way from a model to preference pairs: `generate --data` samples every row's prompt (per-row lengths,
/// the stop token kept in the text), deterministically for a seed; `judge` scores samples and references; `pairs`
/// builds the four scenarios from hand-judged rows exactly as specified; bad rows fail with file:line.
#[test]
fn should_sample_judge_and_pair_a_task() {
    let dir = workdir("task_pipeline");
    ok(
        &dir,
        &["task-data", "--task", "math", "--output-dir", "data", "--rows", "40", "--eval-rows", "6", "--seed", "2"],
    );
    ok(&dir, &["tokenizer", "--data", "data/sft.jsonl", "--vocab-size", "400", "--output-dir", "tok"]);
    ok(
        &dir,
        &[
            "sft",
            "--data",
            "data/sft.jsonl",
            "--tokenizer",
            "tok/tokenizer.json",
            "--layers",
            "1",
            "--width",
            "32",
            "--heads",
            "2",
            "--max-length",
            "96",
            "--max-steps",
            "20",
            "--learning-rate",
            "3e-3",
            "--output-dir",
            "sft",
            "--seed",
            "0",
        ],
    );
    let gen = |out: &str, seed: &str, n: &str| {
        ok(
            &dir,
            &[
                "generate",
                "--model",
                "sft",
                "--data",
                "data/eval.jsonl",
                "--num-samples",
                n,
                "--max-new-tokens",
                "20",
                "--batch-size",
                "5",
                "--seed",
                seed,
                "--output",
                out,
            ],
        );
    };
    gen("s/a.jsonl", "7", "3");
    gen("s/b.jsonl", "7", "3");
    assert_eq!(std::fs::read(dir.join("s/a.jsonl")).unwrap(), std::fs::read(dir.join("s/b.jsonl")).unwrap());
    let rows = metrics(&dir.join("s/a.jsonl"));
    assert_eq!(rows.len(), 6);
    for r in &rows {
        let (c, st, lp, nt) = (&r["completions"], &r["stopped"], &r["logps"], &r["num_tokens"]);
        assert!(r["completion"].is_string(), "the input row's fields are kept");
        for i in 0..3 {
            let text = c[i].as_str().unwrap();
            assert_eq!(st[i].as_bool().unwrap(), text.ends_with("<|endoftext|>"), "{text:?}");
            let n = nt[i].as_u64().unwrap();
            assert!((1..=20).contains(&n) && (st[i].as_bool().unwrap() || n == 20), "{n} tokens");
            assert!(lp[i].as_f64().unwrap() < 0.0);
        }
    }
    // Judge: samples scored 1-5, the references (right by construction) scored 5.
    let summary: Value =
        serde_json::from_str(&ok(&dir, &["judge", "--task", "math", "--data", "s/a.jsonl", "--output", "s/j.jsonl"]))
            .unwrap();
    assert_eq!(summary["judge/samples"], 18);
    for r in metrics(&dir.join("s/j.jsonl")) {
        assert_eq!(r["reference_score"], 5);
        assert!(r["scores"].as_array().unwrap().iter().all(|x| (1..=5).contains(&x.as_u64().unwrap())));
    }
    let refs: Value =
        serde_json::from_str(&ok(&dir, &["judge", "--task", "math", "--data", "data/eval.jsonl"])).unwrap();
    assert_eq!((refs["judge/full_score_rate"].as_f64(), refs["judge/samples"].as_u64()), (Some(1.0), Some(6)));

    // Pairs from hand-judged rows: best vs worst (ties skipped), reference and the other model's answer.
    let p =
        |q: &str| format!("Ann has {q} pens. She buys 1 more. Then she buys 1 more. How many pens does Ann have now?");
    let own = [
        serde_json::json!({"prompt": p("1"), "completion": "R1", "reference_score": 5,
            "completions": ["a", "b", "c"], "scores": [2, 5, 1]}),
        serde_json::json!({"prompt": p("2"), "completion": "R2", "reference_score": 5,
            "completions": ["d", "e"], "scores": [3, 3]}),
        serde_json::json!({"prompt": p("3"), "completion": "R3", "reference_score": 5,
            "completions": ["f", "g"], "scores": [4, 2]}),
    ];
    let other = [
        serde_json::json!({"prompt": p("1"), "completions": ["x"], "scores": [1]}),
        serde_json::json!({"prompt": p("2"), "completions": ["y"], "scores": [1]}),
        serde_json::json!({"prompt": p("3"), "completions": ["z"], "scores": [5]}),
    ];
    let lines = |v: &[Value]| v.iter().map(|r| format!("{r}\n")).collect::<String>();
    std::fs::write(dir.join("own.jsonl"), lines(&own)).unwrap();
    std::fs::write(dir.join("other.jsonl"), lines(&other)).unwrap();
    let counts: Value =
        serde_json::from_str(&ok(&dir, &["pairs", "--samples", "own.jsonl", "--output-dir", "p1"])).unwrap();
    assert_eq!((counts["on_on"].as_u64(), counts["skipped_ties"].as_u64()), (Some(2), Some(1)));
    let on_on = metrics(&dir.join("p1/on_on.jsonl"));
    let cr: Vec<(&str, &str)> =
        on_on.iter().map(|r| (r["chosen"].as_str().unwrap(), r["rejected"].as_str().unwrap())).collect();
    assert_eq!(cr, [("b", "c"), ("f", "g")]);
    // Four scenarios: problem 2 is a tie on-policy and problem 3's other answer (5) beats its best own sample (4),
    // so only problem 1 has all four pairs.
    ok(&dir, &["pairs", "--samples", "own.jsonl", "--other", "other.jsonl", "--output-dir", "p4"]);
    let want = [("on_on", "b", "c"), ("on_off", "b", "x"), ("off_on", "R1", "c"), ("off_off", "R1", "x")];
    for (f, c, r) in want {
        let rows = metrics(&dir.join(format!("p4/{f}.jsonl")));
        assert_eq!(rows.len(), 1, "{f}");
        assert_eq!((rows[0]["chosen"].as_str(), rows[0]["rejected"].as_str()), (Some(c), Some(r)), "{f}");
        assert!(rows[0]["score_chosen"].as_u64() > rows[0]["score_rejected"].as_u64());
    }

    // Bad input: file and line.
    std::fs::write(
        dir.join("bad_judge.jsonl"),
        format!("{}\n{}\n", own[0], serde_json::json!({"prompt": "hi", "completion": "x"})),
    )
    .unwrap();
    fails(&dir, &["judge", "--task", "math", "--data", "bad_judge.jsonl"], &["bad_judge.jsonl:2", "not a `math` task"]);
    std::fs::write(
        dir.join("unjudged.jsonl"),
        format!("{}\n", serde_json::json!({"prompt": "q", "completions": ["a"]})),
    )
    .unwrap();
    fails(&dir, &["pairs", "--samples", "unjudged.jsonl", "--output-dir", "p5"], &["unjudged.jsonl:1", "judge"]);
    let long = "Ann has 3 pens. ".repeat(30);
    std::fs::write(
        dir.join("long.jsonl"),
        format!("{}\n{}\n", serde_json::json!({"prompt": "x"}), serde_json::json!({"prompt": long})),
    )
    .unwrap();
    fails(
        &dir,
        &["generate", "--model", "sft", "--data", "long.jsonl", "--output", "o.jsonl", "--max-new-tokens", "20"],
        &["long.jsonl:2", "context"],
    );
}
