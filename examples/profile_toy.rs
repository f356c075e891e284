//! Per-dispatch timing of one toy DPO step (the paper's MLP, hidden H, B = 8 rows per replica): how long each
//! kernel of the forward, the loss, the backward and AdamW takes on this adapter, and the whole step. This is how
//! the skinny GEMM and the reductions were tuned for lavapipe.
//!
//!   cargo run --release --example profile_toy -- 5      # 5 replicas (seeds) in one model; H=512 to change width
//!   cargo run --release --example profile_toy -- 5 mlp  # the generic Mlp + Optimizer path instead of FusedMlp

use std::time::Instant;

use dpo3d::gpu::Plan;
use dpo3d::model::init::mlp_params;
use dpo3d::model::{FusedMlp, Mlp, MlpConfig, Policy};
use dpo3d::objectives::PreferenceLoss;
use dpo3d::toy::PAIRS;
use dpo3d::train::{OptimConfig, PreferenceTrainer, ReferenceMode};
use dpo3d::Gpu;

fn main() {
    let gpu = Gpu::new_blocking().unwrap_or_else(|e| panic!("{e}"));
    let reps: usize = std::env::args().nth(1).map(|s| s.parse().expect("replicas")).unwrap_or(1);
    let hidden: usize = std::env::var("H").ok().map(|s| s.parse().expect("H")).unwrap_or(256);
    let cfg = MlpConfig { prompts: 4, hidden, responses: 10, first_bias: false, scalar_head: false, depth: 2 };
    let params: Vec<f32> =
        (0..reps).flat_map(|k| mlp_params(&cfg, k as u64).unwrap_or_else(|e| panic!("{e}"))).collect();
    let prompts: Vec<u32> = PAIRS.iter().chain(PAIRS.iter()).map(|p| p.0 as u32).collect();
    let responses: Vec<u32> = PAIRS.iter().map(|p| p.1 as u32).chain(PAIRS.iter().map(|p| p.2 as u32)).collect();
    let loss = PreferenceLoss::Dpo { beta: 0.1 };
    let opt = OptimConfig { grad_clip: 0.0, ..Default::default() };
    let generic = std::env::args().nth(2).as_deref() == Some("mlp");
    let (plans, label): (Vec<&Plan>, _) = if generic {
        let make = || {
            let m = Mlp::replicated(&gpu, &cfg, reps, 8, &params).expect("model");
            m.set_batch(&gpu, &prompts, &responses).expect("batch");
            m
        };
        let t = PreferenceTrainer::new(&gpu, make(), Some(make()), &loss, &opt, ReferenceMode::Precomputed)
            .expect("trainer");
        let t: &'static _ = Box::leak(Box::new(t));
        (vec![t.policy.forward_plan(), &t.objective.plan, t.policy.backward_plan(), &t.opt.plan], "Mlp + Optimizer")
    } else {
        let make = || {
            let m = FusedMlp::replicated(&gpu, &cfg, reps, 8, &params).expect("model");
            m.set_batch(&gpu, &prompts, &responses).expect("batch");
            m
        };
        let t = PreferenceTrainer::new(&gpu, make(), Some(make()), &loss, &opt, ReferenceMode::Precomputed)
            .expect("trainer");
        let t: &'static _ = Box::leak(Box::new(t));
        (vec![t.policy.forward_plan(), &t.objective.plan, t.policy.backward_plan(), &t.opt.plan], "FusedMlp")
    };
    println!(
        "{} on {}: {label}, H = {hidden}, {reps} replica(s), best of 5 x 50 copies per dispatch",
        gpu.info.name, gpu.info.backend
    );
    let mut total = 0.0;
    for plan in &plans {
        for d in &plan.dispatches {
            let mut us = f64::INFINITY;
            for _ in 0..5 {
                let started = Instant::now();
                let mut enc = gpu.device.create_command_encoder(&Default::default());
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    for _ in 0..50 {
                        d.record(&mut pass);
                    }
                }
                gpu.queue.submit([enc.finish()]);
                gpu.wait();
                us = us.min(started.elapsed().as_secs_f64() / 50.0 * 1e6);
            }
            total += us;
            println!("{:>28} {:>8.1} us", d.label, us);
        }
    }
    println!("sum {:.1} us over {} dispatches", total, plans.iter().map(|p| p.dispatches.len()).sum::<usize>());
    let started = Instant::now();
    for _ in 0..100 {
        dpo3d::gpu::submit_all(&gpu, &plans);
    }
    gpu.wait();
    println!("whole step {:.1} us (100 steps, one submit each)", started.elapsed().as_secs_f64() / 100.0 * 1e6);
}
