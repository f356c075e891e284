//! Measures whether a KV cache would beat recomputing the full forward per generated token at the PPO test sizes.
//! A cached decode step costs at least a forward over (B, 1) (the attention over the cache and the cache writes come
//! on top), so timing a (B, 1) forward against a (B, T) forward bounds what a cache can save; a whole PPO step is
//! timed for scale. Prints one line per configuration; asserts nothing.
//!
//!   cargo run --release --example ppo_generation_cost

use std::time::Instant;

use dpo3d::gpu::submit_all;
use dpo3d::model::init::gpt_params;
use dpo3d::model::{Gpt, GptConfig};
use dpo3d::objectives::ppo::PpoConfig;
use dpo3d::rng::Rng;
use dpo3d::train::ppo::{gpt_value_init, GptRewardSource, PpoGptTrainer};
use dpo3d::train::OptimConfig;
use dpo3d::Gpu;

fn tiny_gpt() -> GptConfig {
    GptConfig { vocab_size: 8, context: 8, layers: 1, heads: 2, width: 32, scalar_head: false }
}

/// B prompts of Lp random tokens each.
fn random_prompts(rng: &mut Rng, b: usize, lp: usize, v: usize) -> Vec<Vec<u32>> {
    (0..b).map(|_| (0..lp).map(|_| rng.below(v as u32)).collect()).collect()
}

fn main() {
    let gpu = Gpu::new_blocking().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("adapter: {} ({})", gpu.info.name, gpu.info.backend);
    for (cfg, b, lp) in [
        (tiny_gpt(), 16usize, 2usize),
        (GptConfig { vocab_size: 16, context: 8, layers: 2, heads: 2, width: 32, scalar_head: false }, 16, 2),
        (GptConfig { vocab_size: 32, context: 16, layers: 2, heads: 4, width: 64, scalar_head: false }, 16, 4),
    ] {
        let t = cfg.context;
        let params = gpt_params(&cfg, 1).unwrap_or_else(|e| panic!("{e}"));
        let full = Gpt::new(&gpu, &cfg, b, t, &params).unwrap();
        let one = Gpt::new(&gpu, &cfg, b, 1, &params).unwrap();
        // minimum over repetitions: robust to other processes sharing the CPU that lavapipe runs on
        let time = |plan: &dpo3d::gpu::Plan, reps: usize| {
            submit_all(&gpu, &[plan]);
            gpu.wait();
            (0..reps)
                .map(|_| {
                    let t0 = Instant::now();
                    submit_all(&gpu, &[plan]);
                    gpu.wait();
                    t0.elapsed().as_secs_f64() * 1e3
                })
                .fold(f64::MAX, f64::min)
        };
        let reps = 20;
        let (ms_full, ms_one) = (time(&full.forward, reps), time(&one.forward, reps));
        // a whole PPO step for scale
        let ppo = PpoConfig { response_length: t - lp, ..Default::default() };
        let mut tr = PpoGptTrainer::new(
            &gpu,
            &ppo,
            &OptimConfig::default(),
            &cfg,
            &params,
            &gpt_value_init(&cfg, &params),
            GptRewardSource::CountToken { token: 1, scale: 1.0 },
            b,
            lp,
        )
        .unwrap();
        let mut rng = Rng::new(3);
        let prompts = random_prompts(&mut rng, b, lp, cfg.vocab_size);
        tr.step_blocking(&gpu, &prompts).unwrap();
        let min_ms = |f: &mut dyn FnMut()| {
            (0..3)
                .map(|_| {
                    let t0 = Instant::now();
                    f();
                    t0.elapsed().as_secs_f64() * 1e3
                })
                .fold(f64::MAX, f64::min)
        };
        let ms_gen = min_ms(&mut || {
            tr.generate_blocking(&gpu, &prompts).unwrap();
        });
        let ms_step = min_ms(&mut || {
            tr.step_blocking(&gpu, &prompts).unwrap();
        });
        let r = t - lp;
        eprintln!(
            "V={} T={t} L={} C={} B={b}: forward (B,T) {ms_full:.2} ms, (B,1) {ms_one:.2} ms ({} vs {} dispatches); \
             generation of {r} tokens {ms_gen:.1} ms = {:.0}% of a PPO step ({ms_step:.1} ms); a cache saves at most \
             {:.1} ms per step ({:.0}%)",
            cfg.vocab_size,
            cfg.layers,
            cfg.width,
            full.forward.len(),
            one.forward.len(),
            100.0 * ms_gen / ms_step,
            r as f64 * (ms_full - ms_one).max(0.0),
            100.0 * r as f64 * (ms_full - ms_one).max(0.0) / ms_step
        );
    }
}
