//! Benchmarks on the adapter wgpu finds: (a) f32 matmul GFLOP/s of each WGSL GEMM kernel at n x n x n, (b) the
//! time of one GPT training step (forward + SFT loss + backward + clip + AdamW, `SftTrainer::step`, one submit and a
//! readback of the loss) with its dispatch count, and (c) the time of one `Generator` call (B prompts of 72 tokens, 24
//! new tokens each sampled at temperature 1 with their log-probs, KV-cached) at the llm-study's two model sizes.
//! Prints tables and writes JSON:
//!
//!     {"device": {...}, "matmul": [{"kernel", "n", "gflops", "ms"}],
//!      "gpt_step": [{"layers", "width", "heads", "context", "batch", "vocab", "ms_per_step", "dispatches_per_step",
//!                    "tokens_per_s"}],
//!      "generation": [{"layers", "width", "heads", "batch", "vocab", "prompt_len", "new_tokens", "ms"}]}
//!
//! `scripts/bench_torch.py` times the same products, the same GPT-2 step and the same generation in eager PyTorch
//! (f32, TF32 off) and prints the same JSON, for a same-machine comparison.
//!
//! Timing: a matmul is timed by recording K copies of its dispatch into one compute pass, submitting once and
//! waiting, after a warm-up dispatch; K is picked so one measurement takes about `--target-ms`. Wall-clock time
//! includes one submit and one wait per K dispatches. A GPT step is timed end to end as a training loop sees it
//! (upload, submit, readback), median over `--steps` after `--warmup` steps.
//!
//! On lavapipe (software Vulkan) the numbers are for checking the harness only: kernel rankings there do not carry
//! over to GPUs, and the default caps n at 1024 because n = 2048 takes minutes per kernel.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use dpo3d::checkpoint::write_atomic;
use dpo3d::data::SftBatch;
use dpo3d::gpu::Tensor;
use dpo3d::model::init::gpt_params;
use dpo3d::model::{GenerationConfig, Generator, GptConfig};
use dpo3d::ops::matmul::{gemm_with, matmul_flops, GemmDims, MatmulKernel};
use dpo3d::rng::Rng;
use dpo3d::train::sft::SftTrainer;
use dpo3d::train::OptimConfig;
use dpo3d::{Error, Gpu, Result};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "Matmul GFLOP/s per WGSL kernel and GPT training-step time on the adapter wgpu finds; writes JSON")]
struct Args {
    /// JSON output file.
    #[arg(long, default_value = "runs/bench.json")]
    out: PathBuf,
    /// Largest matmul n (of 256, 512, 1024, 2048, 4096); default 4096, or 1024 on a CPU adapter such as lavapipe.
    #[arg(long)]
    max_n: Option<usize>,
    /// CI-sized run: n <= 512, the smallest GPT config only, fewer steps.
    #[arg(long)]
    quick: bool,
    /// Timed GPT steps per config (median reported); default 5, or 3 on a CPU adapter.
    #[arg(long)]
    steps: Option<usize>,
    /// Untimed GPT steps first (pipeline compilation, allocation).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Wall time aimed at per matmul measurement, in milliseconds.
    #[arg(long, default_value_t = 500.0)]
    target_ms: f64,
    /// Vocabulary of the benchmark GPTs (256: byte level; 50257 is GPT-2's).
    #[arg(long, default_value_t = 256)]
    vocab: usize,
    /// Skip the matmul part.
    #[arg(long)]
    no_matmul: bool,
    /// Skip the GPT part.
    #[arg(long)]
    no_gpt: bool,
    /// Skip the generation part.
    #[arg(long)]
    no_generation: bool,
    /// Per-dispatch profile of each GPT step (forward, loss, backward, optimizer): each dispatch timed alone
    /// (GPU timestamps where the adapter has them), summed per kernel, largest first. Shows the next bottleneck.
    #[arg(long)]
    profile: bool,
}

/// The JSON written to --out (fields in this order).
#[derive(Serialize)]
struct Report<'a> {
    device: &'a dpo3d::gpu::GpuInfo,
    matmul: Vec<MatmulResult>,
    gpt_step: Vec<GptStepResult>,
    generation: Vec<GenerationResult>,
}

#[derive(Serialize)]
struct GenerationResult {
    layers: usize,
    width: usize,
    heads: usize,
    batch: usize,
    vocab: usize,
    prompt_len: usize,
    new_tokens: usize,
    ms: f64,
}

/// (L, C, NH, B) of the generation benchmark: the llm-study's small and full models and generation batches
/// (vocabulary 512, prompts of 72 tokens, 24 new tokens).
const GEN_CONFIGS: [(usize, usize, usize, usize); 2] = [(2, 64, 4, 64), (4, 128, 4, 256)];
const GEN_VOCAB: usize = 512;
const GEN_PROMPT: usize = 72;
const GEN_NEW: usize = 24;

#[derive(Serialize)]
struct MatmulResult {
    kernel: &'static str,
    n: usize,
    gflops: f64,
    ms: f64,
}

#[derive(Serialize)]
struct GptStepResult {
    layers: usize,
    width: usize,
    heads: usize,
    context: usize,
    batch: usize,
    vocab: usize,
    ms_per_step: f64,
    dispatches_per_step: usize,
    tokens_per_s: f64,
}

/// (L, C, NH, T, B) of the GPT step benchmark: the SFT example's model, a middle one, and a GPT-2-small-shaped
/// block stack at 1/3 width.
const GPT_CONFIGS: [(usize, usize, usize, usize, usize); 3] =
    [(2, 64, 4, 64, 8), (4, 128, 4, 128, 8), (4, 256, 4, 128, 16)];
const SIZES: [usize; 5] = [256, 512, 1024, 2048, 4096];

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<()> {
    let gpu = Gpu::new_blocking()?;
    let i = &gpu.info;
    println!("adapter: {} ({}, {}, {})", i.name, i.backend, i.device_type, i.driver);
    let cpu_adapter = i.device_type == "Cpu";
    let max_n = args.max_n.unwrap_or(if args.quick {
        512
    } else if cpu_adapter {
        1024
    } else {
        4096
    });
    let steps = args.steps.unwrap_or(if args.quick || cpu_adapter { 3 } else { 5 }).max(1);

    let mut matmul = Vec::new();
    if !args.no_matmul {
        println!("\n{:<10} {:>6} {:>10} {:>10} {:>5}", "kernel", "n", "ms", "GFLOP/s", "K");
        for &n in SIZES.iter().filter(|&&n| n <= max_n) {
            for kernel in MatmulKernel::ALL.into_iter().filter(|k| k.available(&gpu)) {
                let (r, k) = bench_matmul(&gpu, kernel, n, args.target_ms / if args.quick { 4.0 } else { 1.0 })?;
                println!("{:<10} {:>6} {:>10.3} {:>10.2} {:>5}", r.kernel, r.n, r.ms, r.gflops, k);
                matmul.push(r);
            }
        }
    }

    let mut gpt_step = Vec::new();
    if !args.no_gpt {
        println!(
            "\n{:>3} {:>5} {:>3} {:>5} {:>3} {:>6} {:>11} {:>11} {:>12}",
            "L", "C", "NH", "T", "B", "V", "ms/step", "dispatches", "tokens/s"
        );
        let configs = if args.quick { &GPT_CONFIGS[..1] } else { &GPT_CONFIGS[..] };
        for &(layers, width, heads, context, batch) in configs {
            let cfg = GptConfig { vocab_size: args.vocab, context, layers, heads, width, scalar_head: false };
            let r = bench_gpt_step(&gpu, &cfg, batch, args.warmup, steps, args.profile)?;
            println!(
                "{:>3} {:>5} {:>3} {:>5} {:>3} {:>6} {:>11.2} {:>11} {:>12.0}",
                r.layers,
                r.width,
                r.heads,
                r.context,
                r.batch,
                r.vocab,
                r.ms_per_step,
                r.dispatches_per_step,
                r.tokens_per_s
            );
            gpt_step.push(r);
        }
    }

    let mut generation = Vec::new();
    if !args.no_generation {
        println!("\n{:>3} {:>5} {:>3} {:>4} {:>5} {:>7} {:>5} {:>10}", "L", "C", "NH", "B", "V", "prompt", "new", "ms");
        let configs = if args.quick { &GEN_CONFIGS[..1] } else { &GEN_CONFIGS[..] };
        for &(layers, width, heads, batch) in configs {
            let r = bench_generation(&gpu, layers, width, heads, batch, steps)?;
            println!(
                "{:>3} {:>5} {:>3} {:>4} {:>5} {:>7} {:>5} {:>10.1}",
                r.layers, r.width, r.heads, r.batch, r.vocab, r.prompt_len, r.new_tokens, r.ms
            );
            generation.push(r);
        }
    }

    let report = Report { device: &gpu.info, matmul, gpt_step, generation };
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_atomic(&args.out, serde_json::to_string_pretty(&report).expect("serializes").as_bytes())?;
    println!("\nwrote {}", args.out.display());
    Ok(())
}

fn randn(seed: u64, n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    Rng::new(seed).fill_normal(&mut v, 1.0);
    v
}

/// Seconds for `k` copies of `d` recorded into one compute pass, one submit, one wait.
fn time_dispatches(gpu: &Gpu, d: &dpo3d::gpu::Dispatch, k: usize) -> f64 {
    let started = Instant::now();
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&wgpu_pass_desc());
        for _ in 0..k {
            d.record(&mut pass);
        }
    }
    gpu.queue.submit([enc.finish()]);
    gpu.wait();
    started.elapsed().as_secs_f64()
}

fn wgpu_pass_desc() -> wgpu::ComputePassDescriptor<'static> {
    wgpu::ComputePassDescriptor { label: Some("bench"), timestamp_writes: None }
}

/// GFLOP/s of C (n, n) = A (n, n) @ B (n, n) with `kernel`; also returns the K used.
fn bench_matmul(gpu: &Gpu, kernel: MatmulKernel, n: usize, target_ms: f64) -> Result<(MatmulResult, usize)> {
    let a = Tensor::from_f32(gpu, "bench a", &randn(1, n * n))?;
    let b = Tensor::from_f32(gpu, "bench b", &randn(2, n * n))?;
    let c = Tensor::zeros(gpu, "bench c", n * n)?;
    let d = gemm_with(gpu, kernel, &c, &a, &b, GemmDims::new(n, n, n));
    time_dispatches(gpu, &d, 1); // warm-up: pipeline compilation, first touch of the buffers
    let one = time_dispatches(gpu, &d, 1);
    let k = ((target_ms / 1e3 / one).ceil() as usize).clamp(1, 200);
    let s = if k == 1 { one } else { time_dispatches(gpu, &d, k) / k as f64 };
    let r = MatmulResult { kernel: kernel.name(), n, gflops: matmul_flops(n, n, n, 1) / s / 1e9, ms: s * 1e3 };
    Ok((r, k))
}

/// Median wall time of `SftTrainer::step` on a fixed random batch (every position a target).
fn bench_gpt_step(
    gpu: &Gpu,
    cfg: &GptConfig,
    b: usize,
    warmup: usize,
    steps: usize,
    profile: bool,
) -> Result<GptStepResult> {
    let t = cfg.context;
    let params = gpt_params(cfg, 1)?;
    let mut tr = SftTrainer::new(gpu, cfg, &params, b, t, &OptimConfig::default())?;
    let mut rng = Rng::new(3);
    let ids: Vec<u32> = (0..b * (t + 1)).map(|_| rng.below(cfg.vocab_size as u32)).collect();
    let (mut tokens, mut targets) = (Vec::with_capacity(b * t), Vec::with_capacity(b * t));
    for r in 0..b {
        tokens.extend_from_slice(&ids[r * (t + 1)..r * (t + 1) + t]);
        targets.extend_from_slice(&ids[r * (t + 1) + 1..(r + 1) * (t + 1)]);
    }
    let batch = SftBatch { b, t, tokens, targets, mask: vec![1.0; b * t] };
    for _ in 0..warmup {
        pollster::block_on(tr.step(gpu, &batch))?;
    }
    let mut times: Vec<f64> = (0..steps)
        .map(|_| {
            let started = Instant::now();
            pollster::block_on(tr.step(gpu, &batch)).map(|_| started.elapsed().as_secs_f64())
        })
        .collect::<Result<_>>()?;
    times.sort_by(f64::total_cmp);
    let median = (times[(times.len() - 1) / 2] + times[times.len() / 2]) / 2.0;
    if profile {
        print_profile(gpu, &[&tr.gpt.forward, &tr.sft.plan, &tr.gpt.backward, &tr.opt.plan], median);
    }
    Ok(GptStepResult {
        layers: cfg.layers,
        width: cfg.width,
        heads: cfg.heads,
        context: t,
        batch: b,
        vocab: cfg.vocab_size,
        ms_per_step: median * 1e3,
        dispatches_per_step: tr.dispatches_per_step(),
        tokens_per_s: (b * t) as f64 / median,
    })
}

/// Time every dispatch of the step's plans alone (`dpo3d::gpu::tune::time_dispatch`: several copies in one pass,
/// GPU timestamps where available) and print the sum per kernel entry point, largest first, with its share of the
/// sum and the count. The sum leaves out what a whole step adds (submit, readback, barriers between dispatches),
/// which the last line shows as the difference from the measured step.
/// Median time of one `Generator::generate` call over `reps` calls after one warm-up call (pipelines, the tuner).
fn bench_generation(
    gpu: &Gpu,
    layers: usize,
    width: usize,
    heads: usize,
    batch: usize,
    reps: usize,
) -> Result<GenerationResult> {
    let t = GEN_PROMPT + GEN_NEW;
    let cfg = GptConfig { vocab_size: GEN_VOCAB, context: t, layers, heads, width, scalar_head: false };
    let params = gpt_params(&cfg, 1)?;
    let g = GenerationConfig { max_new_tokens: GEN_NEW, temperature: 1.0, top_k: 0, stop_token_id: None, seed: 2 };
    let mut gen = Generator::new(gpu, &cfg, &params, batch, GEN_PROMPT, &g)?;
    let mut rng = Rng::new(3);
    let prompts: Vec<Vec<u32>> =
        (0..batch).map(|_| (0..GEN_PROMPT).map(|_| rng.below(GEN_VOCAB as u32)).collect()).collect();
    gen.generate_blocking(gpu, &prompts)?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = Instant::now();
        gen.generate_blocking(gpu, &prompts)?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(GenerationResult {
        layers,
        width,
        heads,
        batch,
        vocab: GEN_VOCAB,
        prompt_len: GEN_PROMPT,
        new_tokens: GEN_NEW,
        ms: times[times.len() / 2],
    })
}

fn print_profile(gpu: &Gpu, plans: &[&dpo3d::gpu::Plan], step_s: f64) {
    let mut per: std::collections::BTreeMap<&'static str, (f64, usize)> = Default::default();
    for plan in plans {
        for d in &plan.dispatches {
            let s = dpo3d::gpu::tune::time_dispatch(gpu, d).unwrap_or(f64::NAN);
            let e = per.entry(d.label).or_default();
            e.0 += s;
            e.1 += 1;
        }
    }
    let total: f64 = per.values().map(|v| v.0).sum();
    let mut rows: Vec<_> = per.into_iter().collect();
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    println!("      {:<28} {:>10} {:>6} {:>5}", "kernel", "us", "share", "count");
    for (label, (s, n)) in rows {
        println!("      {:<28} {:>10.1} {:>5.1}% {:>5}", label, s * 1e6, 100.0 * s / total, n);
    }
    println!(
        "      sum of dispatches {:.1} us; whole step {:.1} us (submit, barriers, readback: {:.1} us)",
        total * 1e6,
        step_s * 1e6,
        (step_s - total) * 1e6
    );
}
