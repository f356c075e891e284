//! A short DPO run (or any loss of the DPO family) on a tiny byte-level GPT over dpo3d's generated toy preference
//! pairs (a correct answer against the same sentence with a wrong one), entirely on the GPU.
//!
//!     cargo run --release --example dpo -- --loss-type dpo --beta 0.1 --out runs/dpo
//!     cargo run --release --example dpo -- --init runs/sft --config '{"loss_type": "flex-dpo", "beta_pos": 0.1, "beta_neg": 0.02}'
//!
//! pi0 is either a checkpoint (`--init`, e.g. from `examples/sft.rs`) or a brief SFT on the chosen responses run
//! here (saved to `OUT/pi0`). The policy starts at pi0; a frozen copy of pi0 is the reference, run every step
//! (`ReferenceMode::EveryStep`, since the batches change). The loss is a `PreferenceLoss` built from
//! `--loss-type` and its parameters, or read from `--config` (a JSON file or an inline JSON object).
//!
//! Every `--log-every` steps it prints TRL's metrics (loss, rewards/chosen, rewards/rejected, rewards/margins,
//! rewards/accuracies, logps/chosen, logps/rejected, grad/log10_chosen, grad/log10_rejected); `OUT/metrics.jsonl`
//! has them for every step, with the gradient norm. Held-out pairs are evaluated at the start and the end, and the
//! final policy is saved to `OUT` (and every `--save-every` steps). A non-finite value stops the run and names the
//! step.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use dpo3d::checkpoint::{load_gpt, save_gpt, write_atomic};
use dpo3d::data::{collate_preferences, collate_sft, toy_preferences, Batcher, LastBatch, PreferencePair, SftExample};
use dpo3d::model::init::gpt_params;
use dpo3d::model::{Gpt, GptConfig};
use dpo3d::objectives::{PreferenceLoss, PreferenceMetrics};
use dpo3d::train::sft::SftTrainer;
use dpo3d::train::{OptimConfig, PreferenceTrainer, ReferenceMode};
use dpo3d::{Error, Gpu, Result};
use serde_json::{Map, Value};

/// Pad id for the byte-level batches (masked out, so any in-vocabulary id works).
const PAD: u32 = 0;

/// The TRL metrics printed every `--log-every` steps (all of `PreferenceMetrics` go to metrics.jsonl).
const SHOWN: [(&str, &str); 9] = [
    ("loss", "loss"),
    ("rewards/chosen", "r/chosen"),
    ("rewards/rejected", "r/rejected"),
    ("rewards/margins", "r/margins"),
    ("rewards/accuracies", "r/acc"),
    ("logps/chosen", "logps/ch"),
    ("logps/rejected", "logps/rej"),
    ("grad/log10_chosen", "g/log10+"),
    ("grad/log10_rejected", "g/log10-"),
];

#[derive(Parser, Debug, serde::Serialize)]
#[command(
    about = "DPO (or another preference loss) on a tiny byte-level GPT over dpo3d's toy preference pairs, on the GPU"
)]
struct Args {
    /// Output directory: final policy checkpoint, metrics.jsonl, summary.json (and pi0/ when SFT runs here).
    #[arg(long, default_value = "runs/dpo")]
    out: PathBuf,
    /// Start from this GPT checkpoint (byte-level, V = 256) instead of running a brief SFT first.
    #[arg(long)]
    init: Option<PathBuf>,
    /// SFT steps on the chosen responses to get pi0 (ignored with --init).
    #[arg(long, default_value_t = 200)]
    sft_steps: usize,
    /// SFT learning rate.
    #[arg(long, default_value_t = 3e-3)]
    sft_lr: f32,
    /// Preference optimizer steps.
    #[arg(long, default_value_t = 60)]
    steps: usize,
    /// Pairs per batch (N): the policy sees 2N sequences, chosen then rejected.
    #[arg(long, default_value_t = 4)]
    pairs: usize,
    /// AdamW learning rate of the preference phase (constant).
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    /// Seed of the initial weights, the pairs and the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Training pairs generated; the batches cycle through them in a shuffled order.
    #[arg(long, default_value_t = 1024)]
    train_pairs: usize,
    /// Held-out pairs (another seed) evaluated at the start and the end.
    #[arg(long, default_value_t = 64)]
    eval_pairs: usize,
    /// Print metrics every this many steps.
    #[arg(long, default_value_t = 5)]
    log_every: usize,
    /// Save the policy every this many steps (and at the end).
    #[arg(long, default_value_t = 50)]
    save_every: usize,

    /// Preference loss: dpo, flex-dpo, sft-dpo, ipo, slic, hinge, cdpo, robust, dpop, simpo (default dpo).
    #[arg(long, conflicts_with = "config")]
    loss_type: Option<String>,
    /// beta (dpo, sft-dpo, hinge, cdpo, robust, dpop: default 0.1; simpo: required).
    #[arg(long, conflicts_with = "config")]
    beta: Option<f32>,
    /// beta on the chosen log-ratio (flex-dpo).
    #[arg(long, conflicts_with = "config")]
    beta_pos: Option<f32>,
    /// beta on the rejected log-ratio (flex-dpo).
    #[arg(long, conflicts_with = "config")]
    beta_neg: Option<f32>,
    /// Weight of the chosen NLL (sft-dpo).
    #[arg(long, conflicts_with = "config")]
    gamma: Option<f32>,
    /// eta (ipo, slic).
    #[arg(long, conflicts_with = "config")]
    eta: Option<f32>,
    /// Margin delta (slic).
    #[arg(long, conflicts_with = "config")]
    delta: Option<f32>,
    /// Label noise epsilon (cdpo, robust).
    #[arg(long, conflicts_with = "config")]
    label_smoothing: Option<f32>,
    /// lambda (dpop).
    #[arg(long, conflicts_with = "config")]
    lambda: Option<f32>,
    /// Target reward margin (simpo).
    #[arg(long, conflicts_with = "config")]
    margin: Option<f32>,
    /// The loss as JSON (a file, or an inline object), e.g. '{"loss_type": "ipo", "eta": 0.1}'.
    #[arg(long)]
    config: Option<String>,

    /// Transformer blocks (L), without --init.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Channels (C), without --init.
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// Attention heads (NH), without --init.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Context (maximum T), without --init.
    #[arg(long, default_value_t = 64)]
    context: usize,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<()> {
    if args.steps == 0
        || args.pairs == 0
        || args.log_every == 0
        || args.save_every == 0
        || args.train_pairs == 0
        || args.eval_pairs == 0
    {
        return Err(Error::config(
            "--steps, --pairs, --log-every, --save-every, --train-pairs and --eval-pairs must be positive",
        ));
    }
    let loss = loss_from_args(args)?;
    let gpu = Gpu::new_blocking()?;
    eprintln!("adapter: {} ({}, {}, {})", gpu.info.name, gpu.info.backend, gpu.info.device_type, gpu.info.driver);
    train(&gpu, args, &loss)
}

/// The `PreferenceLoss` from `--config`, or from `--loss-type` and the parameter flags given. A flag the chosen
/// loss does not read is an error rather than silently ignored.
fn loss_from_args(args: &Args) -> Result<PreferenceLoss> {
    let loss: PreferenceLoss = if let Some(c) = &args.config {
        let text = if c.trim_start().starts_with('{') {
            c.clone()
        } else {
            std::fs::read_to_string(c).map_err(|e| Error::io(c, e))?
        };
        serde_json::from_str(&text).map_err(|e| Error::config(format!("--config is not a preference loss: {e}")))?
    } else {
        let loss_type = args.loss_type.clone().unwrap_or_else(|| "dpo".into());
        let given: Vec<(&str, f32)> = [
            ("beta", args.beta),
            ("beta_pos", args.beta_pos),
            ("beta_neg", args.beta_neg),
            ("gamma", args.gamma),
            ("eta", args.eta),
            ("delta", args.delta),
            ("label_smoothing", args.label_smoothing),
            ("lambda", args.lambda),
            ("margin", args.margin),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
        let mut obj = Map::new();
        obj.insert("loss_type".into(), Value::from(loss_type.clone()));
        for (k, v) in &given {
            obj.insert((*k).into(), Value::from(*v));
        }
        let loss: PreferenceLoss = serde_json::from_value(Value::Object(obj))
            // serde names fields (`beta_pos`); the command line spells them --beta-pos.
            .map_err(|e| Error::config(format!("--loss-type {loss_type}: {}", e.to_string().replace('_', "-"))))?;
        let used = serde_json::to_value(&loss).expect("loss serializes");
        if let Some((k, _)) = given.iter().find(|(k, _)| used.get(*k).is_none()) {
            return Err(Error::config(format!("--{} does not apply to --loss-type {loss_type}", k.replace('_', "-"))));
        }
        loss
    };
    loss.validate()?;
    Ok(loss)
}

/// pi0: a brief SFT on the chosen responses from GPT-2 initialisation.
fn sft_pi0(gpu: &Gpu, args: &Args, cfg: &GptConfig, pairs: &[PreferencePair], t: usize) -> Result<Vec<f32>> {
    let chosen: Vec<SftExample> =
        pairs.iter().map(|p| SftExample { prompt: p.prompt.clone(), completion: p.chosen.clone() }).collect();
    let b = 2 * args.pairs;
    let opt = OptimConfig { lr: args.sft_lr, ..Default::default() };
    let mut trainer = SftTrainer::new(gpu, cfg, &gpt_params(cfg, args.seed)?, b, t, &opt)?;
    let mut batches = Batcher::new(chosen.len(), b, args.seed ^ 0x5F7, true, LastBatch::TopUp)?;
    let started = Instant::now();
    let mut first = f32::NAN;
    for step in 1..=args.sft_steps {
        let m = pollster::block_on(trainer.step(gpu, &collate_sft(&batches.next_rows(&chosen), t, PAD)?))?;
        if step == 1 {
            first = m.loss;
        }
        if step % 50 == 0 || step == args.sft_steps {
            eprintln!(
                "sft step {step:>4}  loss {:.4} (first {first:.4})  {:.1} s",
                m.loss,
                started.elapsed().as_secs_f64()
            );
        }
    }
    pollster::block_on(trainer.gpt.download_params(gpu))
}

/// Mean metrics of the trainer over `pairs` (in batches of N, the last topped up from the start), no update.
fn evaluate(
    gpu: &Gpu,
    tr: &PreferenceTrainer<Gpt>,
    pairs: &[PreferencePair],
    n: usize,
    t: usize,
) -> Result<PreferenceMetrics> {
    let mut sum: Vec<(String, f32)> = Vec::new();
    let mut batches = 0f32;
    for start in (0..pairs.len()).step_by(n) {
        let chunk: Vec<PreferencePair> = (0..n).map(|i| pairs[(start + i) % pairs.len()].clone()).collect();
        upload(gpu, tr, &chunk, t)?;
        let m = pollster::block_on(tr.evaluate(gpu))?;
        if sum.is_empty() {
            sum = m.values.iter().map(|(k, _)| (k.clone(), 0.0)).collect();
        }
        for ((_, s), (_, v)) in sum.iter_mut().zip(&m.values) {
            *s += v;
        }
        batches += 1.0;
    }
    Ok(PreferenceMetrics { values: sum.into_iter().map(|(k, s)| (k, s / batches)).collect() })
}

/// One batch of pairs to the policy, the reference and the objective's mask.
fn upload(gpu: &Gpu, tr: &PreferenceTrainer<Gpt>, pairs: &[PreferencePair], t: usize) -> Result<()> {
    tr.set_batch(gpu, &collate_preferences(pairs, t, PAD)?)
}

fn metrics_json(step: usize, m: &PreferenceMetrics, grad_norm: Option<f32>) -> Value {
    let mut obj = Map::new();
    obj.insert("step".into(), Value::from(step));
    for (k, v) in &m.values {
        obj.insert(k.clone(), Value::from(*v));
    }
    if let Some(g) = grad_norm {
        obj.insert("grad_norm".into(), Value::from(g));
    }
    Value::Object(obj)
}

fn print_header() {
    let cols: Vec<String> = SHOWN.iter().map(|(_, short)| format!("{short:>10}")).collect();
    println!("{:>6} {} {:>8}", "step", cols.join(" "), "|grad|");
}

fn print_row(label: &str, m: &PreferenceMetrics, grad_norm: Option<f32>) {
    let cols: Vec<String> = SHOWN.iter().map(|(k, _)| format!("{:>10.4}", m.get(k))).collect();
    let g = grad_norm.map(|g| format!("{g:>8.4}")).unwrap_or_else(|| format!("{:>8}", "-"));
    println!("{label:>6} {} {g}", cols.join(" "));
}

fn save(gpu: &Gpu, tr: &PreferenceTrainer<Gpt>, out: &Path) -> Result<()> {
    let params = pollster::block_on(tr.policy.download_params(gpu))?;
    save_gpt(out, &tr.policy.cfg, &params)
}

fn train(gpu: &Gpu, args: &Args, loss: &PreferenceLoss) -> Result<()> {
    let train_pairs = toy_preferences(args.train_pairs, args.seed);
    let eval_pairs = toy_preferences(args.eval_pairs, args.seed.wrapping_add(0x5EED));
    let t = train_pairs.iter().chain(&eval_pairs).map(PreferencePair::max_len).max().unwrap_or(1);
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;

    let (cfg, pi0) = match &args.init {
        Some(dir) => {
            let (cfg, params) = load_gpt(dir)?;
            if cfg.vocab_size != dpo3d::data::ByteTokenizer::VOCAB_SIZE || cfg.scalar_head {
                return Err(Error::config(format!(
                    "{}: the toy pairs are bytes; need a V = 256 language model, got {cfg:?}",
                    dir.display()
                )));
            }
            eprintln!("pi0 from {}", dir.display());
            (cfg, params)
        }
        None => {
            let cfg = GptConfig {
                vocab_size: dpo3d::data::ByteTokenizer::VOCAB_SIZE,
                context: args.context,
                layers: args.layers,
                heads: args.heads,
                width: args.width,
                scalar_head: false,
            };
            cfg.validate()?;
            if t > cfg.context {
                return Err(Error::config(format!(
                    "the longest toy pair is {t} tokens; --context must be at least that"
                )));
            }
            eprintln!("pi0: {} SFT steps on the chosen responses", args.sft_steps);
            let pi0 = sft_pi0(gpu, args, &cfg, &train_pairs, t)?;
            save_gpt(&args.out.join("pi0"), &cfg, &pi0)?;
            (cfg, pi0)
        }
    };
    if t > cfg.context {
        return Err(Error::config(format!(
            "the longest toy pair is {t} tokens but the model's context is {}",
            cfg.context
        )));
    }

    let n = args.pairs;
    let policy = Gpt::new(gpu, &cfg, 2 * n, t, &pi0)?;
    let reference = if loss.uses_reference() { Some(Gpt::new(gpu, &cfg, 2 * n, t, &pi0)?) } else { None };
    let opt = OptimConfig { lr: args.lr, ..Default::default() };
    let mut tr = PreferenceTrainer::new(gpu, policy, reference, loss, &opt, ReferenceMode::EveryStep)?;
    eprintln!(
        "{} ({}) on GPT L={} C={} NH={}: batches of {n} pairs (2N={} rows, T={t}), {} dispatches per step",
        loss.name(),
        serde_json::to_string(loss).expect("loss serializes"),
        cfg.layers,
        cfg.width,
        cfg.heads,
        2 * n,
        tr.dispatches_per_step()
    );

    let metrics_path = args.out.join("metrics.jsonl");
    let mut metrics =
        std::io::LineWriter::new(std::fs::File::create(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?);
    let eval_before = evaluate(gpu, &tr, &eval_pairs, n, t)?;
    let mut batches = Batcher::new(train_pairs.len(), n, args.seed ^ 0xD90, true, LastBatch::TopUp)?;
    print_header();
    print_row("eval", &eval_before, None);
    let started = Instant::now();
    let mut last_saved = 0;
    for step in 1..=args.steps {
        upload(gpu, &tr, &batches.next_rows(&train_pairs), t)?;
        let (m, grad_norm) = match pollster::block_on(tr.step(gpu)) {
            Ok(x) => x,
            Err(Error::NonFinite(what)) => {
                let kept = if last_saved > 0 {
                    format!("the policy in {} is from step {last_saved}", args.out.display())
                } else {
                    "no policy checkpoint was saved".into()
                };
                return Err(Error::NonFinite(format!("{what}; stopped at step {step}, {kept}")));
            }
            Err(e) => return Err(e),
        };
        writeln!(metrics, "{}", metrics_json(step, &m, Some(grad_norm))).map_err(|e| Error::io(&metrics_path, e))?;
        if step % args.log_every == 0 || step == 1 || step == args.steps {
            print_row(&step.to_string(), &m, Some(grad_norm));
        }
        if step % args.save_every == 0 || step == args.steps {
            save(gpu, &tr, &args.out)?;
            last_saved = step;
        }
    }
    let train_s = started.elapsed().as_secs_f64();
    let eval_after = evaluate(gpu, &tr, &eval_pairs, n, t)?;
    print_row("eval", &eval_after, None);
    eprintln!(
        "{} steps in {train_s:.1} s ({:.0} ms/step); held-out rewards/margins {:.4} -> {:.4}, rewards/accuracies {:.3} -> {:.3}",
        args.steps,
        1e3 * train_s / args.steps as f64,
        eval_before.get("rewards/margins"),
        eval_after.get("rewards/margins"),
        eval_before.get("rewards/accuracies"),
        eval_after.get("rewards/accuracies"),
    );
    let summary = serde_json::json!({
        "args": args,
        "loss": loss,
        "adapter": gpu.info,
        "config": cfg,
        "t": t,
        "dispatches_per_step": tr.dispatches_per_step(),
        "eval_before": metrics_json(0, &eval_before, None),
        "eval_after": metrics_json(args.steps, &eval_after, None),
        "train_seconds": train_s,
    });
    write_atomic(
        &args.out.join("summary.json"),
        serde_json::to_string_pretty(&summary).expect("summary serializes").as_bytes(),
    )?;
    eprintln!("policy checkpoint, metrics.jsonl and summary.json in {}", args.out.display());
    Ok(())
}
