use dpo3d::model::init::gpt_params;
use dpo3d::model::{GenerationConfig, Generator, GptConfig};
use dpo3d::rng::Rng;
use dpo3d::Gpu;
use std::time::Instant;
fn main() {
    let gpu = Gpu::new_blocking().unwrap();
    for (name, layers, width, b) in [("small", 2usize, 64usize, 64usize), ("full", 4, 128, 256)] {
        let cfg = GptConfig { vocab_size: 512, context: 96, layers, heads: 4, width, scalar_head: false };
        let params = gpt_params(&cfg, 1).unwrap();
        let mut rng = Rng::new(3);
        let prompts: Vec<Vec<u32>> =
            (0..b).map(|_| (0..20 + rng.below(53) as usize).map(|_| rng.below(512)).collect()).collect();
        for max_new in [1usize, 2, 24] {
            let g =
                GenerationConfig { max_new_tokens: max_new, temperature: 1.0, top_k: 0, stop_token_id: None, seed: 2 };
            let mut gen = Generator::new(&gpu, &cfg, &params, b, 72, &g).unwrap();
            gen.generate_blocking(&gpu, &prompts).unwrap();
            let ms = (0..3)
                .map(|_| {
                    let t0 = Instant::now();
                    gen.generate_blocking(&gpu, &prompts).unwrap();
                    t0.elapsed().as_secs_f64() * 1e3
                })
                .fold(f64::MAX, f64::min);
            println!("{name} max_new {max_new}: {ms:.1} ms");
        }
    }
}
