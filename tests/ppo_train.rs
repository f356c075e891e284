//! RLHF-PPO end to end on the GPU: on the paper's toy bandit with a known reward, PPO reaches the KL-regularised
//! optimum pi*(y|x) ∝ pi0(y|x) exp(r(x,y) / beta) (small total-variation distance); on a tiny GPT with a rule-based
//! reward computed on the GPU (count of one token), the mean score rises while the KL to the reference stays below
//! the analytic optimum's. Plus determinism for a seed, the reward-model and shared-trunk variants, end-of-sequence
//! handling in generation, and (ignored; run by hand) the KV-cache-versus-recomputation measurement.

mod common;
use common::*;
use dpo3d::model::{GptConfig, MlpConfig};
use dpo3d::objectives::ppo::{PpoConfig, ValueModel};
use dpo3d::reference::gpt::GptRef;
use dpo3d::reference::mlp::MlpRef;
use dpo3d::reference::ppo as cpu;
use dpo3d::rng::Rng;
use dpo3d::train::ppo::{gpt_value_init, mlp_value_init, GptRewardSource, PpoGptTrainer, PpoToyTrainer, RewardSource};
use dpo3d::train::OptimConfig;
use std::time::Instant;

const P: usize = 4;
const R: usize = 10;

fn toy_cfg() -> MlpConfig {
    MlpConfig { prompts: P, hidden: 32, responses: R, first_bias: false, scalar_head: false }
}

/// A known reward r(x, y) in [0, 0.3): with beta = 0.1 the optimum is far from pi0 but not degenerate.
fn reward_table() -> Vec<f32> {
    let mut rng = Rng::new(17);
    (0..P * R).map(|_| 0.3 * rng.uniform()).collect()
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn toy_ppo(beta: f32) -> PpoConfig {
    PpoConfig { kl_coef: beta, seed: 1, num_mini_batches: env("PPO_MB", 2), ..Default::default() }
}

fn toy_opt() -> OptimConfig {
    OptimConfig { lr: env("PPO_LR", 3e-3), ..Default::default() }
}

#[test]
fn should_approach_the_kl_regularised_optimum_on_the_toy_bandit() {
    let gpu = gpu();
    let beta = 0.1;
    let cfg = toy_cfg();
    let pi0_params = MlpRef::init(&cfg, 3).params;
    let table = reward_table();
    let rows = env("PPO_ROWS", 256);
    let mut tr = PpoToyTrainer::new(&gpu, &toy_ppo(beta), &toy_opt(), &cfg, &pi0_params, &mlp_value_init(&cfg, &pi0_params), RewardSource::Table(table.clone()), rows).unwrap();
    let pi0 = tr.policy_probs_blocking(&gpu).unwrap();
    let star = cpu::rlhf_optimum(&pi0, &table, beta, R);
    let tv0: f32 = cpu::total_variation(&pi0, &star, R).iter().sum::<f32>() / P as f32;
    let steps = env("PPO_STEPS", 150);
    let t0 = Instant::now();
    let mut last = None;
    for s in 0..steps {
        let m = tr.step_blocking(&gpu).unwrap();
        if s % 25 == 0 || s + 1 == steps {
            let pi = tr.policy_probs_blocking(&gpu).unwrap();
            let tv: f32 = cpu::total_variation(&pi, &star, R).iter().sum::<f32>() / P as f32;
            eprintln!(
                "step {:4} TV {tv:.4} scores {:.4} kl {:.4} rlhf_reward {:.4} approxkl {:.5} clipfrac {:.3} loss/value {:.5} ratio {:.4}",
                m.step,
                m.get("objective/scores"),
                m.get("objective/kl"),
                m.get("objective/rlhf_reward"),
                m.get("policy/approxkl_avg"),
                m.get("policy/clipfrac_avg"),
                m.get("loss/value_avg"),
                m.get("val/ratio")
            );
        }
        last = Some(m);
    }
    let secs = t0.elapsed().as_secs_f32();
    let pi = tr.policy_probs_blocking(&gpu).unwrap();
    let tvs = cpu::total_variation(&pi, &star, R);
    let tv: f32 = tvs.iter().sum::<f32>() / P as f32;
    let m = last.unwrap();
    eprintln!(
        "toy bandit: {steps} PPO steps ({} dispatches each) in {secs:.1} s; TV(pi0, pi*) = {tv0:.4} -> TV(pi, pi*) = {tv:.4} per prompt {tvs:?}",
        tr.dispatches_per_step()
    );
    // The RLHF objective at pi* per prompt is beta log Z(x); the rollout's rlhf_reward estimates it.
    let opt_value: f32 = (0..P)
        .map(|x| {
            let z: f64 = (0..R).map(|y| pi0[x * R + y] as f64 * (table[x * R + y] as f64 / beta as f64).exp()).sum();
            (beta as f64 * z.ln()) as f32
        })
        .sum::<f32>()
        / P as f32;
    eprintln!("objective at pi*: {opt_value:.4}, last rollout's objective/rlhf_reward {:.4}", m.get("objective/rlhf_reward"));
    assert!(tv0 > 0.2, "the reward must move the optimum well away from pi0 (TV {tv0})");
    assert!(tv < 0.05, "PPO should end within TV 0.05 of pi* (averaged over prompts), got {tv} (started at {tv0})");
}
