//! RLHF-PPO (TRL's PPOTrainer) as an objective: the configuration (`PpoConfig`, TRL's names and defaults) and the
//! GPU buffers and plans between a rollout's forward passes and the policy/value backward passes:
//!
//!   rollout:   per-token KL penalty (k1 or k3) and rewards (score at the last response token)
//!              -> rollout metrics -> [reward whitening] -> GAE (gamma, lambda) -> [advantage whitening]
//!              -> one random permutation of the rows per PPO epoch (minibatch membership);
//!   per minibatch update (epoch e, minibatch m): token entropy -> clipped policy loss + clipped value loss
//!              (+ optional entropy bonus) -> d loss / d logps (policy) and d loss / d values (value head);
//!   end of step: train metrics (means over the updates).
//!
//! Sampling, reward scoring and the models' forward/backward passes belong to the trainers (`train::ppo`). The math is
//! in `shaders/ppo.wgsl` (mirror: `reference::ppo`).
//!
//! Choices where implementations differ (all documented in TRL terms):
//! - The value at position t is the value head's output at position t, aligned with log pi(target_t); the value after
//!   the last response token is 0 (TRL bootstraps from the position after the EOS).
//! - policy/approxkl, policy/clipfrac, val/ratio are masked means over response tokens (TRL's include padding, where
//!   the ratio is exactly 1).
//! - The entropy bonus (`entropy_coef`, TRL has none) acts on the importance-weighted sample estimate of the entropy,
//!   H_hat = mean over response tokens of -ratio * logp, because the models expose only d loss / d logp to an
//!   objective; its gradient is unbiased for d H / d theta. `policy/entropy_avg` reports the exact entropy of the full
//!   next-token distribution.

use serde::{Deserialize, Serialize};

use crate::gpu::{Gpu, Plan, Tensor};
use crate::model::Policy;
use crate::ops::ppo::{self as ops, PpoParams, MB_STATS, RO, ROLLOUT_STAT_NAMES, RO_ADV, RO_REWARD, TRAIN_STAT_NAMES};
use crate::ops::sampling;
use crate::{Error, Result};

/// Which per-token KL estimator enters the reward (TRL's `kl_estimator`), with r = pi_ref / pi:
/// k1 = -log r (unbiased, can be negative per token), k3 = (r - 1) - log r (unbiased, always >= 0, lower variance).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KlEstimator {
    K1,
    K3,
}

/// Where the value estimates come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValueModel {
    /// A separate model of the policy's architecture with a scalar head (TRL's default: its own optimizer-visible
    /// parameters, initialised by the caller, typically from the policy or the reward model).
    Separate,
    /// One model: the policy itself gets the scalar head (`scalar_head = true`) on its final hidden state, and the
    /// value loss trains the shared trunk too (loss = policy loss + vf_coef * value loss, one optimizer).
    SharedTrunk,
}

/// PPO hyper-parameters. Names and defaults are TRL's `PPOConfig` where TRL has the setting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PpoConfig {
    /// Policy ratio clip epsilon.
    pub cliprange: f32,
    /// Value clip epsilon (around the rollout's values).
    pub cliprange_value: f32,
    /// Weight of the value loss.
    pub vf_coef: f32,
    /// beta: weight of the per-token KL penalty in the reward.
    pub kl_coef: f32,
    pub kl_estimator: KlEstimator,
    /// GAE discount.
    pub gamma: f32,
    /// GAE lambda.
    pub lam: f32,
    /// Passes over each rollout batch.
    pub num_ppo_epochs: usize,
    /// Minibatches per epoch (must divide the batch's rows).
    pub num_mini_batches: usize,
    /// Whiten the per-token rewards before GAE (TRL: off by default).
    pub whiten_rewards: bool,
    /// Whiten the advantages (TRL always does).
    pub whiten_advantages: bool,
    /// Entropy bonus weight (0: none, as TRL).
    pub entropy_coef: f32,
    /// Sampling temperature (<= 0: greedy). The loss's log-probs are the model's own (temperature 1), so any other
    /// value makes the rollouts off-policy; TRL divides the logits by it everywhere, which the shared model
    /// backward passes here cannot, hence the default 1 (TRL: 0.7).
    pub temperature: f32,
    /// Sample among the k most likely tokens (0: all). Like temperature, anything else is off-policy for the loss.
    pub top_k: usize,
    pub value_model: ValueModel,
    /// Tokens generated per response (GPT).
    pub response_length: usize,
    /// End-of-sequence token (GPT): it ends a response (and is part of it); later positions hold it again as padding
    /// and are masked out.
    pub stop_token_id: Option<u32>,
    /// Seed of the GPU sampler and the minibatch permutations.
    pub seed: u64,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            cliprange: 0.2,
            cliprange_value: 0.2,
            vf_coef: 0.1,
            kl_coef: 0.05,
            kl_estimator: KlEstimator::K1,
            gamma: 1.0,
            lam: 0.95,
            num_ppo_epochs: 4,
            num_mini_batches: 1,
            whiten_rewards: false,
            whiten_advantages: true,
            entropy_coef: 0.0,
            temperature: 1.0,
            top_k: 0,
            value_model: ValueModel::Separate,
            response_length: 53,
            stop_token_id: None,
            seed: 0,
        }
    }
}

impl PpoConfig {
    pub fn validate(&self, rows: usize) -> Result<()> {
        let bad = |m: String| Err(Error::config(format!("PPO: {m}")));
        if self.num_ppo_epochs == 0 || self.num_mini_batches == 0 {
            return bad("num_ppo_epochs and num_mini_batches must be positive".into());
        }
        if rows == 0 || !rows.is_multiple_of(self.num_mini_batches) {
            return bad(format!("num_mini_batches ({}) must divide the batch's {rows} rows", self.num_mini_batches));
        }
        for (x, what) in [(self.cliprange, "cliprange"), (self.cliprange_value, "cliprange_value")] {
            if !(x > 0.0 && x.is_finite()) {
                return bad(format!("{what} must be positive, got {x}"));
            }
        }
        for (x, what) in [(self.vf_coef, "vf_coef"), (self.kl_coef, "kl_coef"), (self.entropy_coef, "entropy_coef")] {
            if !(x >= 0.0 && x.is_finite()) {
                return bad(format!("{what} must be >= 0, got {x}"));
            }
        }
        if !(0.0..=1.0).contains(&self.gamma) || !(0.0..=1.0).contains(&self.lam) {
            return bad(format!("gamma ({}) and lam ({}) must lie in [0, 1]", self.gamma, self.lam));
        }
        Ok(())
    }

    /// Minibatch updates per PPO step.
    pub fn updates_per_step(&self) -> usize {
        self.num_ppo_epochs * self.num_mini_batches
    }

    /// The shader parameter block for B rows of T positions.
    pub fn params(&self, b: usize, t: usize) -> PpoParams {
        PpoParams {
            b: b as u32,
            t: t as u32,
            kl_estimator: (self.kl_estimator == KlEstimator::K3) as u32,
            kl_coef: self.kl_coef,
            gamma: self.gamma,
            lam: self.lam,
            cliprange: self.cliprange,
            cliprange_value: self.cliprange_value,
            vf_coef: self.vf_coef,
            entropy_coef: self.entropy_coef,
            mb_size: (b / self.num_mini_batches.max(1)) as u32,
            ..Default::default()
        }
    }
}

/// One PPO step's metrics under TRL's names: `objective/kl`, `objective/entropy`, `objective/non_score_reward`,
/// `objective/rlhf_reward`, `objective/scores` (from the rollout), then `loss/policy_avg`, `loss/value_avg`,
/// `policy/clipfrac_avg`, `val/clipfrac_avg`, `policy/approxkl_avg`, `policy/entropy_avg`, `val/ratio`,
/// `val/ratio_var` (means over the step's minibatch updates).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PpoMetrics {
    pub step: u32,
    pub values: Vec<(String, f32)>,
}

impl PpoMetrics {
    pub fn from_raw(step: u32, rollout: &[f32], train: &[f32]) -> PpoMetrics {
        let values = ROLLOUT_STAT_NAMES
            .iter()
            .zip(rollout)
            .chain(TRAIN_STAT_NAMES.iter().zip(train))
            .map(|(n, v)| (n.to_string(), *v))
            .collect();
        PpoMetrics { step, values }
    }
    pub fn get(&self, name: &str) -> f32 {
        self.values.iter().find(|(n, _)| n == name).map(|x| x.1).unwrap_or(f32::NAN)
    }
}

/// The PPO objective's buffers and plans for a policy of B rows and T positions.
pub struct Ppo {
    pub cfg: PpoConfig,
    pub b: usize,
    pub t: usize,
    /// (2) u32 [seed, step], written by the host before each step (`set_step`).
    pub rng: Tensor,
    /// (B, T) 1.0 on response positions (the GPT trainer's generation writes it; the toy's is all ones).
    pub mask: Tensor,
    /// (B) the reward source's score of each row's response.
    pub scores: Tensor,
    /// (B, T, RO) rollout records (`ops::ppo::RO_*`).
    pub rollout: Tensor,
    /// (E, B) u32 each row's rank in each epoch's permutation.
    pub ranks: Tensor,
    /// (B, T) the policy's next-token entropy at the current parameters.
    pub entropy: Tensor,
    /// (E * M, MB_STATS) per-update statistics.
    pub stats: Tensor,
    /// (5) `ROLLOUT_STAT_NAMES`.
    pub rollout_metrics: Tensor,
    /// (8) `TRAIN_STAT_NAMES`.
    pub train_metrics: Tensor,
    /// Run after the rollout forwards (policy, reference, value) and the scoring.
    pub rollout_plan: Plan,
    /// One per minibatch update, in order (epoch-major): run after the policy's (and value model's) forward, before
    /// their backward passes.
    pub minibatch_plans: Vec<Plan>,
    /// Run at the end of the step.
    pub reduce_plan: Plan,
}

impl Ppo {
    /// `policy_logits` (B*T, V) are the policy's logits (entropy); `values`/`dvalues` (B, T) the value head's output
    /// and gradient buffers (a separate value model's scalar head, or the policy's own with a shared trunk).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        cfg: &PpoConfig,
        policy: &dyn Policy,
        policy_logits: &Tensor, // (B*T, V)
        vocab: usize,
        reference: &dyn Policy,
        values: &Tensor,  // (B, T)
        dvalues: &Tensor, // (B, T)
    ) -> Result<Ppo> {
        let (b, t) = (policy.rows(), policy.seq_len());
        cfg.validate(b)?;
        if reference.rows() != b || reference.seq_len() != t {
            return Err(Error::config("PPO: the reference model must be built for the policy's (B, T)"));
        }
        if values.len != b * t || dvalues.len != b * t || policy_logits.len != b * t * vocab {
            return Err(Error::config("PPO: value head or logits buffers do not match the policy's (B, T)"));
        }
        let (e, m) = (cfg.num_ppo_epochs, cfg.num_mini_batches);
        let z = |l: &str, n: usize| Tensor::zeros(gpu, l, n);
        let rng = z("ppo rng", 2)?;
        let mask = z("ppo mask", b * t)?;
        let scores = z("ppo scores", b)?;
        let rollout = z("ppo rollout", b * t * RO)?;
        let ranks = z("ppo ranks", e * b)?;
        let entropy = z("ppo entropy", b * t)?;
        let stats = z("ppo stats", e * m * MB_STATS)?;
        let rollout_metrics = z("ppo rollout metrics", ROLLOUT_STAT_NAMES.len())?;
        let train_metrics = z("ppo train metrics", TRAIN_STAT_NAMES.len())?;
        let p = cfg.params(b, t);

        let mut rollout_plan = Plan::new();
        rollout_plan.push(ops::ppo_rewards(
            gpu,
            &rollout,
            policy.logps(),
            reference.logps(),
            values,
            &scores,
            &mask,
            &p,
        ));
        rollout_plan.push(ops::rollout_stats(gpu, &rollout_metrics, &rollout, &scores, &p));
        if cfg.whiten_rewards {
            rollout_plan.push(ops::masked_whiten(gpu, &rollout, RO_REWARD, false, &p));
        }
        rollout_plan.push(ops::gae(gpu, &rollout, &p));
        if cfg.whiten_advantages {
            rollout_plan.push(ops::masked_whiten(gpu, &rollout, RO_ADV, true, &p));
        }
        for epoch in 0..e {
            rollout_plan.push(sampling::minibatch_ranks(gpu, &ranks, &rng, b, epoch));
        }

        let mut minibatch_plans = Vec::with_capacity(e * m);
        for epoch in 0..e {
            for mb in 0..m {
                let q = PpoParams { epoch: epoch as u32, mb: mb as u32, stats_row: (epoch * m + mb) as u32, ..p };
                let mut plan = Plan::new();
                plan.push(ops::token_entropy(gpu, &entropy, policy_logits, b * t, vocab));
                plan.push(ops::ppo_loss(
                    gpu,
                    policy.dlogps(),
                    dvalues,
                    &stats,
                    policy.logps(),
                    values,
                    &rollout,
                    &ranks,
                    &entropy,
                    &q,
                ));
                minibatch_plans.push(plan);
            }
        }
        let mut reduce_plan = Plan::new();
        reduce_plan.push(ops::ppo_reduce(gpu, &train_metrics, &stats, e * m));
        Ok(Ppo {
            cfg: cfg.clone(),
            b,
            t,
            rng,
            mask,
            scores,
            rollout,
            ranks,
            entropy,
            stats,
            rollout_metrics,
            train_metrics,
            rollout_plan,
            minibatch_plans,
            reduce_plan,
        })
    }

    /// Write the random state of PPO step `step` (sampling and minibatch permutations draw from (seed, step)).
    pub fn set_step(&self, gpu: &Gpu, step: u32) {
        sampling::write_rng(gpu, &self.rng, self.cfg.seed, step);
    }
}
