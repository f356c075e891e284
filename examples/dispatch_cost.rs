//! What one dispatch costs on the adapter in hand, apart from its work: the fixed price that decides how small a
//! kernel is worth launching, and so how much fusing dispatches gains.
//!
//!     cargo run --release --example dispatch_cost -- [--reps 100] [--runs 5]
//!
//! Records `--reps` dispatches of a trivial elementwise kernel (`x = 0.5 x + 1` over `n` floats) into one compute pass,
//! as a training step records its kernels, submits once, waits, and prints the time per dispatch (best of `--runs`)
//! for three sizes: one workgroup (the fixed cost alone), 512 workgroups of 64 (a 2-layer, width-64 GPT step's
//! (B T, C) = (512, 64) activation) and 2048 workgroups. On lavapipe each dispatch is handed to Mesa's worker threads
//! (`LP_NUM_THREADS`, by default one per core) and waited for, so the fixed cost depends on that thread count more
//! than on the kernel: compare runs with `LP_NUM_THREADS=0` (the dispatch runs on the submitting thread), `1` and the
//! default. Every figure is a wall-clock time on this machine; quote it next to the machine.

use std::time::Instant;

use clap::Parser;
use dpo3d::gpu::{Dispatch, Tensor};
use dpo3d::{Gpu, Result};

const SOURCE: &str = "
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(64)
fn scale_shift(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < arrayLength(&x)) { x[gid.x] = x[gid.x] * 0.5 + 1.0; }
}
";

#[derive(Parser, Debug)]
#[command(about = "Time per dispatch of a trivial kernel, recorded many times into one compute pass")]
struct Args {
    /// Dispatches recorded into the one compute pass that is timed.
    #[arg(long, default_value_t = 100)]
    reps: usize,
    /// Timed submissions per size (the fastest is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

fn main() {
    if let Err(e) = run(&Args::parse()) {
        eprintln!("dispatch_cost: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<()> {
    if args.reps == 0 || args.runs == 0 {
        return Err(dpo3d::Error::config("--reps and --runs must be at least 1"));
    }
    let gpu = Gpu::new_blocking()?;
    println!("adapter: {} ({}, {})", gpu.info.name, gpu.info.backend, gpu.info.driver);
    let threads = std::env::var("LP_NUM_THREADS").unwrap_or_else(|_| "unset".into());
    println!("LP_NUM_THREADS: {threads} (lavapipe's worker threads; other drivers ignore it)");
    println!("{:>10} {:>12} {:>16}", "workgroups", "floats", "us per dispatch");
    for groups in [1u32, 512, 2048] {
        let n = groups as usize * 64;
        let x = Tensor::zeros(&gpu, "x", n)?;
        let d = Dispatch::new(&gpu, "dispatch_cost", SOURCE, "scale_shift", None, &[(1, &x)], [groups, 1, 1]);
        gpu.check()?;
        let time = || {
            let started = Instant::now();
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for _ in 0..args.reps {
                    d.record(&mut pass);
                }
            }
            gpu.queue.submit([enc.finish()]);
            gpu.wait();
            started.elapsed().as_secs_f64()
        };
        time(); // compiles the pipeline, first touch of the buffer
        let best = (0..args.runs).map(|_| time()).fold(f64::INFINITY, f64::min);
        println!("{groups:>10} {n:>12} {:>16.1}", best * 1e6 / args.reps as f64);
        // The kernel ran (runs + 1) * reps times from x = 0: every element is the same finite value, 2 - 2^-k.
        let got = pollster::block_on(x.read_f32(&gpu))?;
        let k = (args.runs + 1) * args.reps;
        let want = (0..k).fold(0f32, |v, _| v * 0.5 + 1.0);
        if got.iter().any(|&v| v != want) {
            return Err(dpo3d::Error::Gpu(format!("the kernel did not run {k} times: expected {want} everywhere")));
        }
    }
    Ok(())
}
