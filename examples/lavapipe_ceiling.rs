//! Where a GEMM's time goes on the adapter in hand: the loads of dpo3d's vec4 GEMM, and what sharing them between a
//! subgroup's lanes gains.
//!
//!     cargo run --release --example lavapipe_ceiling -- [--n 1024]
//!
//! Times three forms of the body of dpo3d's vec4 GEMM, gemm_v4nn (`examples/lavapipe_ceiling.wgsl`): as shipped (A
//! and B loaded: a real product, checked against the CPU), with only A's loads, and with no loads at all. On lavapipe
//! (Mesa 25.0, LLVM 15) the last one is the ceiling: the multiply-adds alone, which Mesa emits as separate multiplies
//! and adds with a loop-mask blend per accumulator. The gap between the first and the last is the cost of loads.
//! dpo3d compiles its shaders without naga's loop bound (an extra counter and exit test wgpu adds to every loop; see
//! `gpu::context`), which took the `no_loads` row from 61 to 149 GFLOP/s and `a_only` from 31 to 57 on a 2-core Zen 4
//! (`DPO3D_SHADER_CHECKS=full` puts the bound back, for comparison); `full` did not move (13-14), so the loads are
//! what is left.
//! In the machine code Mesa 25.0.7 generates for these kernels (`GALLIVM_DEBUG=asm`, with `MESA_SHADER_CACHE_DISABLE=1`),
//! every storage-buffer load inside the K loop, A's included although its address is the same for the whole
//! workgroup, is a loop over the SIMD lanes with a bounds check and a branch per element; no arrangement of the
//! loads in WGSL tried so far (scalar or vec4 loads, loads hoisted to the top of the loop, more rows per invocation,
//! lane-selects of uniform loads, textures, `subgroupBroadcastFirst` of the loop counter) got vector loads out of it.
//! The LLVM IR (`GALLIVM_DEBUG=ir`) shows why: Mesa 25.0.7 keeps every value as an 8-lane vector, uniform ones
//! included (a uniform address is re-extracted from the first active lane), and every storage-buffer load goes
//! through the per-lane path. A uniform-buffer array read at a per-lane index was only 25% cheaper per vec4 than a
//! storage-buffer one (0.72 against 0.94 ns per lane). What does help is loading less per lane: where
//! the device has subgroups, the last row times dpo3d's subgroup GEMM (`shaders/matmul_subgroup.wgsl`), whose lanes
//! each load a different row of A and share them by `subgroupBroadcast`, with 16 or 24 rows per invocation; it is a
//! different body, so the `no_loads` row does not bound it. Compare the printed GFLOP/s with PyTorch's on the same CPU
//! (`python3 scripts/bench_torch.py --device cpu`, its 1024^3 matmul row) to see which goals are in reach.

use std::time::Instant;

use clap::Parser;
use dpo3d::gpu::{Dispatch, Tensor};
use dpo3d::ops::matmul::{gemm_with, GemmDims, MatmulKernel};
use dpo3d::rng::Rng;
use dpo3d::{Gpu, Result};

const SOURCE: &str = include_str!("lavapipe_ceiling.wgsl");

#[derive(Parser, Debug)]
#[command(about = "Time dpo3d's CPU-adapter GEMM body with and without its loads (the arithmetic ceiling)")]
struct Args {
    /// Square size n of the product (a multiple of 128).
    #[arg(long, default_value_t = 1024)]
    n: usize,
    /// Timed runs per form (the fastest is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn main() {
    if let Err(e) = run(&Args::parse()) {
        eprintln!("lavapipe_ceiling: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<()> {
    let n = args.n;
    if n == 0 || !n.is_multiple_of(128) {
        return Err(dpo3d::Error::config(format!("--n {n}: needs a positive multiple of 128")));
    }
    let gpu = Gpu::new_blocking()?;
    println!("adapter: {} ({}, {})", gpu.info.name, gpu.info.backend, gpu.info.driver);
    let (mut av, mut bv) = (vec![0f32; n * n], vec![0f32; n * n]);
    Rng::new(1).fill_normal(&mut av, 1.0);
    Rng::new(2).fill_normal(&mut bv, 1.0);
    let a = Tensor::from_f32(&gpu, "a", &av)?;
    let b = Tensor::from_f32(&gpu, "b", &bv)?;
    let c = Tensor::zeros(&gpu, "c", n * n)?;
    let params: Vec<u8> = [n as u32, n as u32, n as u32, 0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let flops = 2.0 * (n * n * n) as f64;
    println!("{:<10} {:>10} {:>10}  what is loaded per 4 k (per invocation)", "form", "ms", "GFLOP/s");
    let mut full_gflops = 0.0;
    let mut forms = vec![("full", "4 vec4 of A, 8 of B"), ("a_only", "4 vec4 of A"), ("no_loads", "nothing")];
    if MatmulKernel::Subgroup.available(&gpu) {
        forms.push(("subgroup", "3 vec4 of A (24 rows, shared), 8 of B"));
    }
    for (entry, what) in forms {
        let groups = [(n / 128) as u32, (n / 4) as u32, 1];
        let d = if entry == "subgroup" {
            gemm_with(&gpu, MatmulKernel::Subgroup, &c, &a, &b, GemmDims::new(n, n, n))
        } else {
            Dispatch::new(&gpu, "lavapipe_ceiling", SOURCE, entry, Some(&params), &[(1, &a), (2, &b), (3, &c)], groups)
        };
        gpu.check()?;
        let time = |gpu: &Gpu| {
            let started = Instant::now();
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                d.record(&mut pass);
            }
            gpu.queue.submit([enc.finish()]);
            gpu.wait();
            started.elapsed().as_secs_f64()
        };
        time(&gpu); // compiles the pipeline, first touch of the buffers
        let best = (0..args.runs.max(1)).map(|_| time(&gpu)).fold(f64::INFINITY, f64::min);
        let gflops = flops / best / 1e9;
        println!("{entry:<10} {:>10.2} {gflops:>10.2}  {what}", best * 1e3);
        if entry == "full" {
            full_gflops = gflops;
        }
        if entry == "full" || entry == "subgroup" {
            check_product(&gpu, &c, &av, &bv, n)?;
        }
    }
    println!("(full is {full_gflops:.2} GFLOP/s; the no_loads row bounds any kernel with this body on this adapter)");
    Ok(())
}

/// `full` and `subgroup` computed a real product: compare it with the CPU reference GEMM (`reference::matmul`, the same k order).
fn check_product(gpu: &Gpu, c: &Tensor, a: &[f32], b: &[f32], n: usize) -> Result<()> {
    use dpo3d::reference::matmul::{gemm, Gemm, Strides};
    let got = pollster::block_on(c.read_f32(gpu))?;
    let mut want = vec![0f32; n * n];
    let layout = Strides::row_major(n, n * n);
    let dims = Gemm { m: n, n, k: n, batch: 1, a: layout, b: layout, c: layout, alpha: 1.0, beta: 0.0, bias_batch: 0 };
    gemm(&mut want, a, b, dims);
    let worst = want.iter().zip(&got).map(|(w, g)| (w - g).abs() / w.abs().max(1.0)).fold(0f32, f32::max);
    if !worst.is_finite() || got.iter().any(|g| !g.is_finite()) || worst > 1e-4 {
        return Err(dpo3d::Error::Gpu(format!("`full` is not A @ B: relative error {worst:e}")));
    }
    Ok(())
}
