//! RLHF-PPO on a tiny GPT with a rule-based reward computed on the GPU (the number of times a chosen token appears
//! in the response), from the library's `PpoGptTrainer`: sampling, reference log-probs, value head, per-token KL
//! penalty, GAE, clipped policy and value losses, AdamW, one submit per step. Prints TRL's PPO metrics and writes
//! metrics.jsonl. (For PPO on the paper's toy against a learned reward model: `toy3d --loss ppo`.)
//!
//!   cargo run --release --example ppo -- --steps 60 --kl-coef 0.5 --out runs/ppo

use std::path::PathBuf;

use clap::Parser;
use dpo3d::model::init::gpt_params;
use dpo3d::model::GptConfig;
use dpo3d::objectives::ppo::PpoConfig;
use dpo3d::rng::Rng;
use dpo3d::train::ppo::{gpt_value_init, GptRewardSource, PpoGptTrainer};
use dpo3d::train::OptimConfig;
use dpo3d::Gpu;

#[derive(Parser, Debug)]
#[command(
    about = "PPO on a tiny GPT rewarded for producing one token: the score rises while the KL to pi0 stays bounded"
)]
struct Args {
    #[arg(long, default_value_t = 60)]
    steps: usize,
    /// KL coefficient (beta).
    #[arg(long, default_value_t = 0.5)]
    kl_coef: f32,
    /// The rewarded token id.
    #[arg(long, default_value_t = 3)]
    token: u32,
    /// Prompts per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Response tokens per prompt.
    #[arg(long, default_value_t = 6)]
    response_length: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "runs/ppo")]
    out: PathBuf,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("ppo: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let a = Args::parse();
    let prompt_len = 2;
    let cfg = GptConfig {
        vocab_size: 8,
        context: prompt_len + a.response_length,
        layers: 1,
        heads: 2,
        width: 32,
        scalar_head: false,
    };
    if a.token as usize >= cfg.vocab_size {
        return Err(format!("--token {} is outside the vocabulary (V = {})", a.token, cfg.vocab_size));
    }
    let gpu = Gpu::new_blocking().map_err(|e| e.to_string())?;
    println!(
        "PPO on {} ({}): tiny GPT V={} T={}, reward = count of token {}, beta {}",
        gpu.info.name, gpu.info.backend, cfg.vocab_size, cfg.context, a.token, a.kl_coef
    );
    let ppo = PpoConfig { kl_coef: a.kl_coef, response_length: a.response_length, seed: a.seed, ..Default::default() };
    let opt = OptimConfig { lr: a.lr, ..Default::default() };
    let pi0 = gpt_params(&cfg, a.seed).map_err(|e| e.to_string())?;
    let mut tr = PpoGptTrainer::new(
        &gpu,
        &ppo,
        &opt,
        &cfg,
        &pi0,
        &gpt_value_init(&cfg, &pi0),
        GptRewardSource::CountToken { token: a.token, scale: 1.0 },
        a.batch,
        prompt_len,
    )
    .map_err(|e| e.to_string())?;
    println!("{} dispatches per PPO step (rollout + {} PPO epochs)", tr.dispatches_per_step(), ppo.num_ppo_epochs);
    let mut rng = Rng::new(a.seed.wrapping_add(1));
    let mut lines = String::new();
    for _ in 0..a.steps {
        let prompts: Vec<Vec<u32>> =
            (0..a.batch).map(|_| (0..prompt_len).map(|_| rng.below(cfg.vocab_size as u32)).collect()).collect();
        let m = tr.step_blocking(&gpu, &prompts).map_err(|e| e.to_string())?;
        if m.step % 10 == 1 || m.step as usize == a.steps {
            println!(
                "step {:4}  objective/scores {:.3}  objective/kl {:.3}  objective/rlhf_reward {:.3}  policy/approxkl_avg {:.4}  policy/clipfrac_avg {:.3}  loss/value_avg {:.4}",
                m.step,
                m.get("objective/scores"),
                m.get("objective/kl"),
                m.get("objective/rlhf_reward"),
                m.get("policy/approxkl_avg"),
                m.get("policy/clipfrac_avg"),
                m.get("loss/value_avg")
            );
        }
        let mut obj = serde_json::Map::new();
        obj.insert("step".into(), m.step.into());
        for (k, v) in &m.values {
            obj.insert(k.clone(), serde_json::json!(v));
        }
        lines.push_str(&serde_json::Value::Object(obj).to_string());
        lines.push('\n');
    }
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    dpo3d::checkpoint::write_atomic(&a.out.join("metrics.jsonl"), lines.as_bytes()).map_err(|e| e.to_string())?;
    println!("wrote {}", a.out.join("metrics.jsonl").display());
    Ok(())
}
