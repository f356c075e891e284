//! Learning-rate schedules with warmup, with the semantics of Hugging Face `transformers` (what TRL uses):
//! `lr_scheduler_type` = `constant` (no warmup, as transformers' "constant"), `constant_with_warmup`, `linear`
//! (warmup, then linear decay to 0 at the last step) and `cosine` (warmup, then half a cosine to 0). The schedule
//! is evaluated at the 0-based count of optimizer steps already taken, like transformers' `LambdaLR`: the first
//! update of a warmed-up run uses lr = 0.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedulerType {
    Constant,
    ConstantWithWarmup,
    Linear,
    Cosine,
}

impl std::str::FromStr for LrSchedulerType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::from(s)).map_err(|_| {
            Error::config(format!(
                "lr_scheduler_type `{s}` is not one of constant, constant_with_warmup, linear, cosine"
            ))
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub kind: LrSchedulerType,
    /// The peak learning rate (TRL's `learning_rate`).
    pub base_lr: f32,
    pub warmup_steps: usize,
    /// Optimizer steps in the whole run (`max_steps`).
    pub total_steps: usize,
}

impl LrSchedule {
    /// Warmup steps from TRL's pair of arguments: `warmup_steps` wins when positive, else
    /// `ceil(warmup_ratio * total_steps)`.
    pub fn warmup_from(warmup_steps: usize, warmup_ratio: f64, total_steps: usize) -> usize {
        if warmup_steps > 0 {
            warmup_steps
        } else {
            (warmup_ratio * total_steps as f64).ceil() as usize
        }
    }

    /// The multiplier of `base_lr` after `done` optimizer steps (transformers' `lr_lambda(current_step)`).
    pub fn factor(&self, done: usize) -> f64 {
        let (w, n, s) = (self.warmup_steps, self.total_steps, done);
        let warm = |s: usize| s as f64 / w.max(1) as f64;
        match self.kind {
            LrSchedulerType::Constant => 1.0,
            LrSchedulerType::ConstantWithWarmup => {
                if s < w {
                    warm(s)
                } else {
                    1.0
                }
            }
            LrSchedulerType::Linear => {
                if s < w {
                    warm(s)
                } else {
                    (n.saturating_sub(s) as f64 / n.saturating_sub(w).max(1) as f64).max(0.0)
                }
            }
            LrSchedulerType::Cosine => {
                if s < w {
                    warm(s)
                } else {
                    let progress = (s - w) as f64 / n.saturating_sub(w).max(1) as f64;
                    (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
                }
            }
        }
    }

    /// The learning rate of the update that follows `done` optimizer steps.
    pub fn lr(&self, done: usize) -> f32 {
        (self.base_lr as f64 * self.factor(done)) as f32
    }
}
