//! SFT: masked negative log-likelihood of the response tokens, averaged over those tokens.
//! loss = -sum(mask * logp) / sum(mask); d loss / d logp = -mask / sum(mask). A replicated policy gets one such loss
//! per replica, over its own rows.

use crate::gpu::{Gpu, Plan, Tensor};
use crate::model::Policy;
use crate::ops::logprobs;
use crate::Result;

pub struct Sft {
    /// (B, T) 1.0 where the target is a response token.
    pub mask: Tensor,
    /// (G) the loss of the last forward, per replica (G = 1 for a lone model).
    pub loss: Tensor,
    pub plan: Plan,
}

impl Sft {
    pub fn new(gpu: &Gpu, policy: &dyn Policy) -> Result<Sft> {
        let n = policy.rows() * policy.seq_len();
        let groups = policy.replicas().max(1);
        let mask = Tensor::zeros(gpu, "sft mask", n)?;
        let loss = Tensor::zeros(gpu, "sft loss", groups)?;
        let mut plan = Plan::new();
        plan.push(logprobs::sft_loss_groups(gpu, &loss, policy.dlogps(), policy.logps(), &mask, n, groups));
        Ok(Sft { mask, loss, plan })
    }

    pub fn set_mask(&self, gpu: &Gpu, mask: &[f32]) -> Result<()> {
        if mask.len() != self.mask.len {
            return Err(crate::Error::config(format!(
                "SFT mask must have {} entries, got {}",
                self.mask.len,
                mask.len()
            )));
        }
        self.mask.write_f32(gpu, mask);
        Ok(())
    }
}
