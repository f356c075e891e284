//! Token-level toy (exploration).
mod common;
use common::*;
use dpo3d::toy::token::*;

#[test]
#[ignore]
fn explore() {
    let gpu = gpu();
    let seeds: u64 = std::env::var("SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let epochs: usize = std::env::var("EPOCHS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let lr: f32 = std::env::var("LR").ok().and_then(|s| s.parse().ok()).unwrap_or(1e-3);
    let sft_epochs: usize = std::env::var("SFT").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let sft_lr: f32 = std::env::var("SFTLR").ok().and_then(|s| s.parse().ok()).unwrap_or(3e-3);
    let t0 = std::time::Instant::now();
    let keys = ["logps/chosen", "logps/rejected", "token/shared_prefix_logp_chosen", "token/shared_after_logp_chosen", "token/distinct_logp_chosen", "token/distinct_logp_rejected", "token/shared_after_logp_rejected", "token/unseen_mass", "token/unseen_mass_chosen", "token/other_mass_chosen", "token/logp_chosen_min"];
    let mut pi0s = Vec::new();
    for s in 0..seeds {
        let cfg = TokenToyConfig { seed: s, sft_epochs, sft_lr, ..Default::default() };
        pi0s.push(pollster::block_on(token_sft_phase(&gpu, &cfg)).unwrap());
    }
    println!("sft {:.1}s", t0.elapsed().as_secs_f32());
    for mut cfg in token_study_configs(seeds, epochs) {
        cfg.lr = lr; cfg.sft_epochs = sft_epochs; cfg.sft_lr = sft_lr;
        cfg.log_every = (epochs / 10).max(1);
        let t1 = std::time::Instant::now();
        let recs = pollster::block_on(run_token_toy_from(&gpu, &cfg, &pi0s[cfg.seed as usize])).unwrap();
        println!("{} {:.1}s", cfg.run_name(), t1.elapsed().as_secs_f32());
        for r in &recs {
            let line: Vec<String> = keys.iter().map(|k| format!("{:.3}", r.get(k))).collect();
            println!("  {:5} {}", r.epoch, line.join(" "));
        }
    }
    println!("total {:.1}s  keys: {:?}", t0.elapsed().as_secs_f32(), keys);
}
