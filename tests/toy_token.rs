//! The token-level toy (src/toy/token.rs): a tiny GPT whose chosen and rejected responses share tokens. Checks the
//! metric bookkeeping on the CPU, then what a short run shows robustly on lavapipe (seeds 0 and 1, `EPOCHS` epochs):
//! under DPO the chosen sequence's log-prob falls along with the rejected one (far less), the fall sits in the
//! tokens the two responses share while the chosen's own distinct tokens rise, and SFT-DPO and Flex-DPO end with a
//! higher chosen log-prob than DPO on every seed. The full study (3 losses x 3 seeds, default epochs) is
//! examples/token_study.rs, which prints the table and its timing.

mod common;
use std::sync::OnceLock;

use common::*;
use dpo3d::toy::token::*;
use dpo3d::toy::ToyRecord;

/// Preference epochs of the budget runs: DPO's chosen fall shows by epoch 30-60 on every seed tried (0-2).
const EPOCHS: usize = 60;
const SEEDS: u64 = 2;

#[test]
fn should_find_the_unseen_tokens_and_fit_the_pairs_into_the_context() {
    assert_eq!(unseen_tokens(), vec![1, 2, 3, 4, 5, 14, 15]);
    let batch = token_batch().unwrap();
    assert_eq!((batch.b, batch.t), (4, TOKEN_T));
    for (p, c, r) in TOKEN_PAIRS {
        assert!((4..=6).contains(&c.len()) && (4..=6).contains(&r.len()) && (1..=2).contains(&p.len()));
        assert_eq!((*c.last().unwrap(), *r.last().unwrap()), (EOS, EOS));
        let same = c.iter().zip(r.iter()).filter(|(a, b)| a == b).count();
        assert!(same >= c.len() - 2, "chosen {c:?} and rejected {r:?} should share all but one or two tokens");
    }
}

#[test]
fn should_split_chosen_positions_into_shared_prefix_shared_after_and_distinct() {
    // Every target log-prob -1 and a uniform next-token distribution: each metric counts its positions.
    // Pairs (prefix, after, distinct chosen, distinct rejected): (2,2,1,1) (0,3,1,1) (1,3,2,2) (3,1,1,1).
    let batch = token_batch().unwrap();
    let n = 2 * batch.b * batch.t;
    let logps = vec![-1.0f32; n];
    let log_probs = vec![-(TOKEN_VOCAB as f32).ln(); n * TOKEN_VOCAB];
    let m: std::collections::HashMap<_, _> = token_metrics(&batch, &logps, &log_probs).into_iter().collect();
    let want = [
        ("token/shared_prefix_logp_chosen", -6.0 / 4.0),
        ("token/shared_after_logp_chosen", -9.0 / 4.0),
        ("token/shared_logp_chosen", -15.0 / 4.0),
        ("token/shared_after_logp_rejected", -9.0 / 4.0),
        ("token/distinct_logp_chosen", -5.0 / 4.0),
        ("token/distinct_logp_rejected", -5.0 / 4.0),
        ("token/unseen_mass", 7.0 / 16.0),
        ("token/unseen_mass_chosen", 7.0 / 16.0),
        ("token/unseen_mass_rejected", 7.0 / 16.0),
        ("token/other_mass_chosen", 8.0 / 16.0), // 1 - target 1/16 - unseen 7/16
        ("token/logp_chosen_min", -6.0),         // the longest chosen response
        ("token/logp_rejected_max", -4.0),       // the shortest rejected response
    ];
    for (k, v) in want {
        assert!((m[k] - v).abs() < 1e-5, "{k}: got {} want {v}", m[k]);
    }
}

#[test]
fn should_name_the_study_runs_and_round_trip_the_config() {
    let cfgs = token_study_configs(3, 50);
    let names: Vec<String> = cfgs.iter().map(|c| c.run_name()).collect();
    assert_eq!(names.len(), 9);
    for n in ["token-dpo-seed0", "token-flex-dpo-seed2", "token-sft-dpo-seed1"] {
        assert!(names.iter().any(|x| x == n), "missing run {n} in {names:?}");
    }
    assert!(cfgs.iter().all(|c| c.epochs == 50));
    let json = serde_json::to_string(&cfgs[4]).unwrap();
    assert_eq!(serde_json::from_str::<TokenToyConfig>(&json).unwrap(), cfgs[4]);
    let partial: TokenToyConfig =
        serde_json::from_str(r#"{"loss": {"loss_type": "sft-dpo", "gamma": 0.1}, "seed": 4}"#).unwrap();
    assert_eq!((partial.seed, partial.width, partial.loss.name()), (4, 32, "sft-dpo"));
    assert!(TokenToyConfig { log_every: 0, ..Default::default() }.validate().is_err());
}

/// (loss name, seed) -> records, for the budget runs: one SFT phase per seed, shared by the three losses.
fn budget_runs() -> &'static Vec<(String, u64, Vec<ToyRecord>)> {
    static RUNS: OnceLock<Vec<(String, u64, Vec<ToyRecord>)>> = OnceLock::new();
    RUNS.get_or_init(|| {
        let gpu = gpu();
        let t0 = std::time::Instant::now();
        let mut out = Vec::new();
        for seed in 0..SEEDS {
            let pi0 =
                pollster::block_on(token_sft_phase(&gpu, &TokenToyConfig { seed, ..Default::default() })).unwrap();
            for cfg in token_study_configs(SEEDS, EPOCHS).into_iter().filter(|c| c.seed == seed) {
                let cfg = TokenToyConfig { log_every: EPOCHS / 4, ..cfg };
                let recs = pollster::block_on(run_token_toy_from(&gpu, &cfg, &pi0)).unwrap();
                assert_eq!(recs.first().unwrap().epoch, 0);
                assert_eq!(recs.last().unwrap().epoch, EPOCHS);
                assert!(recs.iter().all(|r| r.run == cfg.run_name()
                    && r.scenario == 0
                    && r.seed == seed
                    && r.loss_type == cfg.loss.name()));
                out.push((cfg.loss.name().to_string(), seed, recs));
            }
        }
        eprintln!(
            "token toy budget runs: {SEEDS} seeds x 3 losses x {EPOCHS} epochs in {:.1} s",
            t0.elapsed().as_secs_f32()
        );
        out
    })
}

fn run<'a>(loss: &str, seed: u64) -> &'a [ToyRecord] {
    &budget_runs().iter().find(|(l, s, _)| l == loss && *s == seed).expect("budget run").2
}

#[test]
fn should_start_preference_training_from_a_pi0_that_likes_both_responses() {
    for seed in 0..SEEDS {
        let r0 = &run("dpo", seed)[0];
        // Each pair differs in one or two tokens, SFT splits those about evenly: about log(1/2) per sequence.
        for k in ["logps/chosen", "logps/rejected"] {
            assert!((-1.0..-0.45).contains(&r0.get(k)), "seed {seed}: pi0 {k} = {}", r0.get(k));
        }
        assert!(
            r0.get("token/shared_logp_chosen") > -0.05,
            "seed {seed}: shared tokens should be near-certain under pi0"
        );
        assert!(r0.get("token/unseen_mass") < 0.01, "seed {seed}: pi0 unseen mass {}", r0.get("token/unseen_mass"));
        assert!((r0.get("loss") - std::f32::consts::LN_2).abs() < 1e-4, "seed {seed}: DPO loss at pi = pi0 is ln 2");
    }
}

#[test]
fn should_lower_the_chosen_likelihood_under_dpo_through_its_shared_tokens() {
    for seed in 0..SEEDS {
        let recs = run("dpo", seed);
        let (a, b) = (&recs[0], recs.last().unwrap());
        let fall = |k: &str| a.get(k) - b.get(k);
        let (fc, fr) = (fall("logps/chosen"), fall("logps/rejected"));
        eprintln!(
            "seed {seed}: DPO chosen {:.3} -> {:.3}, rejected {:.3} -> {:.3}",
            a.get("logps/chosen"),
            b.get("logps/chosen"),
            a.get("logps/rejected"),
            b.get("logps/rejected")
        );
        // Property 3 in token form: the chosen sequence falls too ...
        assert!(fc > 1.0, "seed {seed}: chosen log-prob fell by only {fc}");
        // ... property 1: the rejected one falls far faster ...
        assert!(fr > 3.0 * fc, "seed {seed}: rejected fell {fr}, chosen {fc}");
        // ... and the chosen's fall is in the tokens it shares with the rejected response, while DPO does raise the
        // chosen's own distinct tokens.
        assert!(
            fall("token/shared_logp_chosen") > fc,
            "seed {seed}: shared part fell {}, whole {fc}",
            fall("token/shared_logp_chosen")
        );
        assert!(
            fall("token/distinct_logp_chosen") < 0.0,
            "seed {seed}: distinct chosen tokens fell {}",
            fall("token/distinct_logp_chosen")
        );
        assert!(b.get("rewards/accuracies") == 1.0);
    }
}

#[test]
fn should_keep_the_chosen_likelihood_higher_with_sft_dpo_and_flex_dpo_than_with_dpo() {
    for seed in 0..SEEDS {
        let end = |loss: &str| run(loss, seed).last().unwrap().get("logps/chosen");
        let (dpo, sft_dpo, flex) = (end("dpo"), end("sft-dpo"), end("flex-dpo"));
        eprintln!("seed {seed}: final chosen log-prob dpo {dpo:.3}, sft-dpo {sft_dpo:.3}, flex-dpo {flex:.3}");
        assert!(sft_dpo > dpo + 1.0, "seed {seed}: sft-dpo {sft_dpo} vs dpo {dpo}");
        assert!(flex > dpo + 1.0, "seed {seed}: flex-dpo {flex} vs dpo {dpo}");
        // Both fixes still push the rejected response down.
        for loss in ["sft-dpo", "flex-dpo"] {
            let r = run(loss, seed);
            assert!(
                r.last().unwrap().get("logps/rejected") < r[0].get("logps/rejected") - 5.0,
                "seed {seed}: {loss} left the rejected response up"
            );
        }
    }
}
