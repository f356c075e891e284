//! What the KV cache saves in generation (`model::Decoder`), at the llm-study's sizes. A `Generator` call is one
//! forward over the prompts (the prefill) and `max_new_tokens - 1` decode steps on one position per row, each step
//! also writing its token's log-prob. Without the cache, every step re-ran the forward over (B, T) and one more forward
//! scored the completions: `max_new_tokens + 1` forwards. Both are timed here on the adapter in hand (minimum of 3
//! runs each) and the ratio printed, with the prefill's share (a call with `max_new_tokens = 1`: the prefill and one
//! draw); then one decode step's dispatches are timed one by one, summed per kernel (where a step's time goes).
//! Asserts nothing. Seeds are fixed.
//!
//!   cargo run --release --example generation_cost

use std::collections::BTreeMap;
use std::time::Instant;

use dpo3d::gpu::tune::time_dispatch;
use dpo3d::gpu::{submit_all, Tensor};
use dpo3d::model::init::gpt_params;
use dpo3d::model::{Decoder, GenerationConfig, Generator, Gpt, GptConfig};
use dpo3d::rng::Rng;
use dpo3d::Gpu;

fn main() {
    let gpu = Gpu::new_blocking().unwrap_or_else(|e| panic!("{e}"));
    println!("adapter: {} ({})", gpu.info.name, gpu.info.backend);
    // (name, layers, width, B): the llm-study's small and full profiles (vocabulary 512, 4 heads, prompts of up to
    // 72 tokens and 24 new ones: T = 96).
    for (name, layers, width, b) in [("small", 2usize, 64usize, 64usize), ("full", 4, 128, 256)] {
        let cfg = GptConfig { vocab_size: 512, context: 96, layers, heads: 4, width, scalar_head: false };
        let (max_prompt, max_new) = (72usize, 24usize);
        let t = max_prompt + max_new;
        let params = gpt_params(&cfg, 1).unwrap_or_else(|e| panic!("{e}"));
        let g = GenerationConfig { max_new_tokens: max_new, temperature: 1.0, top_k: 0, stop_token_id: None, seed: 2 };
        let mut gen = Generator::new(&gpu, &cfg, &params, b, max_prompt, &g).unwrap_or_else(|e| panic!("{e}"));
        let mut rng = Rng::new(3);
        // prompts of 20 to 72 tokens, as the study's are of different lengths
        let prompts: Vec<Vec<u32>> =
            (0..b).map(|_| (0..20 + rng.below(53) as usize).map(|_| rng.below(512)).collect()).collect();
        let min_ms = |f: &mut dyn FnMut()| {
            f(); // warm-up: pipelines, the kernel tuner
            (0..3)
                .map(|_| {
                    let t0 = Instant::now();
                    f();
                    t0.elapsed().as_secs_f64() * 1e3
                })
                .fold(f64::MAX, f64::min)
        };
        let ms_gen = min_ms(&mut || {
            gen.generate_blocking(&gpu, &prompts).unwrap_or_else(|e| panic!("{e}"));
        });
        let g1 = GenerationConfig { max_new_tokens: 1, ..g.clone() };
        let mut prefill = Generator::new(&gpu, &cfg, &params, b, max_prompt, &g1).unwrap_or_else(|e| panic!("{e}"));
        let ms_prefill = min_ms(&mut || {
            prefill.generate_blocking(&gpu, &prompts).unwrap_or_else(|e| panic!("{e}"));
        });
        let full = Gpt::new(&gpu, &cfg, b, t, &params).unwrap_or_else(|e| panic!("{e}"));
        let ms_fwd = min_ms(&mut || {
            submit_all(&gpu, &[&full.forward]);
            gpu.wait();
        });
        let ms_recompute = (max_new + 1) as f64 * ms_fwd;
        // One decode step per dispatch, at the last step's positions (every row at 94: the most attention work).
        let lens = Tensor::from_u32(&gpu, "lens", &vec![max_prompt as u32; b]).unwrap_or_else(|e| panic!("{e}"));
        let decoder = Decoder::new(&gpu, &full, &lens, max_new).unwrap_or_else(|e| panic!("{e}"));
        submit_all(&gpu, &decoder.step(max_new - 1));
        gpu.wait();
        let mut per: BTreeMap<&'static str, f64> = BTreeMap::new();
        for d in &decoder.body.dispatches {
            *per.entry(d.label).or_default() += time_dispatch(&gpu, d).unwrap_or(f64::NAN) * 1e3;
        }
        let mut per: Vec<_> = per.into_iter().collect();
        per.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f64 = per.iter().map(|p| p.1).sum();
        let parts: Vec<String> =
            per.iter().map(|(k, ms)| format!("{k} {ms:.1} ms ({:.0}%)", 100.0 * ms / total)).collect();
        println!("{name}: one decode step, dispatches timed alone: {total:.1} ms = {}", parts.join(", "));
        println!(
            "{name}: the prefill and one draw (max_new_tokens = 1) {ms_prefill:.1} ms, {:.0}% of the generation below",
            100.0 * ms_prefill / ms_gen
        );
        println!(
            "{name}: L{layers} C{width} V512 B{b} T{t}, {max_new} new tokens: generation with the KV cache {ms_gen:.1} ms; \
             one forward over (B, T) {ms_fwd:.1} ms, so recomputing it per token costs {ms_recompute:.1} ms: \
             {:.1}x",
            ms_recompute / ms_gen
        );
    }
}
