//! Looking inside a trained GPT: the full next-token distribution at every position (a log-softmax over the
//! model's logits, on the GPU), for printing, comparing with another implementation, or checking a checkpoint.
//! Training never needs this (objectives read only the target's log-prob); it allocates its output per call.

use crate::gpu::{Plan, Tensor};
use crate::model::Gpt;
use crate::ops::logprobs;
use crate::train::run_step;
use crate::{Gpu, Result};

impl Gpt {
    /// log p(next token = j | tokens[..=i]) for every position i and every id j: runs the forward plan on
    /// `tokens` ((B, T) ids, the shape this model was built for), then a log-softmax over `logits`.
    /// Returns (B, T, V) row-major; each row's logsumexp is 0.
    pub async fn full_logprobs(&self, gpu: &Gpu, tokens: &[u32]) -> Result<Vec<f32>> {
        // The forward also gathers target log-probs; any in-vocabulary targets do, so use the next input token.
        let targets: Vec<u32> = (0..tokens.len()).map(|i| if (i + 1) % self.t == 0 { 0 } else { tokens[i + 1] }).collect();
        self.set_batch(gpu, tokens, &targets)?;
        let (bt, v) = (self.b * self.t, self.cfg.vocab_size);
        let out = Tensor::zeros(gpu, "full logprobs", bt * v)?; // (B, T, V)
        let mut plan = Plan::new();
        plan.push(logprobs::log_softmax(gpu, &out, &self.logits, bt, v));
        run_step(gpu, &[&self.forward, &plan], None).await?;
        out.read_f32(gpu).await
    }
}
