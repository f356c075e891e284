//! Supervised fine-tuning of a tiny byte-level GPT on dpo3d's generated toy corpus (one-digit sums and six animal
//! facts; nothing is downloaded), entirely in WGSL on whatever GPU wgpu finds.
//!
//!     cargo run --release --example sft -- --steps 200 --out runs/sft
//!
//! What it writes to `--out`: a Hugging Face GPT-2 checkpoint (`model.safetensors`, `config.json`, via
//! `checkpoint::save_gpt`, every file atomic) saved every `--save-every` steps and at the end; `metrics.jsonl`, one
//! `{"step", "loss", "grad_norm"}` line per step, flushed line by line; `summary.json` with the arguments, the
//! initial and final held-out loss and the wall time. A non-finite loss stops the run and names the step; the
//! checkpoint on disk is then the last one saved before it.
//!
//! At the end it prints the greedy completions of a few held-out prompts (argmax on the GPU, `Gpt::greedy_completion`,
//! stopping at a newline). For the full next-token distributions, run `examples/logprobs.rs` on the checkpoint.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use dpo3d::checkpoint::{save_gpt, write_atomic};
use dpo3d::data::{collate_sft, toy_corpus, Batcher, ByteTokenizer, LastBatch, SftBatch, SftExample};
use dpo3d::model::init::gpt_params;
use dpo3d::model::{Gpt, GptConfig};
use dpo3d::train::sft::SftTrainer;
use dpo3d::train::OptimConfig;
use dpo3d::{Error, Gpu, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// Pad id for the byte-level batches (masked out, so any in-vocabulary id works).
const PAD: u32 = 0;

#[derive(Parser, Debug, serde::Serialize)]
#[command(
    about = "SFT a tiny byte-level GPT on dpo3d's generated toy corpus, on the GPU (wgpu + WGSL)",
    long_about = "SFT a tiny byte-level GPT (V = 256) on dpo3d's generated toy corpus, on the GPU (wgpu + WGSL).\n\n\
        Writes a GPT-2 checkpoint (model.safetensors, config.json), metrics.jsonl and summary.json to --out.\n\
        Measured on lavapipe (software Vulkan on 2 CPU cores shared with other jobs; debug build, dependencies \
        optimized): 0.43 s per step at load average 3.5 and 0.72 s at load average 9.7, so the default 200 steps \
        took 143 s of training (180 s in all) on the busier machine."
)]
struct Args {
    /// Output directory for the checkpoint, metrics.jsonl and summary.json.
    #[arg(long, default_value = "runs/sft")]
    out: PathBuf,
    /// Optimizer steps.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Sequences per batch (B).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// AdamW learning rate (constant).
    #[arg(long, default_value_t = 3e-3)]
    lr: f32,
    /// Seed of the initial weights, the corpus and the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Transformer blocks (L).
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Channels (C).
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// Attention heads (NH); must divide --width.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Maximum sequence length the model supports (its position table); batches use the longest example's length.
    #[arg(long, default_value_t = 64)]
    context: usize,
    /// Save the checkpoint every this many steps (and always at the end).
    #[arg(long, default_value_t = 50)]
    save_every: usize,
    /// Training examples generated (the batches cycle through them in a shuffled order).
    #[arg(long, default_value_t = 4096)]
    train_examples: usize,
    /// Held-out examples (a different seed) for the evaluation loss at the start and the end.
    #[arg(long, default_value_t = 256)]
    eval_examples: usize,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// Global gradient-norm clipping (0 disables).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f32,
    /// Held-out prompts whose greedy completion is printed at the end (0: none).
    #[arg(long, default_value_t = 4)]
    samples: usize,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Acquire the GPU and train.
fn run(args: &Args) -> Result<()> {
    if args.steps == 0 || args.batch == 0 || args.save_every == 0 || args.train_examples == 0 || args.eval_examples == 0
    {
        return Err(Error::config(
            "--steps, --batch, --save-every, --train-examples and --eval-examples must be positive",
        ));
    }
    let gpu = Gpu::new_blocking()?;
    eprintln!("adapter: {} ({}, {}, {})", gpu.info.name, gpu.info.backend, gpu.info.device_type, gpu.info.driver);
    train(&gpu, args)
}

/// The token-weighted mean SFT loss of `examples`, in batches of the trainer's shape (the last batch is topped up
/// with examples from the start, which are then counted twice: a negligible bias for an evaluation number).
fn eval_loss(gpu: &Gpu, trainer: &SftTrainer, examples: &[SftExample], b: usize, t: usize) -> Result<f32> {
    let (mut sum, mut count) = (0f64, 0f64);
    for start in (0..examples.len()).step_by(b) {
        let chunk: Vec<SftExample> = (0..b).map(|i| examples[(start + i) % examples.len()].clone()).collect();
        let batch = collate_sft(&chunk, t, PAD)?;
        let tokens: f64 = batch.mask.iter().map(|&m| m as f64).sum();
        sum += pollster::block_on(trainer.eval(gpu, &batch))? as f64 * tokens;
        count += tokens;
    }
    Ok((sum / count.max(1.0)) as f32)
}

/// Each prompt's greedy completion (until a newline) next to the corpus's answer.
fn print_samples(gpu: &Gpu, trainer: &SftTrainer, examples: &[SftExample], t: usize) -> Result<()> {
    if examples.is_empty() {
        return Ok(());
    }
    let params = pollster::block_on(trainer.gpt.download_params(gpu))?;
    let gpt = Gpt::new(gpu, &trainer.gpt.cfg, 1, t, &params)?; // B = 1, the trained T
    let text = |ids: &[u32]| ByteTokenizer.decode(ids).escape_debug().to_string();
    for ex in examples {
        let got = pollster::block_on(gpt.greedy_completion(gpu, &ex.prompt, Some(u32::from(b'\n'))))?;
        let mark = if got == ex.completion { "ok" } else { "  " };
        eprintln!("{mark} {:<26} -> {:<28} (corpus: {})", text(&ex.prompt), text(&got), text(&ex.completion));
    }
    Ok(())
}

fn save(gpu: &Gpu, trainer: &SftTrainer, out: &Path) -> Result<()> {
    let params = pollster::block_on(trainer.gpt.download_params(gpu))?;
    save_gpt(out, &trainer.gpt.cfg, &params)
}

fn train(gpu: &Gpu, args: &Args) -> Result<()> {
    let cfg = GptConfig {
        vocab_size: ByteTokenizer::VOCAB_SIZE,
        context: args.context,
        layers: args.layers,
        heads: args.heads,
        width: args.width,
        scalar_head: false,
    };
    cfg.validate()?;
    // The held-out draw uses another seed; the corpus has only 106 distinct prompts, so this measures how well the
    // model fits the toy distribution, not generalisation to unseen prompts.
    let train_set = toy_corpus(args.train_examples, args.seed);
    let eval_set = toy_corpus(args.eval_examples, args.seed.wrapping_add(0x5EED));
    let t = train_set.iter().chain(&eval_set).map(SftExample::len).max().unwrap_or(1);
    if t > args.context {
        return Err(Error::config(format!("the longest toy example is {t} tokens; --context must be at least that")));
    }
    let opt =
        OptimConfig { lr: args.lr, weight_decay: args.weight_decay, grad_clip: args.grad_clip, ..Default::default() };
    let params = gpt_params(&cfg, args.seed)?;
    let mut trainer = SftTrainer::new(gpu, &cfg, &params, args.batch, t, &opt)?;
    eprintln!(
        "GPT L={} C={} NH={} V={} ({} parameters), batches (B={}, T={t}), {} dispatches per step",
        cfg.layers,
        cfg.width,
        cfg.heads,
        cfg.vocab_size,
        cfg.num_params(),
        args.batch,
        trainer.dispatches_per_step()
    );

    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let metrics_path = args.out.join("metrics.jsonl");
    let mut metrics =
        std::io::LineWriter::new(std::fs::File::create(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?);

    let eval_before = eval_loss(gpu, &trainer, &eval_set, args.batch, t)?;
    eprintln!("held-out loss before training: {eval_before:.4} (uniform over 256 bytes: {:.4})", 256f32.ln());

    // A fresh seeded permutation of the training set every epoch, the last batch topped up from its start.
    let mut batcher = Batcher::new(train_set.len(), args.batch, args.seed ^ 0xBA7C, true, LastBatch::TopUp)?;
    let mut next_batch = || -> Result<SftBatch> { collate_sft(&batcher.next_rows(&train_set), t, PAD) };

    let pb = ProgressBar::new(args.steps as u64);
    pb.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg} ({per_sec}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let (mut first_loss, mut last_loss, mut last_saved) = (f32::NAN, f32::NAN, 0usize);
    for step in 1..=args.steps {
        let batch = next_batch()?;
        let m = match pollster::block_on(trainer.step(gpu, &batch)) {
            Ok(m) => m,
            Err(Error::NonFinite(what)) => {
                pb.abandon();
                let kept = if last_saved > 0 {
                    format!("the checkpoint in {} is from step {last_saved}", args.out.display())
                } else {
                    "no checkpoint was saved".into()
                };
                return Err(Error::NonFinite(format!("{what}; stopped at step {step}, {kept}")));
            }
            Err(e) => return Err(e),
        };
        if step == 1 {
            first_loss = m.loss;
        }
        last_loss = m.loss;
        writeln!(metrics, "{}", serde_json::to_string(&m).expect("metrics serialize"))
            .map_err(|e| Error::io(&metrics_path, e))?;
        pb.set_message(format!("loss {:.4} |g| {:.3}", m.loss, m.grad_norm));
        pb.inc(1);
        if pb.is_hidden() && (step % 50 == 0 || step == 1) {
            eprintln!("step {step:>5}  loss {:.4}  grad norm {:.3}", m.loss, m.grad_norm);
        }
        if step % args.save_every == 0 || step == args.steps {
            save(gpu, &trainer, &args.out)?;
            last_saved = step;
        }
    }
    pb.finish();
    let train_s = started.elapsed().as_secs_f64();
    let eval_after = eval_loss(gpu, &trainer, &eval_set, args.batch, t)?;
    eprintln!(
        "trained {} steps in {train_s:.1} s ({:.1} ms/step); train loss {first_loss:.4} -> {last_loss:.4}; held-out loss {eval_before:.4} -> {eval_after:.4}",
        args.steps,
        1e3 * train_s / args.steps as f64
    );
    print_samples(gpu, &trainer, &eval_set[..args.samples.min(eval_set.len())], t)?;
    let summary = serde_json::json!({
        "args": args,
        "adapter": gpu.info,
        "config": cfg,
        "t": t,
        "dispatches_per_step": trainer.dispatches_per_step(),
        "train_loss_first": first_loss,
        "train_loss_last": last_loss,
        "eval_loss_before": eval_before,
        "eval_loss_after": eval_after,
        "train_seconds": train_s,
    });
    write_atomic(
        &args.out.join("summary.json"),
        serde_json::to_string_pretty(&summary).expect("summary serializes").as_bytes(),
    )?;
    eprintln!("checkpoint, metrics.jsonl and summary.json in {}", args.out.display());
    Ok(())
}
