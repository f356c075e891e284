//! Preference objectives: the DPO family (DPO, cDPO, robust, the paper's Flex-DPO and SFT-DPO, DPOP), IPO, SLiC,
//! hinge and SimPO, selected by one serde config (`PreferenceLoss`, tagged by `loss_type`). The math is in
//! `shaders/preference.wgsl`; this module owns the buffers and builds the plan:
//!
//!   reference sequence log-probs (precomputed, or from a frozen reference policy each step)
//!   -> preference_forward (per-pair loss, TRL metrics, d loss / d sequence log-prob)
//!   -> preference_reduce (mean over pairs)
//!   -> preference_backward (d loss / d token log-prob, into the policy's shared backward pass).
//!
//! Choices where the literature differs: IPO reads per-token mean log-probs, as TRL does (`ipo` in TRL normalises
//! by length); SimPO reads means and has no reference; SLiC and SimPO are reference-free, and their
//! `rewards/*` are beta times the policy log-probs; SFT-DPO's NLL term is on the chosen sequence's summed log-prob,
//! as the paper writes it (`l_DPO - gamma * log pi(a+)`).

use serde::{Deserialize, Serialize};

use crate::gpu::{Gpu, Plan, Tensor};
use crate::model::Policy;
use crate::ops::logprobs;
use crate::ops::preference::{self as ops, PrefParams, STATS, STAT_NAMES};
use crate::{Error, Result};

fn d_beta() -> f32 {
    0.1
}

/// Which preference loss, with its parameters. Serialised as `{"loss_type": "flex-dpo", "beta_pos": 0.1, ...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "loss_type", rename_all = "kebab-case")]
pub enum PreferenceLoss {
    /// -log sigmoid(beta (log-ratio+ - log-ratio-)).
    Dpo {
        #[serde(default = "d_beta")]
        beta: f32,
    },
    /// The paper's Flex-DPO: separate betas on the chosen and rejected log-ratios.
    FlexDpo { beta_pos: f32, beta_neg: f32 },
    /// The paper's SFT-DPO: DPO + gamma * NLL of the chosen response.
    SftDpo {
        #[serde(default = "d_beta")]
        beta: f32,
        gamma: f32,
    },
    /// IPO: (h - 1/(2 eta))^2 on per-token mean log-ratios (as TRL).
    Ipo { eta: f32 },
    /// SLiC: max(0, delta - log pi+ + log pi-) - eta log pi+ (reference-free).
    Slic { delta: f32, eta: f32 },
    /// Hinge (RSO): max(0, 1 - beta (log-ratio+ - log-ratio-)).
    Hinge {
        #[serde(default = "d_beta")]
        beta: f32,
    },
    /// Conservative DPO: label smoothing epsilon.
    Cdpo {
        #[serde(default = "d_beta")]
        beta: f32,
        label_smoothing: f32,
    },
    /// Robust DPO (Chowdhury et al. 2024): unbiased under label noise epsilon.
    Robust {
        #[serde(default = "d_beta")]
        beta: f32,
        label_smoothing: f32,
    },
    /// DPO-Positive (Pal et al. 2024): lambda penalises the chosen log-prob falling below the reference's.
    Dpop {
        #[serde(default = "d_beta")]
        beta: f32,
        lambda: f32,
    },
    /// SimPO-style length-normalised sigmoid: -log sigmoid(beta (mean logp+ - mean logp-) - margin), no reference.
    Simpo { beta: f32, margin: f32 },
}

impl PreferenceLoss {
    /// Short name used in logs and run names: "dpo", "flex-dpo", ...
    pub fn name(&self) -> &'static str {
        match self {
            PreferenceLoss::Dpo { .. } => "dpo",
            PreferenceLoss::FlexDpo { .. } => "flex-dpo",
            PreferenceLoss::SftDpo { .. } => "sft-dpo",
            PreferenceLoss::Ipo { .. } => "ipo",
            PreferenceLoss::Slic { .. } => "slic",
            PreferenceLoss::Hinge { .. } => "hinge",
            PreferenceLoss::Cdpo { .. } => "cdpo",
            PreferenceLoss::Robust { .. } => "robust",
            PreferenceLoss::Dpop { .. } => "dpop",
            PreferenceLoss::Simpo { .. } => "simpo",
        }
    }

    /// Whether the loss reads the reference policy's log-probs.
    pub fn uses_reference(&self) -> bool {
        !matches!(self, PreferenceLoss::Slic { .. } | PreferenceLoss::Simpo { .. })
    }

    pub fn validate(&self) -> Result<()> {
        let pos = |x: f32, what: &str| {
            if x > 0.0 && x.is_finite() {
                Ok(())
            } else {
                Err(Error::config(format!("{}: {what} must be positive, got {x}", self.name())))
            }
        };
        match *self {
            PreferenceLoss::Dpo { beta } | PreferenceLoss::Hinge { beta } => pos(beta, "beta"),
            PreferenceLoss::FlexDpo { beta_pos, beta_neg } => pos(beta_pos, "beta_pos").and(pos(beta_neg, "beta_neg")),
            PreferenceLoss::SftDpo { beta, gamma } => pos(beta, "beta").and(if gamma >= 0.0 {
                Ok(())
            } else {
                Err(Error::config("sft-dpo: gamma must be >= 0"))
            }),
            PreferenceLoss::Ipo { eta } => pos(eta, "eta"),
            PreferenceLoss::Slic { delta, eta } => {
                pos(delta, "delta").and(if eta >= 0.0 { Ok(()) } else { Err(Error::config("slic: eta must be >= 0")) })
            }
            PreferenceLoss::Cdpo { beta, label_smoothing } | PreferenceLoss::Robust { beta, label_smoothing } => {
                pos(beta, "beta")?;
                if !(0.0..0.5).contains(&label_smoothing) {
                    return Err(Error::config(format!(
                        "{}: label_smoothing must be in [0, 0.5), got {label_smoothing}",
                        self.name()
                    )));
                }
                Ok(())
            }
            PreferenceLoss::Dpop { beta, lambda } => pos(beta, "beta").and(if lambda >= 0.0 {
                Ok(())
            } else {
                Err(Error::config("dpop: lambda must be >= 0"))
            }),
            PreferenceLoss::Simpo { beta, .. } => pos(beta, "beta"),
        }
    }

    /// The WGSL parameter block for N pairs of T tokens.
    pub fn params(&self, n_pairs: usize, t: usize) -> PrefParams {
        let mut p = PrefParams { n_pairs: n_pairs as u32, t: t as u32, beta: 0.1, ..Default::default() };
        match *self {
            PreferenceLoss::Dpo { beta } => {
                p.loss_type = 0;
                p.beta = beta;
            }
            PreferenceLoss::Cdpo { beta, label_smoothing } => {
                p.loss_type = 1;
                p.beta = beta;
                p.label_smoothing = label_smoothing;
            }
            PreferenceLoss::Robust { beta, label_smoothing } => {
                p.loss_type = 2;
                p.beta = beta;
                p.label_smoothing = label_smoothing;
            }
            PreferenceLoss::FlexDpo { beta_pos, beta_neg } => {
                p.loss_type = 3;
                p.beta = beta_pos;
                p.beta_neg = beta_neg;
            }
            PreferenceLoss::SftDpo { beta, gamma } => {
                p.loss_type = 4;
                p.beta = beta;
                p.gamma = gamma;
            }
            PreferenceLoss::Ipo { eta } => {
                p.loss_type = 5;
                p.eta = eta;
                p.beta = 1.0; // rewards/* are the plain log-ratios
                p.use_mean = 1;
            }
            PreferenceLoss::Slic { delta, eta } => {
                p.loss_type = 6;
                p.delta = delta;
                p.eta = eta;
                p.beta = 1.0;
            }
            PreferenceLoss::Hinge { beta } => {
                p.loss_type = 7;
                p.beta = beta;
            }
            PreferenceLoss::Dpop { beta, lambda } => {
                p.loss_type = 8;
                p.beta = beta;
                p.lambda = lambda;
            }
            PreferenceLoss::Simpo { beta, margin } => {
                p.loss_type = 9;
                p.beta = beta;
                p.margin = margin;
                p.use_mean = 1;
            }
        }
        p
    }
}

/// Metrics of one preference step, TRL names (means over pairs).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PreferenceMetrics {
    pub values: Vec<(String, f32)>,
}

impl PreferenceMetrics {
    pub fn from_raw(raw: &[f32]) -> PreferenceMetrics {
        PreferenceMetrics { values: STAT_NAMES.iter().zip(raw).map(|(n, v)| (n.to_string(), *v)).collect() }
    }
    pub fn get(&self, name: &str) -> f32 {
        self.values.iter().find(|(n, _)| n == name).map(|x| x.1).unwrap_or(f32::NAN)
    }
}

/// The preference objective's buffers and plan for a policy whose rows are 2N sequences (chosen then rejected).
pub struct Preference {
    pub loss: PreferenceLoss,
    pub n_pairs: usize,
    pub t: usize,
    /// (2N, T) 1.0 on response tokens.
    pub mask: Tensor,
    /// (2N) the reference policy's sequence log-prob sums and per-token means (zeros for reference-free losses).
    pub ref_sum: Tensor,
    pub ref_mean: Tensor,
    /// (N, STATS) per-pair statistics.
    pub stats: Tensor,
    /// (2N) d loss / d sequence log-prob.
    pub coef: Tensor,
    /// (G, STATS) means over each replica's pairs; [g * STATS] is replica g's loss.
    pub metrics: Tensor,
    /// G: the policy's replicas, each its own batch of 2N / G rows (chosen then rejected) and its own loss.
    pub groups: usize,
    pub plan: Plan,
}

impl Preference {
    pub fn new(gpu: &Gpu, policy: &dyn Policy, loss: &PreferenceLoss) -> Result<Preference> {
        loss.validate()?;
        let rows = policy.rows();
        let groups = policy.replicas().max(1);
        if rows == 0 || !rows.is_multiple_of(2 * groups) {
            return Err(Error::config(format!(
                "a preference batch needs 2N rows (chosen then rejected) per replica, got {rows} rows for {groups} \
                 replicas"
            )));
        }
        let n = rows / 2;
        let t = policy.seq_len();
        let z = |l: &str, len: usize| Tensor::zeros(gpu, l, len);
        let (mask, ref_sum, ref_mean) =
            (z("pref mask", rows * t)?, z("ref logps sum", rows)?, z("ref logps mean", rows)?);
        let (stats, coef, metrics) =
            (z("pref stats", n * STATS)?, z("pref coef", rows)?, z("pref metrics", groups * STATS)?);
        let mut p = loss.params(n, t);
        p.groups = groups as u32;
        let mut plan = Plan::new();
        plan.push(ops::preference_forward(gpu, &stats, &coef, policy.logps(), &mask, &ref_sum, &ref_mean, &p));
        plan.push(ops::preference_reduce(gpu, &metrics, &stats, &p));
        plan.push(ops::preference_backward(gpu, policy.dlogps(), &coef, &mask, &p));
        Ok(Preference {
            loss: loss.clone(),
            n_pairs: n,
            t,
            mask,
            ref_sum,
            ref_mean,
            stats,
            coef,
            metrics,
            groups,
            plan,
        })
    }

    pub fn set_mask(&self, gpu: &Gpu, mask: &[f32]) -> Result<()> {
        if mask.len() != self.mask.len {
            return Err(Error::config(format!(
                "preference mask must have {} entries, got {}",
                self.mask.len,
                mask.len()
            )));
        }
        self.mask.write_f32(gpu, mask);
        Ok(())
    }

    /// The plan that turns a frozen reference policy's token log-probs into `ref_sum`/`ref_mean`: run the reference
    /// policy's forward, then this. For a fixed dataset it can run once ("precomputed"); otherwise every step.
    pub fn reference_plan(&self, gpu: &Gpu, reference: &dyn Policy) -> Plan {
        let mut plan = Plan::new();
        plan.push(logprobs::sequence_logps(
            gpu,
            &self.ref_sum,
            &self.ref_mean,
            reference.logps(),
            &self.mask,
            2 * self.n_pairs,
            self.t,
        ));
        plan
    }
}
