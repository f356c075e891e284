//! RLHF-PPO end to end on the GPU: on the paper's toy bandit with a known reward, PPO reaches the KL-regularised
//! optimum pi*(y|x) ∝ pi0(y|x) exp(r(x,y) / beta) (small total-variation distance); on a tiny GPT with a rule-based
//! reward computed on the GPU (count of one token), the mean score rises to the analytic optimum's while the KL to
//! the reference settles near the optimum's KL and stays bounded. Plus determinism for a seed, the reward-model and
//! shared-trunk variants, generation (temperature, top-k, end of sequence) against the CPU reference. Seeds, step counts and thresholds
//! are fixed. (What the KV cache saves in generation is measured by examples/generation_cost.rs.)

mod common;
use common::*;
use dpo3d::model::init::{gpt_params, mlp_params};
use dpo3d::model::{GptConfig, MlpConfig};
use dpo3d::objectives::ppo::{PpoConfig, ValueModel};
use dpo3d::reference::gpt::GptRef;
use dpo3d::reference::ppo as cpu;
use dpo3d::rng::Rng;
use dpo3d::train::ppo::{gpt_value_init, mlp_value_init, GptRewardSource, PpoGptTrainer, PpoToyTrainer, RewardSource};
use dpo3d::train::OptimConfig;
use std::time::Instant;

const P: usize = 4;
const R: usize = 10;

fn toy_cfg() -> MlpConfig {
    MlpConfig { prompts: P, hidden: 32, responses: R, first_bias: false, scalar_head: false, depth: 2 }
}

/// A known reward r(x, y) in [0, 0.3): with beta = 0.1 the optimum is far from pi0 but not degenerate.
fn reward_table() -> Vec<f32> {
    let mut rng = Rng::new(17);
    (0..P * R).map(|_| 0.3 * rng.uniform()).collect()
}

fn toy_ppo(beta: f32) -> PpoConfig {
    PpoConfig { kl_coef: beta, seed: 1, num_mini_batches: 1, ..Default::default() }
}

fn toy_opt() -> OptimConfig {
    OptimConfig { lr: 3e-3, ..Default::default() }
}

#[test]
fn should_approach_the_kl_regularised_optimum_on_the_toy_bandit() {
    let gpu = gpu();
    let beta = 0.1;
    let cfg = toy_cfg();
    let pi0_params = mlp_params(&cfg, 3).unwrap();
    let table = reward_table();
    let rows = 64;
    let mut tr = PpoToyTrainer::new(
        &gpu,
        &toy_ppo(beta),
        &toy_opt(),
        &cfg,
        &pi0_params,
        &mlp_value_init(&cfg, &pi0_params),
        RewardSource::Table(table.clone()),
        rows,
    )
    .unwrap();
    let pi0 = tr.policy_probs_blocking(&gpu).unwrap();
    let star = cpu::rlhf_optimum(&pi0, &table, beta, R);
    let tv0: f32 = cpu::total_variation(&pi0, &star, R).iter().sum::<f32>() / P as f32;
    let steps = 100;
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
    eprintln!(
        "objective at pi*: {opt_value:.4}, last rollout's objective/rlhf_reward {:.4}",
        m.get("objective/rlhf_reward")
    );
    assert!(tv0 > 0.2, "the reward must move the optimum well away from pi0 (TV {tv0})");
    assert!(tv < 0.05, "PPO should end within TV 0.05 of pi* (averaged over prompts), got {tv} (started at {tv0})");
}

fn tiny_gpt() -> GptConfig {
    GptConfig { vocab_size: 8, context: 8, layers: 1, heads: 2, width: 32, scalar_head: false }
}

/// B prompts of Lp random tokens each.
fn random_prompts(rng: &mut Rng, b: usize, lp: usize, v: usize) -> Vec<Vec<u32>> {
    (0..b).map(|_| (0..lp).map(|_| rng.below(v as u32)).collect()).collect()
}

/// B prompts of 1 to `max_lp` random tokens (row r has 1 + r % max_lp).
fn ragged_prompts(rng: &mut Rng, b: usize, max_lp: usize, v: usize) -> Vec<Vec<u32>> {
    (0..b).map(|r| (0..1 + r % max_lp).map(|_| rng.below(v as u32)).collect()).collect()
}

#[test]
fn should_raise_a_rule_based_score_with_bounded_kl_on_a_tiny_gpt() {
    let gpu = gpu();
    let cfg = tiny_gpt();
    let (b, lp, token) = (16usize, 2usize, 3u32);
    let beta: f32 = 0.5;
    let ppo = PpoConfig { kl_coef: beta, response_length: 6, num_mini_batches: 1, seed: 5, ..Default::default() };
    let opt = OptimConfig { lr: 1e-3, ..Default::default() };
    let pi0 = gpt_params(&cfg, 9).unwrap();
    let mut tr = PpoGptTrainer::new(
        &gpu,
        &ppo,
        &opt,
        &cfg,
        &pi0,
        &gpt_value_init(&cfg, &pi0),
        GptRewardSource::CountToken { token, scale: 1.0 },
        b,
        lp,
    )
    .unwrap();
    // The optimum of E[count] - beta KL for a near-uniform pi0 is per token pi*(token) = e^(1/beta) / (e^(1/beta) + V - 1).
    let v = cfg.vocab_size as f64;
    let q = (1.0 / beta as f64).exp() / ((1.0 / beta as f64).exp() + v - 1.0);
    let kl_tok = q * (q * v).ln() + (1.0 - q) * ((1.0 - q) / (v - 1.0) * v).ln();
    let (score_star, kl_star) = (6.0 * q, 6.0 * kl_tok);
    let mut rng = Rng::new(1);
    let steps = 30;
    let t0 = Instant::now();
    let mut hist = Vec::new();
    for s in 0..steps {
        let m = tr.step_blocking(&gpu, &random_prompts(&mut rng, b, lp, cfg.vocab_size)).unwrap();
        if s % 10 == 0 || s + 1 == steps {
            eprintln!(
                "step {:3} scores {:.3} kl {:.3} rlhf_reward {:.3} entropy {:.3} approxkl {:.4} clipfrac {:.3} loss/value {:.4} val/clipfrac {:.3}",
                m.step,
                m.get("objective/scores"),
                m.get("objective/kl"),
                m.get("objective/rlhf_reward"),
                m.get("policy/entropy_avg"),
                m.get("policy/approxkl_avg"),
                m.get("policy/clipfrac_avg"),
                m.get("loss/value_avg"),
                m.get("val/clipfrac_avg")
            );
        }
        hist.push((m.get("objective/scores"), m.get("objective/kl")));
    }
    let secs = t0.elapsed().as_secs_f32();
    // The last step's score is the rule applied to the sequences it generated (still in the policy's inputs).
    let (tokens, mask) = (tr.policy.tokens.to_vec_u32(&gpu).unwrap(), tr.ppo.mask.to_vec(&gpu).unwrap());
    let t = tr.seq_len();
    let mut counts = vec![0.0f32; b];
    cpu::count_token_reward(&mut counts, &tokens, &mask, b, t, token, 1.0);
    let last_score = counts.iter().sum::<f32>() / b as f32;
    assert!(
        (last_score - hist.last().unwrap().0).abs() < 1e-5,
        "objective/scores {} vs the rule on the rollout {last_score}",
        hist.last().unwrap().0
    );

    let mean = |xs: &[(f32, f32)], f: fn(&(f32, f32)) -> f32| xs.iter().map(f).sum::<f32>() / xs.len() as f32;
    let (first, last) = (&hist[..3], &hist[hist.len() - 10..]);
    let (s0, s1, kl1) = (mean(first, |x| x.0), mean(last, |x| x.0), mean(last, |x| x.1));
    let kl_max = hist.iter().map(|x| x.1).fold(f32::MIN, f32::max);
    eprintln!(
        "tiny GPT: {steps} PPO steps ({} dispatches each) in {secs:.1} s; mean score (first 3 steps) {s0:.3} -> (last 10) {s1:.3} \
         (optimum {score_star:.3}); KL (last 10) {kl1:.3}, max {kl_max:.3} (optimum's KL {kl_star:.3})",
        tr.dispatches_per_step()
    );
    assert!(s1 > s0 + 1.0, "the mean score should rise by more than 1 (from {s0} to {s1})");
    assert!(
        kl1 < 1.5 * kl_star as f32,
        "the KL should settle near the optimum's ({kl_star:.3}), got {kl1} over the last 10 steps"
    );
    assert!(kl_max < 2.5 * kl_star as f32, "the KL should stay bounded (max {kl_max}, optimum's {kl_star:.3})");
}

/// A toy reward model that encodes `table` exactly: MLP over the P*R one-hot pair input with identity hidden layers
/// (H = P*R) and score.weight = table, so its scalar is table[x * R + y].
fn table_reward_model(table: &[f32]) -> (MlpConfig, Vec<f32>) {
    let n = P * R;
    let cfg = MlpConfig { prompts: n, hidden: n, responses: 1, first_bias: false, scalar_head: true, depth: 2 };
    let eye: Vec<f32> = (0..n * n).map(|i| if i / n == i % n { 1.0 } else { 0.0 }).collect();
    let mut params = Vec::new();
    params.extend_from_slice(&eye); // fc1.weight (H, P*R)
    params.extend_from_slice(&eye); // fc2.weight (H, H)
    params.extend(vec![0.0; n]); // fc2.bias
    params.extend(vec![0.0; n]); // fc3.weight (1, H)
    params.push(0.0); // fc3.bias
    params.extend_from_slice(table); // score.weight (1, H)
    params.push(0.0); // score.bias
    (cfg, params)
}

#[test]
fn should_be_deterministic_for_a_seed_and_score_with_a_reward_model_like_its_table() {
    let gpu = gpu();
    let cfg = toy_cfg();
    let pi0 = mlp_params(&cfg, 3).unwrap();
    let table = reward_table();
    let run = |seed: u64, reward: RewardSource| -> Vec<Vec<(String, f32)>> {
        let ppo = PpoConfig { seed, num_mini_batches: 2, ..toy_ppo(0.1) };
        let mut tr =
            PpoToyTrainer::new(&gpu, &ppo, &toy_opt(), &cfg, &pi0, &mlp_value_init(&cfg, &pi0), reward, 32).unwrap();
        (0..3).map(|_| tr.step_blocking(&gpu).unwrap().values).collect()
    };
    let a = run(7, RewardSource::Table(table.clone()));
    let b = run(7, RewardSource::Table(table.clone()));
    assert_eq!(a, b, "same seed, same metrics");
    let c = run(8, RewardSource::Table(table.clone()));
    assert_ne!(a[0], c[0], "another seed samples other responses");
    let (rm_cfg, rm_params) = table_reward_model(&table);
    let d = run(7, RewardSource::Model { cfg: rm_cfg, params: rm_params });
    for (x, y) in a.iter().zip(&d) {
        for ((n, u), (_, w)) in x.iter().zip(y) {
            assert!((u - w).abs() <= 1e-6 * (1.0 + u.abs()), "{n}: table {u} vs reward model {w}");
        }
    }
}

#[test]
fn should_approach_the_optimum_with_a_shared_trunk_value_head() {
    let gpu = gpu();
    let (beta, cfg) = (0.1, toy_cfg());
    let pi0_params = mlp_params(&cfg, 3).unwrap();
    let table = reward_table();
    let ppo = PpoConfig { value_model: ValueModel::SharedTrunk, ..toy_ppo(beta) };
    let mut tr = PpoToyTrainer::new(
        &gpu,
        &ppo,
        &toy_opt(),
        &cfg,
        &pi0_params,
        &mlp_value_init(&cfg, &pi0_params),
        RewardSource::Table(table.clone()),
        64,
    )
    .unwrap();
    assert!(tr.value.is_none() && tr.policy.scalar.is_some(), "a shared trunk means one model with a scalar head");
    let pi0 = tr.policy_probs_blocking(&gpu).unwrap();
    let star = cpu::rlhf_optimum(&pi0, &table, beta, R);
    let steps = 60;
    let mut m = None;
    for _ in 0..steps {
        m = Some(tr.step_blocking(&gpu).unwrap());
    }
    let pi = tr.policy_probs_blocking(&gpu).unwrap();
    let tv: f32 = cpu::total_variation(&pi, &star, R).iter().sum::<f32>() / P as f32;
    let m = m.unwrap();
    eprintln!("shared trunk: {steps} steps, TV(pi, pi*) = {tv:.4}, loss/value {:.5}", m.get("loss/value_avg"));
    assert!(tv < 0.08, "shared-trunk PPO should end near pi* (TV {tv})");
}

#[test]
fn should_generate_like_the_reference_gpt_and_sampler_with_end_of_sequence() {
    use dpo3d::ops::sampling::rng_words;
    use dpo3d::reference::sampling as cpu_s;
    let gpu = gpu();
    let cfg = tiny_gpt();
    let (b, lp, eos) = (5usize, 3usize, 0u32);
    let mut reference = GptRef::from_params(&cfg, gpt_params(&cfg, 4).unwrap());
    // sharpen the next-token distributions so that responses differ and some end early
    for w in reference.tensor_mut("transformer.wte.weight") {
        *w *= 40.0;
    }
    let ppo = PpoConfig {
        response_length: 5,
        temperature: 0.8,
        top_k: 5,
        stop_token_id: Some(eos),
        seed: 21,
        ..Default::default()
    };
    let mut tr = PpoGptTrainer::new(
        &gpu,
        &ppo,
        &OptimConfig::default(),
        &cfg,
        &reference.params,
        &gpt_value_init(&cfg, &reference.params),
        GptRewardSource::CountToken { token: 3, scale: 1.0 },
        b,
        lp,
    )
    .unwrap();
    let t = tr.seq_len();
    let mut prng = Rng::new(2);
    let mut ended = 0;
    for call in 1..=3u32 {
        // prompts of 1 to Lp tokens: each row generates after its own prompt
        let prompts = ragged_prompts(&mut prng, b, lp, cfg.vocab_size);
        let lens: Vec<u32> = prompts.iter().map(|p| p.len() as u32).collect();
        let (tokens, mask) = tr.generate_blocking(&gpu, &prompts).unwrap();
        // CPU replay: reference forward, reference sampler, reference append
        let mut want = vec![0u32; b * t];
        let mut targets = vec![0u32; b * t];
        let mut wmask = vec![0.0f32; b * t];
        for (r, p) in prompts.iter().enumerate() {
            want[r * t..r * t + p.len()].copy_from_slice(p);
        }
        for s in 0..ppo.response_length {
            let acts = reference.forward(&want, &vec![0; b * t], b, t);
            let mut sampled = vec![0u32; b];
            cpu_s::sample_ragged(&mut sampled, &acts.logits, rng_words(21, call), &lens, t, cfg.vocab_size, s, 0.8, 5);
            cpu_s::append_ragged(&mut want, &mut targets, &mut wmask, &sampled, &lens, t, s, Some(eos));
        }
        assert_eq!(tokens, want, "generation {call}: GPU tokens vs CPU replay");
        assert_eq!(mask, wmask, "generation {call}: response mask");
        for (r, p) in prompts.iter().enumerate() {
            let lp = p.len();
            let resp = &tokens[r * t + lp..r * t + lp + ppo.response_length];
            let m = &mask[r * t + lp - 1..r * t + lp - 1 + ppo.response_length];
            assert!(mask[r * t..r * t + lp - 1].iter().all(|&x| x == 0.0), "row {r}: no mask on the prompt");
            if let Some(k) = resp.iter().position(|&x| x == eos) {
                ended += (k + 1 < resp.len()) as usize;
                assert!(resp[k..].iter().all(|&x| x == eos), "row {r}: after the stop token only padding");
                assert!(
                    m[..=k].iter().all(|&x| x == 1.0) && m[k + 1..].iter().all(|&x| x == 0.0),
                    "row {r}: mask {m:?} for eos at {k}"
                );
            } else {
                assert!(m.iter().all(|&x| x == 1.0), "row {r}: a full response is all in the mask");
            }
        }
    }
    assert!(ended > 0, "the case should contain responses that stop early");
}

#[test]
fn should_score_with_a_reward_model_gpt_at_the_last_response_token_with_a_shared_trunk() {
    let gpu = gpu();
    let cfg = tiny_gpt();
    let (b, lp) = (6usize, 2usize);
    let pi0 = gpt_params(&cfg, 11).unwrap();
    let rm_cfg = GptConfig { scalar_head: true, ..cfg.clone() };
    let mut rm = GptRef::from_params(&rm_cfg, gpt_params(&rm_cfg, 12).unwrap());
    for w in rm.tensor_mut("score.weight") {
        *w *= 50.0; // scores of order 1
    }
    let ppo = PpoConfig {
        response_length: 6,
        stop_token_id: Some(0),
        value_model: ValueModel::SharedTrunk,
        seed: 3,
        ..Default::default()
    };
    let reward = GptRewardSource::Model { cfg: rm_cfg.clone(), params: rm.params.clone() };
    let mut tr =
        PpoGptTrainer::new(&gpu, &ppo, &OptimConfig::default(), &cfg, &pi0, &gpt_value_init(&cfg, &pi0), reward, b, lp)
            .unwrap();
    assert!(tr.value.is_none() && tr.policy.scalar.is_some());
    let mut rng = Rng::new(4);
    for _ in 0..2 {
        let m = tr.step_blocking(&gpu, &ragged_prompts(&mut rng, b, lp, cfg.vocab_size)).unwrap();
        let t = tr.seq_len();
        let (tokens, mask) = (tr.policy.tokens.to_vec_u32(&gpu).unwrap(), tr.ppo.mask.to_vec(&gpu).unwrap());
        let acts = rm.forward(&tokens, &vec![0; b * t], b, t);
        let mut scores = vec![0.0f32; b];
        cpu::score_gather(&mut scores, acts.scalar.as_ref().unwrap(), &mask, b, t, 1);
        let want = scores.iter().sum::<f32>() / b as f32;
        assert!(
            (m.get("objective/scores") - want).abs() < 1e-4 * (1.0 + want.abs()),
            "objective/scores {} vs the reference reward model {want}",
            m.get("objective/scores")
        );
        assert!(scores.iter().any(|s| s.abs() > 0.05), "the reward model should score something: {scores:?}");
    }
}

#[test]
fn should_default_to_trl_hyperparameters() {
    let d = PpoConfig::default();
    assert_eq!(
        (d.cliprange, d.cliprange_value, d.vf_coef, d.kl_coef, d.gamma, d.lam, d.num_ppo_epochs),
        (0.2, 0.2, 0.1, 0.05, 1.0, 0.95, 4)
    );
    assert!(d.whiten_advantages && !d.whiten_rewards && d.entropy_coef == 0.0);
    let parsed: PpoConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(parsed, d);
    let k3: PpoConfig = serde_json::from_str(
        r#"{"kl_estimator": "k3", "value_model": "shared-trunk", "top_k": 5, "stop_token_id": 2}"#,
    )
    .unwrap();
    assert_eq!(k3.kl_estimator, dpo3d::objectives::ppo::KlEstimator::K3);
    assert_eq!((k3.value_model, k3.top_k, k3.stop_token_id), (ValueModel::SharedTrunk, 5, Some(2)));
    assert!(PpoConfig { num_mini_batches: 3, ..d.clone() }.validate(16).is_err(), "minibatches must divide the rows");
}

/// A caller's scorer enters the rollout exactly where a GPU scorer's scores do: `step_scored` with a scorer that
/// counts a token gives the same metrics and the same updated policy as `step` with the GPU's token count, step after
/// step; a trainer built for external scores refuses `step`, and a scorer returning the wrong count is an error.
#[test]
fn should_train_on_external_scores_like_the_gpu_rule_that_computes_them() {
    let gpu = gpu();
    let cfg = tiny_gpt();
    let (b, lp, token) = (6usize, 3usize, 3u32);
    let ppo = PpoConfig { response_length: 5, stop_token_id: Some(0), seed: 8, ..Default::default() };
    let opt = OptimConfig { lr: 1e-3, ..Default::default() };
    let pi0 = gpt_params(&cfg, 13).unwrap();
    let build = |reward| PpoGptTrainer::new(&gpu, &ppo, &opt, &cfg, &pi0, &gpt_value_init(&cfg, &pi0), reward, b, lp);
    let mut gpu_rule = build(GptRewardSource::CountToken { token, scale: 0.5 }).unwrap();
    let mut external = build(GptRewardSource::External).unwrap();
    let mut rng = Rng::new(6);
    let mut calls = 0;
    for _ in 0..3 {
        let prompts = ragged_prompts(&mut rng, b, lp, cfg.vocab_size);
        let want = gpu_rule.step_blocking(&gpu, &prompts).unwrap();
        let mut count = |responses: &[Vec<u32>]| -> dpo3d::Result<Vec<f32>> {
            calls += 1;
            assert_eq!(responses.len(), b);
            assert!(responses.iter().all(|r| !r.is_empty() && r.len() <= 5));
            Ok(responses.iter().map(|r| 0.5 * r.iter().filter(|&&x| x == token).count() as f32).collect())
        };
        let got = external.step_scored_blocking(&gpu, &prompts, &mut count).unwrap();
        for ((k, a), (_, w)) in got.values.iter().zip(&want.values) {
            assert!((a - w).abs() <= 1e-5 * (1.0 + w.abs()), "{k}: external {a} vs GPU rule {w}");
        }
    }
    assert_eq!(calls, 3);
    let p1 = pollster::block_on(gpu_rule.policy.download_params(&gpu)).unwrap();
    let p2 = pollster::block_on(external.policy.download_params(&gpu)).unwrap();
    assert_eq!(p1, p2, "same scores, same updates");
    let prompts = ragged_prompts(&mut rng, b, lp, cfg.vocab_size);
    let e = external.step_blocking(&gpu, &prompts).unwrap_err().to_string();
    assert!(e.contains("step_scored"), "{e}");
    let e = external.step_scored_blocking(&gpu, &prompts, &mut |_: &[Vec<u32>]| Ok(vec![1.0; 2])).unwrap_err();
    assert!(e.to_string().contains("6 finite scores"), "{e}");
}
