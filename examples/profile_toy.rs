//! Per-dispatch timing of one toy DPO step (temporary profiling aid).
use dpo3d::model::{Mlp, MlpConfig};
use dpo3d::objectives::PreferenceLoss;
use dpo3d::reference::mlp::MlpRef;
use dpo3d::toy::PAIRS;
use dpo3d::train::{OptimConfig, PreferenceTrainer, ReferenceMode};
use dpo3d::Gpu;
use std::time::Instant;

fn main() {
    let gpu = Gpu::new_blocking().unwrap();
    let reps: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(1);
    let hidden: usize = std::env::var("H").ok().map(|s| s.parse().unwrap()).unwrap_or(256);
    let cfg = MlpConfig { prompts: 4, hidden, responses: 10, first_bias: false, scalar_head: false };
    let p: Vec<f32> = (0..reps).flat_map(|k| MlpRef::init(&cfg, k as u64).params).collect();
    let prompts: Vec<u32> = PAIRS.iter().chain(PAIRS.iter()).map(|p| p.0 as u32).collect();
    let responses: Vec<u32> = PAIRS.iter().map(|p| p.1 as u32).chain(PAIRS.iter().map(|p| p.2 as u32)).collect();
    let make = || {
        let m = Mlp::replicated(&gpu, &cfg, reps, 8, &p).unwrap();
        m.set_batch(&gpu, &prompts, &responses).unwrap();
        m
    };
    let t = PreferenceTrainer::new(
        &gpu,
        make(),
        Some(make()),
        &PreferenceLoss::Dpo { beta: 0.1 },
        &OptimConfig { grad_clip: 0.0, ..Default::default() },
        ReferenceMode::Precomputed,
    )
    .unwrap();
    let plans = [&t.policy.forward, &t.objective.plan, &t.policy.backward, &t.opt.plan];
    let k = 50;
    let mut total = 0.0;
    for plan in plans {
        for d in &plan.dispatches {
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for _ in 0..3 {
                    d.record(&mut pass);
                }
            }
            gpu.queue.submit([enc.finish()]);
            gpu.wait();
            let mut us = f64::INFINITY;
            for _ in 0..5 {
                let started = Instant::now();
                let mut enc = gpu.device.create_command_encoder(&Default::default());
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    for _ in 0..k {
                        d.record(&mut pass);
                    }
                }
                gpu.queue.submit([enc.finish()]);
                gpu.wait();
                us = us.min(started.elapsed().as_secs_f64() / k as f64 * 1e6);
            }
            total += us;
            println!("{:>28} {:>8.1} us", d.label, us);
        }
    }
    println!("total {:.1} us over {} dispatches", total, plans.iter().map(|p| p.dispatches.len()).sum::<usize>());
    // whole step
    let started = Instant::now();
    for _ in 0..100 {
        dpo3d::gpu::submit_all(&gpu, &plans);
    }
    gpu.wait();
    println!("whole step {:.1} us", started.elapsed().as_secs_f64() / 100.0 * 1e6);
}
