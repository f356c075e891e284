//! The paper's toy study at small budgets, over several seeds (the full-budget version is `examples/toy3d`):
//! the three 3D-properties under DPO, and the two fixes (Flex-DPO, SFT-DPO) against DPO on the same seeds.
//! All runs share one computation (OnceLock), so each property is its own test without retraining.

mod common;
use std::sync::OnceLock;

use dpo3d::objectives::PreferenceLoss;
use dpo3d::toy::{session::sft_phase, ToyConfig, ToyMethod, ToyRecord, ToySession};

const SEEDS: [u64; 3] = [0, 1, 2];
const EPOCHS: usize = 300;

struct Runs {
    dpo: Vec<Vec<ToyRecord>>,
    flex: Vec<Vec<ToyRecord>>,
    sft_dpo: Vec<Vec<ToyRecord>>,
}

fn cfg(loss: PreferenceLoss, seed: u64) -> ToyConfig {
    ToyConfig { method: ToyMethod::Preference { loss }, seed, epochs: EPOCHS, log_every: 25, ..Default::default() }
}

fn runs() -> &'static Runs {
    static RUNS: OnceLock<Runs> = OnceLock::new();
    RUNS.get_or_init(|| {
        let gpu = common::gpu();
        let mut r = Runs { dpo: vec![], flex: vec![], sft_dpo: vec![] };
        for seed in SEEDS {
            let base = cfg(PreferenceLoss::Dpo { beta: 0.1 }, seed);
            let sft = pollster::block_on(sft_phase(&gpu, &base)).unwrap();
            let run = |c: ToyConfig| {
                let mut s = pollster::block_on(ToySession::with_sft(&gpu, &c, sft.clone())).unwrap();
                pollster::block_on(s.run(&gpu)).unwrap()
            };
            r.dpo.push(run(base.clone()));
            r.flex.push(run(cfg(PreferenceLoss::FlexDpo { beta_pos: 0.1, beta_neg: 0.05 }, seed)));
            r.sft_dpo.push(run(cfg(PreferenceLoss::SftDpo { beta: 0.1, gamma: 0.1 }, seed)));
        }
        r
    })
}

fn first_last(rs: &[ToyRecord], key: &str) -> (f32, f32) {
    (rs.first().unwrap().get(key), rs.last().unwrap().get(key))
}

#[test]
fn should_show_the_drastic_drop_of_the_rejected_likelihood() {
    for (seed, rs) in SEEDS.iter().zip(&runs().dpo) {
        let (c0, c1) = first_last(rs, "toy/logp_chosen_avg");
        let (r0, r1) = first_last(rs, "toy/logp_rejected_avg");
        assert!(r0 - r1 > 30.0, "seed {seed}: rejected log-prob fell only {} nats", r0 - r1);
        assert!((c1 - c0).abs() < 3.0, "seed {seed}: chosen log-prob moved {} nats", c1 - c0);
        assert!(
            r1.is_finite() && r1 < -60.0,
            "seed {seed}: rejected log-prob {r1} should be finite and far below f32 range of probabilities"
        );
    }
}

#[test]
fn should_show_degradation_of_the_chosen_gradient() {
    for (seed, rs) in SEEDS.iter().zip(&runs().dpo) {
        let (gc0, gc1) = first_last(rs, "grad/log10_chosen");
        let (gr0, gr1) = first_last(rs, "grad/log10_rejected");
        assert!((gc0 - gr0).abs() < 1e-3, "seed {seed}: gradients should start equal ({gc0} vs {gr0})");
        assert!(gc0 - gc1 > 2.0, "seed {seed}: chosen gradient shrank only {} orders of magnitude", gc0 - gc1);
        assert!(gr1 - gr0 > 20.0, "seed {seed}: rejected gradient grew only {} orders of magnitude", gr1 - gr0);
    }
}

/// Mean over seeds of `key` at each logged epoch.
fn seed_mean(runs: &[Vec<ToyRecord>], key: &str) -> Vec<f32> {
    let n = runs[0].len();
    (0..n).map(|i| runs.iter().map(|r| r[i].get(key)).sum::<f32>() / runs.len() as f32).collect()
}

#[test]
fn should_show_dispersion_on_the_seed_mean() {
    // Chosen probability rises, then falls back from its peak; the mass on responses in no pair of the prompt
    // (unseen) first shrinks, then grows again: probability spreads away from the chosen responses.
    let chosen = seed_mean(&runs().dpo, "toy/chosen_avg");
    let unseen = seed_mean(&runs().dpo, "toy/unseen_avg");
    let peak = chosen.iter().cloned().fold(0.0, f32::max);
    let last = *chosen.last().unwrap();
    assert!(peak > chosen[0] + 0.1, "chosen never rose: {chosen:?}");
    assert!(last < 0.95 * peak, "chosen did not fall back from its peak {peak}: {chosen:?}");
    let min_u = unseen.iter().cloned().fold(1.0, f32::min);
    assert!(
        *unseen.last().unwrap() > min_u + 0.005,
        "unseen mass did not grow back from its minimum {min_u}: {unseen:?}"
    );
}

#[test]
fn should_end_with_higher_chosen_and_less_unseen_mass_with_the_fixes() {
    let r = runs();
    for (i, seed) in SEEDS.iter().enumerate() {
        let d = r.dpo[i].last().unwrap();
        for (name, fix) in [("flex-dpo", &r.flex[i]), ("sft-dpo", &r.sft_dpo[i])] {
            let f = fix.last().unwrap();
            assert!(
                f.get("toy/chosen_avg") > d.get("toy/chosen_avg"),
                "seed {seed}: {name} chosen {} <= DPO {}",
                f.get("toy/chosen_avg"),
                d.get("toy/chosen_avg")
            );
            assert!(
                f.get("toy/unseen_avg") < d.get("toy/unseen_avg"),
                "seed {seed}: {name} unseen {} >= DPO {}",
                f.get("toy/unseen_avg"),
                d.get("toy/unseen_avg")
            );
        }
    }
}

#[test]
fn should_keep_ppo_rejected_probability_above_its_kl_optimum_floor() {
    // RM + PPO optimises r - beta KL(pi || pi0), whose optimum pi*(y|x) ~ pi0(y|x) exp(r(x,y)/beta) keeps every
    // response's probability at a finite floor; DPO's rejected probability has no such floor.
    use dpo3d::reference::{
        mlp::MlpRef,
        ppo::{rlhf_optimum, total_variation},
    };
    use dpo3d::toy::{session::train_toy_reward_model, PAIRS, PROMPTS, RESPONSES};
    let gpu = common::gpu();
    let (kl_coef, rm_epochs, seed) = (1.0f32, 100usize, 0u64);
    let cfg = ToyConfig {
        method: ToyMethod::Ppo { kl_coef, rm_epochs, samples_per_prompt: 16 },
        seed,
        epochs: 150,
        log_every: 50,
        ..Default::default()
    };
    let sft = pollster::block_on(sft_phase(&gpu, &cfg)).unwrap();
    // The same reward model the session trains (same seed, deterministic), evaluated on every (prompt, response).
    let (rm_cfg, rm_params, _) = pollster::block_on(train_toy_reward_model(&gpu, seed, rm_epochs)).unwrap();
    let items: Vec<u32> = (0..(PROMPTS * RESPONSES) as u32).collect();
    let rewards = MlpRef::from_params(&rm_cfg, rm_params).forward(&items, &vec![0; items.len()]).scalar.unwrap();
    let optimum = rlhf_optimum(&sft.1, &rewards, kl_coef, RESPONSES);
    let mut s = pollster::block_on(ToySession::with_sft(&gpu, &cfg, sft)).unwrap();
    let records = pollster::block_on(s.run(&gpu)).unwrap();
    let probs = &s.members[0].snapshots.last().unwrap().1;
    for &(x, _, r) in &PAIRS {
        let (got, floor) = (probs[x * RESPONSES + r].ln(), optimum[x * RESPONSES + r].ln());
        assert!(got > floor - 0.5, "prompt {x}: PPO's rejected log-prob {got} fell below its KL-optimum {floor}");
    }
    let tv: f32 = total_variation(probs, &optimum, RESPONSES).iter().sum::<f32>() / PROMPTS as f32;
    assert!(tv < 0.1, "PPO is {tv} (total variation) from the KL-regularised optimum");
    let ppo_rej = records.last().unwrap().get("toy/logp_rejected_avg");
    for (seed, dpo) in SEEDS.iter().zip(&runs().dpo) {
        let dpo_rej = dpo.last().unwrap().get("toy/logp_rejected_avg");
        assert!(ppo_rej - dpo_rej > 20.0, "seed {seed}: PPO rejected log-prob {ppo_rej} not far above DPO's {dpo_rej}");
    }
}
