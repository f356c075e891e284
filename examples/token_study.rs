//! The token-level toy's full study at default settings (3 losses x 3 seeds, one SFT phase per seed): prints the
//! start and end value of each token metric per run and the wall time. Asserts nothing; tests/toy_token.rs checks
//! what a short run shows.
//!
//!   cargo run --release --example token_study

use dpo3d::toy::token::*;
use dpo3d::Gpu;

fn main() {
    let gpu = Gpu::new_blocking().unwrap_or_else(|e| panic!("{e}"));
    let t0 = std::time::Instant::now();
    let keys = [
        "logps/chosen",
        "logps/rejected",
        "token/shared_logp_chosen",
        "token/shared_prefix_logp_chosen",
        "token/shared_after_logp_chosen",
        "token/distinct_logp_chosen",
        "token/distinct_logp_rejected",
        "token/shared_after_logp_rejected",
        "token/unseen_mass",
        "token/other_mass_chosen",
        "token/logp_chosen_min",
    ];
    let cfgs = token_study_configs(3, TokenToyConfig::default().epochs);
    let pi0: Vec<Vec<f32>> = (0..3)
        .map(|seed| {
            pollster::block_on(token_sft_phase(&gpu, &TokenToyConfig { seed, ..Default::default() }))
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    eprintln!("SFT phases: {:.1} s", t0.elapsed().as_secs_f32());
    for cfg in &cfgs {
        let recs = pollster::block_on(run_token_toy_from(&gpu, cfg, &pi0[cfg.seed as usize]))
            .unwrap_or_else(|e| panic!("{e}"));
        for r in [&recs[0], recs.last().unwrap()] {
            let line: Vec<String> = keys.iter().map(|k| format!("{:.3}", r.get(k))).collect();
            println!("{:22} {:4} {}", cfg.run_name(), r.epoch, line.join(" "));
        }
    }
    println!("columns: {keys:?}");
    eprintln!("token study: {} runs in {:.1} s", cfgs.len(), t0.elapsed().as_secs_f32());
}
