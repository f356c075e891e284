//! The token-level toy: the paper's explanation of dispersion in real models, on a tiny GPT. Beyond the paper.
//!
//! The paper argues (section 3) that in real models the chosen likelihood falls along with the rejected one because
//! the two responses share tokens: pushing the rejected sequence down also pushes down the tokens it shares with the
//! chosen one, and the freed mass spreads to responses in no pair. The MLP toy (`toy`, one logit per whole response)
//! cannot show that; this toy can. A GPT policy (V = 16, T = 8, L = 2, NH = 2, C = 32 by default) generates short
//! responses token by token; each prompt's chosen and rejected responses differ in one or two tokens and share the
//! rest.
//!
//! Data (`TOKEN_PAIRS`; token 0 is end-of-response and padding, 1-5 only ever appear in prompts, 6-13 are the words,
//! 14-15 appear nowhere):
//!
//! | prompt | chosen              | rejected            | how they differ                          |
//! |--------|---------------------|---------------------|------------------------------------------|
//! | 1      | 6 7 8 9 0           | 6 7 10 9 0          | one word in the middle                   |
//! | 2      | 11 8 7 0            | 12 8 7 0            | the first word; same tail                |
//! | 3 5    | 9 6 13 7 8 0        | 9 13 6 7 8 0        | two words swapped                        |
//! | 4 5    | 10 12 6 11 0        | 10 12 6 13 0        | the last word                            |
//!
//! Choices (where the paper leaves room):
//! - Positions are compared one to one (same prompt, so the same absolute position). A chosen position is "shared"
//!   when the rejected response has the same token there, "distinct" otherwise. A shared position before the first
//!   difference has an identical context in both sequences, so DPO's two gradients there cancel exactly; a shared
//!   position after it (`shared_after`) has a different context (the prefix differs), where pushing the rejected
//!   sequence down could leak onto the chosen one through shared features. Both are reported.
//! - "Unseen" tokens are the ones that appear in no response (1-5 and 14-15: prompt-only and never-used tokens);
//!   `token/unseen_mass` is their total probability averaged over every response position of both sequences.
//! - SFT (pi0) is fitted to both responses of every pair (the on-policy situation: both are likely under pi0, about
//!   1/2 at each position where they differ), with Adam, gradient clipping 1, then frozen as the reference.
//! - The preference phase is the MLP toy's: full batch, plain Adam (no clipping, no weight decay), reference
//!   log-probs precomputed once. Every logged epoch is an extra forward (policy forward, objective, full
//!   log-softmax) with one batched readback; unlogged epochs read nothing back. Only aggregation of read-back
//!   numbers (sums over positions, means over pairs) happens on the CPU.
//!
//! - Defaults (SFT 100 epochs at lr 1e-2; preference 200 epochs at lr 1e-3, logged every 10) keep the whole study
//!   (3 losses x 3 seeds, one SFT phase per seed) near 100 s on lavapipe; the effects below settle by epoch ~120.
//!
//! Records are `ToyRecord`s (run "token-<loss>-seed<k>", scenario 0) with TRL's preference metrics (`loss`,
//! `rewards/*`, `logps/chosen`, `logps/rejected`, `grad/log10_*`, ...) and the `token/*` metrics of
//! [`token_metrics`]; all log-probs are sums over a sequence's positions, averaged over the pairs.
//!
//! What it shows (defaults, seeds 0-2, epoch 0 -> 200; tests/toy_token.rs asserts the robust part):
//! - DPO: the chosen sequence falls with the rejected one, far less (chosen -0.70 -> -7.8 / -10.1 / -10.1,
//!   rejected -0.70 -> -61 / -56 / -62). The chosen's own distinct tokens rise (-0.70 -> -0.10 / -0.05 / -0.16);
//!   the whole fall is in the tokens it shares with the rejected response, mostly in the shared prefix
//!   (-0.002 -> -5.7 / -9.9 / -9.9), where the context is identical and DPO's gradients cancel exactly, so nothing
//!   holds those tokens up while the same token ids are pushed down inside rejected responses elsewhere. The shared
//!   tokens after the first difference barely move on the chosen side (-2.0 / -0.09 / -0.11) while they collapse on
//!   the rejected side (-30 to -41): the transformer tells the two contexts apart, so leakage within a pair is weak.
//! - The lost chosen mass goes to other response tokens (`other_mass_chosen` 0.10 -> 0.21-0.25), not to unseen
//!   tokens (`unseen_mass` stays <= 0.06).
//! - Flex-DPO (beta- 0.05) and SFT-DPO (gamma 0.1) give the shared prefix a net upward push: the chosen ends at
//!   -0.04 to -0.15 and -0.005 to -0.006 respectively on every seed while the rejected still falls (to -36 ... -72).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ToyRecord;
use crate::data::{collate_preferences, collate_sft, PreferenceBatch, PreferencePair, SftExample};
use crate::gpu::{Gpu, Plan, Readback, Tensor};
use crate::model::init::gpt_params;
use crate::model::{Gpt, GptConfig, Policy};
use crate::objectives::{PreferenceLoss, PreferenceMetrics};
use crate::ops::logprobs;
use crate::train::sft::SftTrainer;
use crate::train::{run_step, OptimConfig, OptimizerKind, PreferenceTrainer, ReferenceMode};
use crate::{Error, Result};

/// V: the toy's vocabulary.
pub const TOKEN_VOCAB: usize = 16;
/// T: the longest prompt ++ response (2 + 6).
pub const TOKEN_T: usize = 8;
/// End of response; also the padding id (padding is masked out).
pub const EOS: u32 = 0;

/// (prompt, chosen, rejected) token ids; see the module docs.
pub const TOKEN_PAIRS: [(&[u32], &[u32], &[u32]); 4] = [
    (&[1], &[6, 7, 8, 9, 0], &[6, 7, 10, 9, 0]),
    (&[2], &[11, 8, 7, 0], &[12, 8, 7, 0]),
    (&[3, 5], &[9, 6, 13, 7, 8, 0], &[9, 13, 6, 7, 8, 0]),
    (&[4, 5], &[10, 12, 6, 11, 0], &[10, 12, 6, 13, 0]),
];

/// The pairs as `PreferencePair`s.
pub fn token_pairs() -> Vec<PreferencePair> {
    TOKEN_PAIRS
        .iter()
        .map(|(p, c, r)| PreferencePair { prompt: p.to_vec(), chosen: c.to_vec(), rejected: r.to_vec() })
        .collect()
}

/// The tokens that appear in no response (chosen or rejected), ascending.
pub fn unseen_tokens() -> Vec<u32> {
    (0..TOKEN_VOCAB as u32).filter(|t| !TOKEN_PAIRS.iter().any(|(_, c, r)| c.contains(t) || r.contains(t))).collect()
}

/// The preference batch: (2N, T), rows 0..N chosen, N..2N rejected (TRL's concatenated layout).
pub fn token_batch() -> Result<PreferenceBatch> {
    collate_preferences(&token_pairs(), TOKEN_T, EOS)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenToyConfig {
    /// A label for the run; defaults to "token-<loss>-seed<seed>".
    pub run: String,
    pub loss: PreferenceLoss,
    /// Seeds the GPT's initialisation (`model::init::gpt_params`).
    pub seed: u64,
    /// C
    pub width: usize,
    /// L
    pub layers: usize,
    /// NH
    pub heads: usize,
    /// Preference phase: Adam learning rate and full-batch epochs.
    pub lr: f32,
    pub epochs: usize,
    pub log_every: usize,
    /// SFT phase (pi0): Adam epochs and learning rate on both responses of every pair.
    pub sft_epochs: usize,
    pub sft_lr: f32,
}

impl Default for TokenToyConfig {
    fn default() -> Self {
        TokenToyConfig {
            run: String::new(),
            loss: PreferenceLoss::Dpo { beta: 0.1 },
            seed: 0,
            width: 32,
            layers: 2,
            heads: 2,
            lr: 1e-3,
            epochs: 200,
            log_every: 10,
            sft_epochs: 100,
            sft_lr: 1e-2,
        }
    }
}

impl TokenToyConfig {
    pub fn run_name(&self) -> String {
        if self.run.is_empty() {
            format!("token-{}-seed{}", self.loss.name(), self.seed)
        } else {
            self.run.clone()
        }
    }

    pub fn gpt_config(&self) -> GptConfig {
        GptConfig {
            vocab_size: TOKEN_VOCAB,
            context: TOKEN_T,
            layers: self.layers,
            heads: self.heads,
            width: self.width,
            scalar_head: false,
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.gpt_config().validate()?;
        self.loss.validate()?;
        if self.log_every == 0 {
            return Err(Error::config("log_every must be positive"));
        }
        if !(self.lr > 0.0 && self.sft_lr > 0.0) {
            return Err(Error::config("learning rates must be positive"));
        }
        Ok(())
    }
}

/// The three losses of the study (DPO beta 0.1; Flex-DPO beta+ 0.1, beta- 0.05; SFT-DPO gamma 0.1) for seeds
/// 0..seeds, each for `epochs` epochs.
pub fn token_study_configs(seeds: u64, epochs: usize) -> Vec<TokenToyConfig> {
    let losses = [
        PreferenceLoss::Dpo { beta: 0.1 },
        PreferenceLoss::FlexDpo { beta_pos: 0.1, beta_neg: 0.05 },
        PreferenceLoss::SftDpo { beta: 0.1, gamma: 0.1 },
    ];
    losses
        .iter()
        .flat_map(|loss| {
            (0..seeds).map(move |seed| TokenToyConfig { loss: loss.clone(), seed, epochs, ..Default::default() })
        })
        .collect()
}

/// The SFT phase: fit a fresh GPT (`model::init::gpt_params(seed)`) to both responses of every pair. Returns the packed
/// parameters of pi0. Depends only on the seed, the model shape and the SFT settings, so the study shares it
/// across losses.
pub async fn token_sft_phase(gpu: &Gpu, cfg: &TokenToyConfig) -> Result<Vec<f32>> {
    cfg.validate()?;
    let gcfg = cfg.gpt_config();
    let examples: Vec<SftExample> = TOKEN_PAIRS
        .iter()
        .flat_map(|(p, c, r)| {
            [
                SftExample { prompt: p.to_vec(), completion: c.to_vec() },
                SftExample { prompt: p.to_vec(), completion: r.to_vec() },
            ]
        })
        .collect();
    let batch = collate_sft(&examples, TOKEN_T, EOS)?;
    let init = gpt_params(&gcfg, cfg.seed)?;
    let opt = OptimConfig { lr: cfg.sft_lr, ..Default::default() };
    let mut trainer = SftTrainer::new(gpu, &gcfg, &init, batch.b, batch.t, &opt)?;
    trainer.gpt.set_batch(gpu, &batch.tokens, &batch.targets)?;
    trainer.sft.set_mask(gpu, &batch.mask)?;
    // Full batch, nothing read back per step; the final loss is checked once.
    for _ in 0..cfg.sft_epochs {
        trainer.opt.prepare(gpu);
        run_step(gpu, &[&trainer.gpt.forward, &trainer.sft.plan, &trainer.gpt.backward, &trainer.opt.plan], None)
            .await?;
    }
    let loss = trainer.eval(gpu, &batch).await?;
    if !loss.is_finite() {
        return Err(Error::NonFinite(format!(
            "token toy SFT phase: loss {loss} after {} epochs (lr {})",
            cfg.sft_epochs, cfg.sft_lr
        )));
    }
    trainer.gpt.download_params(gpu).await
}

/// The `token/*` metrics from read-back tensors of the preference batch (2N rows):
/// `logps` (2N, T) log-probs of the targets, `log_probs` (2N, T, V) the full next-token log-distribution.
/// Log-probs are sums over a sequence's positions, averaged over the N pairs (like TRL's `logps/*`); masses are
/// averages over positions.
///
/// - `token/shared_logp_chosen`: the chosen positions whose token equals the rejected token at that position,
///   split into `token/shared_prefix_logp_chosen` (before the first difference: the context is identical in both
///   sequences, so the rejected sequence has exactly these log-probs too) and `token/shared_after_logp_chosen`
///   (after it); `token/shared_after_logp_rejected`: the rejected sequence's shared positions after the first
///   difference;
/// - `token/distinct_logp_chosen`: the other chosen positions; `token/distinct_logp_rejected`: the rejected
///   positions that differ from the chosen one;
/// - `token/unseen_mass`: probability on `unseen_tokens()`, averaged over every response position of both
///   sequences; `_chosen` / `_rejected`: over one side's positions only;
/// - `token/other_mass_chosen`: probability on response tokens other than the target, averaged over the chosen
///   positions (with `unseen_mass_chosen` and the target's own probability it sums to 1: where lost chosen mass
///   goes);
/// - `token/logp_chosen_min`, `token/logp_rejected_max`: extreme sequence log-probs over the pairs.
pub fn token_metrics(batch: &PreferenceBatch, logps: &[f32], log_probs: &[f32]) -> Vec<(&'static str, f32)> {
    let (n, t, v) = (batch.b, batch.t, TOKEN_VOCAB);
    assert_eq!(logps.len(), 2 * n * t, "logps must be (2N, T)");
    assert_eq!(log_probs.len(), 2 * n * t * v, "log_probs must be (2N, T, V)");
    let unseen = unseen_tokens();
    let on = |row: usize, j: usize| batch.mask[row * t + j] > 0.0;
    let tgt = |row: usize, j: usize| batch.targets[row * t + j];
    let prob = |row: usize, j: usize, k: usize| (log_probs[(row * t + j) * v + k] as f64).exp();
    let unseen_at = |row: usize, j: usize| unseen.iter().map(|&u| prob(row, j, u as usize)).sum::<f64>();
    let (mut prefix, mut after_c, mut after_r, mut dist_c, mut dist_r) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let (mut unseen_c, mut unseen_r, mut other_c, mut n_c, mut n_r) = (0.0f64, 0.0f64, 0.0f64, 0usize, 0usize);
    let (mut c_min, mut r_max) = (f64::INFINITY, f64::NEG_INFINITY);
    for i in 0..n {
        let (c, r) = (i, n + i);
        let same = |j: usize| on(c, j) && on(r, j) && tgt(r, j) == tgt(c, j);
        let first_diff = (0..t).find(|&j| (on(c, j) || on(r, j)) && !same(j)).unwrap_or(t);
        let (mut sc, mut sr) = (0.0f64, 0.0f64);
        for j in 0..t {
            if on(c, j) {
                let lp = logps[c * t + j] as f64;
                sc += lp;
                match (same(j), j < first_diff) {
                    (true, true) => prefix += lp,
                    (true, false) => after_c += lp,
                    (false, _) => dist_c += lp,
                }
                let u = unseen_at(c, j);
                unseen_c += u;
                other_c += 1.0 - prob(c, j, tgt(c, j) as usize) - u;
                n_c += 1;
            }
            if on(r, j) {
                let lp = logps[r * t + j] as f64;
                sr += lp;
                match (same(j), j < first_diff) {
                    (true, true) => {}
                    (true, false) => after_r += lp,
                    (false, _) => dist_r += lp,
                }
                unseen_r += unseen_at(r, j);
                n_r += 1;
            }
        }
        c_min = c_min.min(sc);
        r_max = r_max.max(sr);
    }
    let nf = n as f64;
    let (n_c, n_r) = (n_c.max(1) as f64, n_r.max(1) as f64);
    vec![
        ("token/shared_logp_chosen", ((prefix + after_c) / nf) as f32),
        ("token/shared_prefix_logp_chosen", (prefix / nf) as f32),
        ("token/shared_after_logp_chosen", (after_c / nf) as f32),
        ("token/shared_after_logp_rejected", (after_r / nf) as f32),
        ("token/distinct_logp_chosen", (dist_c / nf) as f32),
        ("token/distinct_logp_rejected", (dist_r / nf) as f32),
        ("token/unseen_mass", ((unseen_c + unseen_r) / (n_c + n_r)) as f32),
        ("token/unseen_mass_chosen", (unseen_c / n_c) as f32),
        ("token/unseen_mass_rejected", (unseen_r / n_r) as f32),
        ("token/other_mass_chosen", (other_c / n_c) as f32),
        ("token/logp_chosen_min", c_min as f32),
        ("token/logp_rejected_max", r_max as f32),
    ]
}

/// SFT, then the preference run; every logged epoch's record.
pub async fn run_token_toy(gpu: &Gpu, cfg: &TokenToyConfig) -> Result<Vec<ToyRecord>> {
    let pi0 = token_sft_phase(gpu, cfg).await?;
    run_token_toy_from(gpu, cfg, &pi0).await
}

/// The preference run from given pi0 parameters (from `token_sft_phase` with the same seed and model shape).
/// Epoch e's record is the state after e updates; epochs 0, every `log_every`, and the last are logged.
pub async fn run_token_toy_from(gpu: &Gpu, cfg: &TokenToyConfig, pi0: &[f32]) -> Result<Vec<ToyRecord>> {
    cfg.validate()?;
    let gcfg = cfg.gpt_config();
    let batch = token_batch()?;
    let rows = 2 * batch.b;
    let policy = Gpt::new(gpu, &gcfg, rows, batch.t, pi0)?;
    policy.set_batch(gpu, &batch.tokens, &batch.targets)?;
    let reference = if cfg.loss.uses_reference() {
        let r = Gpt::new(gpu, &gcfg, rows, batch.t, pi0)?;
        r.set_batch(gpu, &batch.tokens, &batch.targets)?;
        Some(r)
    } else {
        None
    };
    // Plain Adam, as the MLP toy: no clipping, no weight decay.
    let opt =
        OptimConfig { kind: OptimizerKind::Adam, lr: cfg.lr, grad_clip: 0.0, weight_decay: 0.0, ..Default::default() };
    let mut trainer = PreferenceTrainer::new(gpu, policy, reference, &cfg.loss, &opt, ReferenceMode::Precomputed)?;
    trainer.objective.set_mask(gpu, &batch.mask)?;
    trainer.precompute_reference(gpu).await?;

    // The logging pass: forward, objective (metrics), full next-token log-distribution into a buffer of ours.
    let bt = rows * batch.t;
    let log_probs = Tensor::zeros(gpu, "token toy log-softmax", bt * TOKEN_VOCAB)?; // (2N, T, V)
    let mut lsm = Plan::new();
    lsm.push(logprobs::log_softmax(gpu, &log_probs, &trainer.policy.logits, bt, TOKEN_VOCAB));
    let rb = Readback::new(gpu, &[&trainer.objective.metrics, &trainer.policy.logps, &log_probs]);

    let run = cfg.run_name();
    let mut out = Vec::new();
    for epoch in 0..=cfg.epochs {
        if epoch % cfg.log_every == 0 || epoch == cfg.epochs {
            let raw = run_step(gpu, &[trainer.policy.forward_plan(), &trainer.objective.plan, &lsm], Some(&rb))
                .await?
                .expect("readback");
            let mut metrics: BTreeMap<String, f32> = PreferenceMetrics::from_raw(&raw[0]).values.into_iter().collect();
            metrics.extend(token_metrics(&batch, &raw[1], &raw[2]).into_iter().map(|(k, v)| (k.to_string(), v)));
            if let Some((k, v)) = metrics.iter().find(|(k, v)| !v.is_finite() && !k.starts_with("grad/")) {
                return Err(Error::NonFinite(format!("run {run}: {k} = {v} at epoch {epoch}")));
            }
            out.push(ToyRecord {
                run: run.clone(),
                loss_type: cfg.loss.name().to_string(),
                scenario: 0,
                seed: cfg.seed,
                epoch,
                metrics,
            });
        }
        if epoch < cfg.epochs {
            trainer.step_with(gpu, None).await?;
        }
    }
    Ok(out)
}
