//! llm-study: the paper's LLM experiments (its sections 4 and 5) at small scale, on dpo3d's own GPT, tokenizer and
//! trainers. Math word problems with worked solutions (generated, judged 1-5 by a rule-based judge); a GPT trained
//! by SFT until part of its held-out answers are fully right; on-policy pairs from its own samples (8 per problem,
//! best vs worst) and off-policy pairs (the reference solution, a weaker checkpoint's answer), the paper's four
//! scenarios; then DPO, Flex-DPO (a beta_neg sweep), SFT-DPO, IPO, SLiC and RM + PPO from the same SFT model,
//! each evaluated on held-out problems.
//!
//!   ./scripts/llm-study [--profile small|full|mini] [--out DIR]     (default: small, runs/llm-study)
//!
//! The study is a user of the `dpo3d` command line: every phase is one `dpo3d` subcommand (printed as it runs, its
//! log in DIR/logs/), so each step can be rerun or changed by hand. A phase whose output already exists is skipped,
//! so an interrupted study resumes. DIR/report.md and DIR/figures/ are written from DIR/results.json and the runs'
//! metrics (`--report-only` rebuilds only them).

mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

#[derive(Parser, Debug)]
#[command(about = "The paper's LLM experiments at small scale: math with on/off-policy pairs, DPO family vs RM+PPO")]
struct Args {
    /// small: at most 20 minutes on a 2-core machine without a GPU; full: sized for a real GPU; mini: the
    /// pipeline end to end in a few minutes (the tests' check, not the science).
    #[arg(long, default_value = "small", value_parser = ["small", "full", "mini"])]
    profile: String,
    #[arg(long, default_value = "runs/llm-study")]
    out: PathBuf,
    /// The dpo3d binary (default: the one built next to this example).
    #[arg(long)]
    dpo3d: Option<PathBuf>,
    /// Train nothing; rebuild report.md and the figures from DIR.
    #[arg(long)]
    report_only: bool,
}

/// Everything a profile fixes. Written to DIR/profile.json; the report quotes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    pub seed: u64,
    /// SFT problems (with reference solutions) and held-out problems for evaluation.
    pub train_rows: usize,
    pub eval_rows: usize,
    /// Training problems sampled for pairs, and held-out problems sampled for held-out pairs.
    pub pair_problems: usize,
    pub heldout_pair_problems: usize,
    pub samples_per_problem: usize,
    pub vocab_size: usize,
    pub layers: usize,
    pub width: usize,
    pub heads: usize,
    pub max_length: usize,
    pub max_new_tokens: usize,
    pub sft_steps: usize,
    pub sft_lr: f64,
    pub sft_batch: usize,
    /// The weaker "other model": the SFT checkpoint at this step.
    pub weak_step: usize,
    pub pref_epochs: f64,
    pub pref_batch: usize,
    pub pref_lr: f64,
    pub beta: f64,
    pub eval_steps: usize,
    pub flex_beta_neg: Vec<f64>,
    /// Seeds of the four DPO scenario runs (the effect the paper's Table 3 measures is small).
    pub scenario_seeds: u64,
    pub ppo_steps: usize,
    pub ppo_batch: usize,
    pub ppo_lr: f64,
    pub gen_batch: usize,
}

impl Profile {
    fn new(name: &str) -> Profile {
        let small = Profile {
            name: name.into(),
            seed: 1,
            train_rows: 4000,
            eval_rows: 100,
            pair_problems: 256,
            heldout_pair_problems: 64,
            samples_per_problem: 8,
            vocab_size: 512,
            layers: 2,
            width: 64,
            heads: 4,
            max_length: 96,
            max_new_tokens: 24,
            sft_steps: 1000,
            sft_lr: 3e-3,
            sft_batch: 16,
            weak_step: 250,
            pref_epochs: 2.0,
            pref_batch: 8,
            pref_lr: 5e-5,
            beta: 0.1,
            eval_steps: 8,
            flex_beta_neg: vec![0.01, 0.05, 0.08, 0.10, 0.15],
            scenario_seeds: 2,
            ppo_steps: 40,
            ppo_batch: 16,
            ppo_lr: 5e-5,
            gen_batch: 64,
        };
        match name {
            "mini" => Profile {
                train_rows: 2000,
                eval_rows: 16,
                pair_problems: 16,
                heldout_pair_problems: 8,
                samples_per_problem: 4,
                vocab_size: 400,
                layers: 1,
                width: 48,
                heads: 2,
                sft_steps: 400,
                sft_lr: 5e-3,
                weak_step: 100,
                pref_epochs: 1.0,
                pref_batch: 4,
                eval_steps: 2,
                flex_beta_neg: vec![0.05],
                scenario_seeds: 1,
                ppo_steps: 2,
                ppo_batch: 4,
                gen_batch: 32,
                ..small
            },
            "full" => Profile {
                train_rows: 20000,
                eval_rows: 500,
                pair_problems: 2000,
                heldout_pair_problems: 200,
                layers: 4,
                width: 128,
                heads: 4,
                sft_steps: 6000,
                weak_step: 1000,
                pref_epochs: 1.0,
                pref_batch: 16,
                eval_steps: 10,
                scenario_seeds: 3,
                ppo_steps: 300,
                ppo_batch: 32,
                gen_batch: 256,
                ..small
            },
            _ => small,
        }
    }
}

/// Runs `dpo3d` subcommands, logging each one's stderr to DIR/logs/<name>.log and timing it.
struct Runner {
    bin: PathBuf,
    out: PathBuf,
    /// Wall seconds per phase (kept from earlier runs of a resumed study).
    times: BTreeMap<String, f64>,
}

impl Runner {
    /// Run `dpo3d args...` unless `done` (its output) exists; returns its stdout. Exits the study on failure with the
    /// log's tail.
    fn run(&mut self, name: &str, done: Option<&Path>, args: &[String]) -> String {
        if let Some(done) = done.filter(|d| d.exists()) {
            eprintln!("[llm-study] {name}: done already ({})", done.display());
            return std::fs::read_to_string(self.out.join("logs").join(format!("{name}.stdout"))).unwrap_or_default();
        }
        eprintln!("[llm-study] {name}: dpo3d {}", args.join(" "));
        let started = Instant::now();
        let logs = self.out.join("logs");
        std::fs::create_dir_all(&logs).expect("logs directory");
        let output = Command::new(&self.bin).args(args).output().unwrap_or_else(|e| {
            eprintln!("[llm-study] cannot run {}: {e}", self.bin.display());
            std::process::exit(1)
        });
        let log = logs.join(format!("{name}.log"));
        std::fs::write(&log, &output.stderr).expect("log");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            let err = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = err.lines().rev().take(8).collect();
            eprintln!("[llm-study] {name} failed ({}); log {}:", output.status, log.display());
            for l in tail.iter().rev() {
                eprintln!("  {l}");
            }
            std::process::exit(1);
        }
        std::fs::write(logs.join(format!("{name}.stdout")), &stdout).expect("stdout log");
        let secs = started.elapsed().as_secs_f64();
        *self.times.entry(phase_of(name).into()).or_default() += secs;
        self.save_times();
        eprintln!("[llm-study] {name}: {secs:.1} s");
        stdout
    }

    fn save_times(&self) {
        let v = serde_json::to_string_pretty(&self.times).expect("times");
        dpo3d::checkpoint::write_atomic(&self.out.join("phases.json"), v.as_bytes()).expect("phases.json");
    }
}

/// The phase a command belongs to (the report's "how it ran" table).
fn phase_of(name: &str) -> &'static str {
    match name.split(['-', '_']).next().unwrap_or("") {
        "data" | "tokenizer" => "data and tokenizer",
        "sft" => "SFT",
        "sample" | "judge" | "pairs" => "sampling, judging, pairing",
        "train" => "preference training (DPO family, RM)",
        "ppo" => "PPO",
        _ => "evaluation",
    }
}

fn s(x: impl ToString) -> String {
    x.to_string()
}

/// The first `n` rows of a JSONL file into another.
fn head_rows(from: &Path, to: &Path, n: usize) {
    if to.exists() {
        return;
    }
    let text = std::fs::read_to_string(from).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    let rows: String = text.lines().take(n).map(|l| format!("{l}\n")).collect();
    dpo3d::checkpoint::write_atomic(to, rows.as_bytes()).expect("write rows");
}

/// One preference-trained model of the study.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSpec {
    /// Directory name under DIR/models.
    pub name: String,
    /// What the report calls it ("DPO", "Flex-DPO beta_neg 0.08", ...).
    pub method: String,
    /// on_on, on_off, off_on, off_off
    pub scenario: String,
    pub seed: u64,
    /// Extra `dpo3d dpo` flags.
    pub flags: Vec<String>,
}

fn runs(p: &Profile) -> Vec<RunSpec> {
    let mut v = Vec::new();
    let run = |name: String, method: &str, scenario: &str, seed: u64, flags: &[&str]| RunSpec {
        name,
        method: method.into(),
        scenario: scenario.into(),
        seed,
        flags: flags.iter().map(|f| f.to_string()).collect(),
    };
    for seed in 0..p.scenario_seeds {
        for sc in ["on_on", "on_off", "off_on", "off_off"] {
            v.push(run(format!("dpo-{sc}-s{seed}"), "DPO", sc, seed, &["--loss-type", "sigmoid"]));
        }
    }
    for bn in &p.flex_beta_neg {
        let b = format!("{bn}");
        v.push(run(
            format!("flex-{b}"),
            &format!("Flex-DPO beta_neg {b}"),
            "on_on",
            0,
            &["--loss-type", "flex-dpo", "--beta-neg", &b],
        ));
    }
    v.push(run("sft-dpo".into(), "SFT-DPO", "on_on", 0, &["--loss-type", "sft-dpo", "--gamma-sft", "1.0"]));
    v.push(run("ipo".into(), "IPO", "on_on", 0, &["--loss-type", "ipo"]));
    v.push(run("slic".into(), "SLiC", "on_on", 0, &["--loss-type", "slic", "--slic-delta", "5", "--slic-eta", "0.1"]));
    v
}

fn main() {
    let args = Args::parse();
    let p = Profile::new(&args.profile);
    let out = args.out.clone();
    std::fs::create_dir_all(&out).expect("output directory");
    if args.report_only {
        report::write(&out).unwrap_or_else(|e| panic!("report: {e}"));
        return;
    }
    let bin = args.dpo3d.clone().unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("current exe");
        exe.parent().and_then(Path::parent).map(|d| d.join("dpo3d")).expect("target directory")
    });
    if !bin.is_file() {
        eprintln!("[llm-study] no dpo3d binary at {} (build it: cargo build --release --bins)", bin.display());
        std::process::exit(1);
    }
    let started = Instant::now();
    let times = std::fs::read_to_string(out.join("phases.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let mut r = Runner { bin, out: out.clone(), times };
    let o = |rel: &str| out.join(rel);
    let os = |rel: &str| o(rel).display().to_string();
    std::fs::write(o("profile.json"), serde_json::to_string_pretty(&p).expect("profile")).expect("profile.json");

    // 1. Data and tokenizer.
    r.run(
        "data",
        Some(&o("data/eval.jsonl")),
        &[
            s("task-data"),
            s("--task"),
            s("math"),
            s("--output-dir"),
            os("data"),
            s("--rows"),
            s(p.train_rows),
            s("--eval-rows"),
            s(p.eval_rows),
            s("--seed"),
            s(p.seed),
        ],
    );
    r.run(
        "tokenizer",
        Some(&o("tok/tokenizer.json")),
        &[
            s("tokenizer"),
            s("--data"),
            os("data/sft.jsonl"),
            s("--vocab-size"),
            s(p.vocab_size),
            s("--output-dir"),
            os("tok"),
        ],
    );
    head_rows(&o("data/sft.jsonl"), &o("data/pair_problems.jsonl"), p.pair_problems);
    head_rows(&o("data/eval.jsonl"), &o("data/heldout_pair_problems.jsonl"), p.heldout_pair_problems);

    // 2. SFT from scratch; the checkpoint at weak_step is the weaker "other model".
    r.run(
        "sft",
        Some(&o("models/sft/model.safetensors")),
        &[
            s("sft"),
            s("--data"),
            os("data/sft.jsonl"),
            s("--eval-data"),
            os("data/eval.jsonl"),
            s("--tokenizer"),
            os("tok/tokenizer.json"),
            s("--layers"),
            s(p.layers),
            s("--width"),
            s(p.width),
            s("--heads"),
            s(p.heads),
            s("--max-length"),
            s(p.max_length),
            s("--per-device-train-batch-size"),
            s(p.sft_batch),
            s("--learning-rate"),
            s(p.sft_lr),
            s("--lr-scheduler-type"),
            s("cosine"),
            s("--warmup-steps"),
            s(p.sft_steps / 50),
            s("--max-steps"),
            s(p.sft_steps),
            s("--save-steps"),
            s(p.weak_step),
            s("--eval-steps"),
            s(p.weak_step),
            s("--logging-steps"),
            s((p.sft_steps / 50).max(1)),
            s("--seed"),
            s(p.seed),
            s("--output-dir"),
            os("models/sft"),
            s("--overwrite-output-dir"),
        ],
    );
    let weak = format!("models/sft/checkpoint-{}", p.weak_step);

    // 3. Samples: 8 per problem from the SFT model (on-policy), 1 from the weak model (off-policy); judged; paired.
    let gen = |model: &str, data: &str, n: usize, temperature: f64, seed: u64, output: &str| -> Vec<String> {
        vec![
            s("generate"),
            s("--model"),
            os(model),
            s("--data"),
            os(data),
            s("--num-samples"),
            s(n),
            s("--temperature"),
            s(temperature),
            s("--max-new-tokens"),
            s(p.max_new_tokens),
            s("--batch-size"),
            s(p.gen_batch),
            s("--seed"),
            s(seed),
            s("--output"),
            os(output),
        ]
    };
    let judge = |data: &str, output: &str| -> Vec<String> {
        vec![s("judge"), s("--task"), s("math"), s("--data"), os(data), s("--output"), os(output)]
    };
    for split in ["train", "heldout"] {
        let problems = if split == "train" { "data/pair_problems.jsonl" } else { "data/heldout_pair_problems.jsonl" };
        let own = format!("samples/{split}_sft.jsonl");
        let other = format!("samples/{split}_weak.jsonl");
        r.run(
            &format!("sample-{split}-sft"),
            Some(&o(&own)),
            &gen("models/sft", problems, p.samples_per_problem, 1.0, 11, &own),
        );
        r.run(&format!("sample-{split}-weak"), Some(&o(&other)), &gen(&weak, problems, 1, 1.0, 12, &other));
        let (own_j, other_j) =
            (format!("samples/{split}_sft_judged.jsonl"), format!("samples/{split}_weak_judged.jsonl"));
        r.run(&format!("judge-{split}-sft"), Some(&o(&own_j)), &judge(&own, &own_j));
        r.run(&format!("judge-{split}-weak"), Some(&o(&other_j)), &judge(&other, &other_j));
        r.run(
            &format!("pairs-{split}"),
            Some(&o(&format!("pairs/{split}/off_off.jsonl"))),
            &[
                s("pairs"),
                s("--samples"),
                os(&own_j),
                s("--other"),
                os(&other_j),
                s("--output-dir"),
                os(&format!("pairs/{split}")),
            ],
        );
    }

    // 4. Preference training from the SFT model: the DPO family, then the reward model and PPO.
    let pref_common = |data: &str, eval: &str, out_dir: &str, seed: u64| -> Vec<String> {
        vec![
            s("--model"),
            os("models/sft"),
            s("--data"),
            os(data),
            s("--eval-data"),
            os(eval),
            s("--per-device-train-batch-size"),
            s(p.pref_batch),
            s("--per-device-eval-batch-size"),
            s(p.pref_batch),
            s("--learning-rate"),
            s(p.pref_lr),
            s("--num-train-epochs"),
            s(p.pref_epochs),
            s("--lr-scheduler-type"),
            s("constant"),
            s("--eval-steps"),
            s(p.eval_steps),
            s("--logging-steps"),
            s(1),
            s("--seed"),
            s(seed),
            s("--max-length"),
            s(p.max_length + p.max_new_tokens),
            s("--output-dir"),
            os(out_dir),
            s("--overwrite-output-dir"),
        ]
    };
    let specs = runs(&p);
    for spec in &specs {
        let dir = format!("models/{}", spec.name);
        let mut a = vec![s("dpo"), s("--beta"), s(p.beta)];
        a.extend(spec.flags.iter().cloned());
        a.extend(pref_common(
            &format!("pairs/train/{}.jsonl", spec.scenario),
            "pairs/heldout/on_on.jsonl",
            &dir,
            spec.seed,
        ));
        r.run(&format!("train-{}", spec.name), Some(&o(&format!("{dir}/model.safetensors"))), &a);
    }
    let mut a = vec![s("reward")];
    a.extend(pref_common("pairs/train/on_on.jsonl", "pairs/heldout/on_on.jsonl", "models/rm", 0));
    r.run("train-rm", Some(&o("models/rm/model.safetensors")), &a);
    r.run(
        "ppo",
        Some(&o("models/ppo/model.safetensors")),
        &[
            s("ppo"),
            s("--model"),
            os("models/sft"),
            s("--reward-model"),
            os("models/rm"),
            s("--data"),
            os("data/pair_problems.jsonl"),
            s("--per-device-train-batch-size"),
            s(p.ppo_batch),
            s("--learning-rate"),
            s(p.ppo_lr),
            s("--max-steps"),
            s(p.ppo_steps),
            s("--response-length"),
            s(p.max_new_tokens),
            s("--kl-coef"),
            s(0.05),
            s("--logging-steps"),
            s(1),
            s("--seed"),
            s(0),
            s("--output-dir"),
            os("models/ppo"),
            s("--overwrite-output-dir"),
        ],
    );

    // 5. Evaluation of every model: greedy answers to the held-out problems (judged), one sample each at
    //    temperature 1 (judged; its per-token log-prob estimates the entropy), and the log-probs of the training and
    //    held-out pairs (against the SFT model as reference).
    let mut models: Vec<(String, String, String)> = vec![
        ("sft".into(), "SFT".into(), "-".into()),
        ("weak".into(), format!("SFT step {}", p.weak_step), "-".into()),
    ];
    models.extend(specs.iter().map(|x| (x.name.clone(), x.method.clone(), x.scenario.clone())));
    models.push(("ppo".into(), "RM + PPO".into(), "on_on".into()));
    let mut results = Vec::new();
    for (name, method, scenario) in &models {
        let dir = if name == "weak" { weak.clone() } else { format!("models/{name}") };
        let mut row = Map::new();
        row.insert("name".into(), json!(name));
        row.insert("method".into(), json!(method));
        row.insert("scenario".into(), json!(scenario));
        for (kind, temp) in [("greedy", 0.0), ("sample", 1.0)] {
            let f = format!("eval/{name}_{kind}.jsonl");
            r.run(
                &format!("eval-generate-{name}-{kind}"),
                Some(&o(&f)),
                &gen(&dir, "data/eval.jsonl", 1, temp, 13, &f),
            );
            let judged =
                r.run(&format!("eval-judge-{name}-{kind}"), None, &judge(&f, &f.replace(".jsonl", "_judged.jsonl")));
            row.insert(kind.into(), serde_json::from_str(judged.trim()).unwrap_or(Value::Null));
            if kind == "sample" {
                row.insert("entropy_per_token".into(), json!(sample_entropy(&o(&f))));
            }
        }
        for (split, file) in [
            ("train_pairs", "pairs/train/on_on.jsonl"),
            ("heldout_pairs", "pairs/heldout/on_on.jsonl"),
            ("heldout_reference", "pairs/heldout/off_off.jsonl"),
        ] {
            let m = r.run(
                &format!("eval-logps-{name}-{split}"),
                None,
                &[
                    s("eval"),
                    s("--model"),
                    os(&dir),
                    s("--ref-model"),
                    os("models/sft"),
                    s("--data"),
                    os(file),
                    s("--beta"),
                    s(p.beta),
                    s("--batch-size"),
                    s(p.pref_batch),
                ],
            );
            row.insert(split.into(), serde_json::from_str(m.trim()).unwrap_or(Value::Null));
        }
        results.push(Value::Object(row));
    }
    let pairs_counts: Map<String, Value> = ["train", "heldout"]
        .iter()
        .map(|sp| {
            let t = std::fs::read_to_string(o(&format!("logs/pairs-{sp}.stdout"))).unwrap_or_default();
            (sp.to_string(), serde_json::from_str(t.trim()).unwrap_or(Value::Null))
        })
        .collect();
    let info = json!({
        "profile": p,
        "runs": specs,
        "models": results,
        "pairs": pairs_counts,
        "adapter": adapter_line(&o("logs/sft.log")),
        "wall_seconds": started.elapsed().as_secs_f64(),
        "cpu": cpu_line(),
    });
    dpo3d::checkpoint::write_atomic(&o("results.json"), serde_json::to_string_pretty(&info).expect("json").as_bytes())
        .expect("results.json");
    report::collect_metrics(&out, &specs).unwrap_or_else(|e| panic!("metrics.jsonl: {e}"));
    report::write(&out).unwrap_or_else(|e| panic!("report: {e}"));
    eprintln!(
        "[llm-study] done in {:.1} min: {}",
        started.elapsed().as_secs_f64() / 60.0,
        out.join("report.md").display()
    );
}

/// Mean over samples of -log p(sample) per token: an estimate of the model's per-token entropy on these prompts.
fn sample_entropy(path: &Path) -> f64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (mut nll, mut tokens) = (0.0, 0.0);
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        for (lp, n) in v["logps"].as_array().into_iter().flatten().zip(v["num_tokens"].as_array().into_iter().flatten())
        {
            nll -= lp.as_f64().unwrap_or(0.0);
            tokens += n.as_f64().unwrap_or(0.0);
        }
    }
    if tokens > 0.0 {
        nll / tokens
    } else {
        f64::NAN
    }
}

/// The adapter line a dpo3d command printed ("adapter: llvmpipe (...) (Vulkan)").
fn adapter_line(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix("adapter: ")).unwrap_or("unknown").to_string()
}

/// The CPU model and core count, from /proc/cpuinfo where there is one.
fn cpu_line() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']));
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{}, {cores} cores", model.unwrap_or("unknown CPU"))
}
