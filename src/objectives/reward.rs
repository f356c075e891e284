//! Reward model objective: Bradley-Terry, l = -mean log sigmoid(r(x, a+) - r(x, a-)), on a policy with a scalar head
//! (the GPT's `score` head read at each sequence's last response token, or the toy MLP's). Same batch layout as the
//! preference objectives (2N rows, chosen then rejected) and the same metric vector (`rewards/*`, `loss`), where
//! `rewards/accuracies` is the pairwise accuracy.

use crate::gpu::{Gpu, Plan, Tensor};
use crate::model::Policy;
use crate::ops::preference::{self as ops, PrefParams, STATS};
use crate::{Error, Result};

pub struct RewardObjective {
    pub n_pairs: usize,
    pub t: usize,
    /// (2N) u32: index of the last response token of each sequence (0 for the MLP).
    pub last: Tensor,
    pub stats: Tensor,
    pub coef: Tensor,
    /// (STATS): loss, rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies, 0...
    pub metrics: Tensor,
    pub plan: Plan,
}

impl RewardObjective {
    pub fn new(gpu: &Gpu, policy: &dyn Policy) -> Result<RewardObjective> {
        let (Some(_), Some(dscalar)) = (policy.scalar(), policy.dscalar()) else {
            return Err(Error::config("a reward model needs a policy built with scalar_head = true"));
        };
        let rows = policy.rows();
        if !rows.is_multiple_of(2) || rows == 0 {
            return Err(Error::config(format!(
                "a reward-model batch needs 2N rows (chosen then rejected), got {rows}"
            )));
        }
        let (n, t) = (rows / 2, policy.seq_len());
        let p = PrefParams { n_pairs: n as u32, t: t as u32, ..Default::default() };
        let z = |l: &str, len: usize| Tensor::zeros(gpu, l, len);
        let (last, stats, coef, metrics) =
            (z("rm last", rows)?, z("rm stats", n * STATS)?, z("rm coef", rows)?, z("rm metrics", STATS)?);
        let mut plan = Plan::new();
        plan.push(ops::bt_forward(gpu, &stats, &coef, policy.scalar().unwrap(), &last, &p));
        plan.push(ops::preference_reduce(gpu, &metrics, &stats, &p));
        plan.push(ops::bt_backward(gpu, dscalar, &coef, &last, &p));
        Ok(RewardObjective { n_pairs: n, t, last, stats, coef, metrics, plan })
    }

    /// The last response token of each of the 2N sequences (from a (2N, T) response mask: the last 1.0).
    pub fn set_last_from_mask(&self, gpu: &Gpu, mask: &[f32]) -> Result<()> {
        let t = self.t;
        if mask.len() != 2 * self.n_pairs * t {
            return Err(Error::config(format!(
                "reward model mask must be (2N, T) = ({}, {t}), {} entries, got {}",
                2 * self.n_pairs,
                2 * self.n_pairs * t,
                mask.len()
            )));
        }
        let mut last = Vec::with_capacity(2 * self.n_pairs);
        for s in 0..2 * self.n_pairs {
            let row = &mask[s * t..(s + 1) * t];
            let Some(i) = row.iter().rposition(|&m| m > 0.0) else {
                return Err(Error::config(format!("sequence {s} has no response token")));
            };
            last.push(i as u32);
        }
        self.last.write_u32(gpu, &last);
        Ok(())
    }
}
