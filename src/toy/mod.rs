//! The paper's toy study (section 3.2): 4 prompts, 10 responses, a 3-layer MLP policy, an "SFT" phase that fits
//! fixed target rows (the four data scenarios), then a preference objective (DPO, Flex-DPO, SFT-DPO, IPO, SLiC, ...)
//! or RM + PPO, full batch, with the paper's metrics logged every few epochs.
//!
//! Everything trains on the GPU through the same `Mlp`, objectives and optimizers as the GPT; this module only
//! defines the data (pairs, scenario rows), builds the runs, and turns the read-back probability matrix into the
//! paper's summary numbers (`toy/*`). A `ToySession` advances a run a few epochs at a time, so the command-line
//! study and the browser demo drive the same code.

pub mod session;
pub mod token;

pub use session::{ToyRecord, ToySession};

use serde::{Deserialize, Serialize};

use crate::objectives::PreferenceLoss;
use crate::train::OptimizerKind;

/// P: prompts.
pub const PROMPTS: usize = 4;
/// R: responses.
pub const RESPONSES: usize = 10;
/// (prompt, chosen, rejected): responses 0-3 are the chosen ones, 4-7 the rejected ones, 8-9 in no pair.
pub const PAIRS: [(usize, usize, usize); 4] = [(0, 0, 4), (1, 1, 6), (2, 2, 7), (3, 3, 5)];

/// The SFT target row of a scenario (the same for every prompt): responses 0-3 | 4-7 | 8 | 9.
///  1: both on-policy; 2: chosen on-policy, rejected off-policy; 3: chosen off-policy, rejected on-policy;
///  4: both off-policy. (The paper's figure labels panels 2 and 3 the other way round; these follow its numbers.)
pub fn scenario_row(scenario: u8) -> Option<[f32; RESPONSES]> {
    let (c, r, u8_, u9) = match scenario {
        1 => (0.12, 0.12, 0.03, 0.01),
        2 => (0.12, 0.02, 0.40, 0.04),
        3 => (0.02, 0.12, 0.40, 0.04),
        4 => (0.02, 0.02, 0.80, 0.04),
        _ => return None,
    };
    let mut row = [0.0; RESPONSES];
    row[..4].fill(c);
    row[4..8].fill(r);
    row[8] = u8_;
    row[9] = u9;
    Some(row)
}

/// What trains after SFT.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum ToyMethod {
    /// A preference objective on the four pairs.
    Preference { loss: PreferenceLoss },
    /// RM + PPO: a Bradley-Terry reward model on the four pairs, then PPO against it with a KL penalty to pi0.
    Ppo {
        /// KL coefficient (beta of the RLHF objective).
        kl_coef: f32,
        /// Reward-model training epochs (full batch).
        rm_epochs: usize,
        /// Responses sampled per prompt per epoch.
        samples_per_prompt: usize,
    },
}

impl ToyMethod {
    pub fn name(&self) -> String {
        match self {
            ToyMethod::Preference { loss } => loss.name().to_string(),
            ToyMethod::Ppo { .. } => "ppo".to_string(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ToyConfig {
    /// A label for the run (metrics.jsonl `run`); defaults to "<method>-s<scenario>-seed<seed>".
    pub run: String,
    pub method: ToyMethod,
    /// 1..=4
    pub scenario: u8,
    pub seed: u64,
    /// H
    pub hidden: usize,
    /// Hidden layers (2 in the paper; 2 or more).
    pub depth: usize,
    pub first_bias: bool,
    /// Multiplies the initial parameters (PyTorch's default uniform init, `model::init::mlp_params`).
    pub init_scale: f32,
    pub optimizer: OptimizerKind,
    pub lr: f32,
    /// Decoupled weight decay (Adam -> AdamW; SGD's L2 term).
    pub weight_decay: f32,
    /// SGD's heavy-ball momentum (0: plain SGD).
    pub momentum: f32,
    pub epochs: usize,
    pub log_every: usize,
    /// SFT phase: epochs and learning rate (Adam) of the fit to the scenario's target rows.
    pub sft_epochs: usize,
    pub sft_lr: f32,
}

impl Default for ToyConfig {
    fn default() -> Self {
        ToyConfig {
            run: String::new(),
            method: ToyMethod::Preference { loss: PreferenceLoss::Dpo { beta: 0.1 } },
            scenario: 1,
            seed: 0,
            hidden: 256,
            depth: 2,
            first_bias: false,
            init_scale: 1.0,
            optimizer: OptimizerKind::Adam,
            lr: 1e-3,
            weight_decay: 0.0,
            momentum: 0.0,
            epochs: 2000,
            log_every: 10,
            sft_epochs: 400,
            sft_lr: 1e-2,
        }
    }
}

impl ToyConfig {
    pub fn run_name(&self) -> String {
        if self.run.is_empty() {
            format!("{}-s{}-seed{}", self.method.name(), self.scenario, self.seed)
        } else {
            self.run.clone()
        }
    }

    pub fn validate(&self) -> crate::Result<()> {
        if scenario_row(self.scenario).is_none() {
            return Err(crate::Error::config(format!("scenario must be 1, 2, 3 or 4, got {}", self.scenario)));
        }
        if self.hidden == 0 || self.log_every == 0 {
            return Err(crate::Error::config("hidden and log_every must be positive"));
        }
        if !(self.lr > 0.0 && self.sft_lr > 0.0) {
            return Err(crate::Error::config("learning rates must be positive"));
        }
        if !(self.init_scale > 0.0 && self.init_scale.is_finite()) {
            return Err(crate::Error::config(format!("init_scale must be positive, got {}", self.init_scale)));
        }
        if !(self.weight_decay >= 0.0 && (0.0..1.0).contains(&self.momentum)) {
            return Err(crate::Error::config(format!(
                "weight_decay must be >= 0 and momentum in [0, 1), got {} and {}",
                self.weight_decay, self.momentum
            )));
        }
        if let ToyMethod::Preference { loss } = &self.method {
            loss.validate()?;
        }
        Ok(())
    }
}

/// The paper's summary numbers from a (P, R) matrix of log-probabilities (natural log).
pub fn summarize(log_probs: &[f32]) -> Vec<(&'static str, f32)> {
    let p = |i: usize, j: usize| (log_probs[i * RESPONSES + j] as f64).exp();
    let n = PAIRS.len() as f64;
    let (mut c_avg, mut c_min, mut r_avg, mut r_max, mut unseen, mut m89, mut other_c, mut lc, mut lr) =
        (0.0, f64::INFINITY, 0.0, 0.0f64, 0.0, 0.0, 0.0, 0.0, 0.0);
    for &(i, c, r) in &PAIRS {
        c_avg += p(i, c) / n;
        c_min = c_min.min(p(i, c));
        r_avg += p(i, r) / n;
        r_max = r_max.max(p(i, r));
        let u: f64 = (0..RESPONSES).filter(|&j| j != c && j != r).map(|j| p(i, j)).sum();
        unseen += u / 8.0 / n;
        m89 += (p(i, 8) + p(i, 9)) / n;
        other_c += PAIRS.iter().filter(|&&(_, c2, _)| c2 != c).map(|&(_, c2, _)| p(i, c2)).sum::<f64>() / n;
        lc += log_probs[i * RESPONSES + c] as f64 / n;
        lr += log_probs[i * RESPONSES + r] as f64 / n;
    }
    vec![
        ("toy/chosen_avg", c_avg as f32),
        ("toy/chosen_min", c_min as f32),
        ("toy/rejected_avg", r_avg as f32),
        ("toy/rejected_max", r_max as f32),
        ("toy/unseen_avg", unseen as f32),
        ("toy/mass_8_9", m89 as f32),
        ("toy/mass_other_chosen", other_c as f32),
        ("toy/logp_chosen_avg", lc as f32),
        ("toy/logp_rejected_avg", lr as f32),
    ]
}
