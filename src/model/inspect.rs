//! Looking inside a trained GPT: the full next-token distribution at every position (a log-softmax over the
//! model's logits), and a greedy continuation of a prompt, both on the GPU. Training never needs these (objectives
//! read only the targets' log-probs, and RLHF rollouts live in `train::ppo`); they allocate their small buffers per
//! call.

use crate::gpu::{Plan, Tensor};
use crate::model::Gpt;
use crate::ops::{logprobs, sampling};
use crate::{Error, Gpu, Result};

impl Gpt {
    /// log p(next token = j | tokens[..=i]) for every position i and every id j: runs the forward plan on
    /// `tokens` ((B, T) ids, the shape this model was built for), then a log-softmax over `logits`.
    /// Returns (B, T, V) row-major; each row's logsumexp is 0.
    pub async fn full_logprobs(&self, gpu: &Gpu, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.len() != self.b * self.t {
            return Err(Error::config(format!(
                "full_logprobs: this GPT was built for (B, T) = ({}, {}), i.e. {} token ids, got {}",
                self.b,
                self.t,
                self.b * self.t,
                tokens.len()
            )));
        }
        // The forward also gathers target log-probs; any in-vocabulary targets do, so use the next input token.
        let targets: Vec<u32> =
            (0..tokens.len()).map(|i| if (i + 1) % self.t == 0 { 0 } else { tokens[i + 1] }).collect();
        self.set_batch(gpu, tokens, &targets)?;
        let (bt, v) = (self.b * self.t, self.cfg.vocab_size);
        let out = Tensor::zeros(gpu, "full logprobs", bt * v)?; // (B, T, V)
        let mut plan = Plan::new();
        plan.push(logprobs::log_softmax(gpu, &out, &self.logits, bt, v));
        gpu.run_plans(&[&self.forward, &plan], None).await?;
        out.read_f32(gpu).await
    }

    /// The greedy (argmax, ties to the lowest id) continuation of `prompt`, for a model built with B = 1: for each
    /// position from the prompt's last to T - 2, a full forward pass over the sequence (no KV cache: these models
    /// are tiny) and `sampling::sample_categorical` at temperature 0 pick the next token, which
    /// `sampling::append_token` writes into the inputs. Every position is recorded into one submit. Returns the
    /// generated ids, ending with `stop` when the model produced it, else T - len(prompt) ids.
    pub async fn greedy_completion(&self, gpu: &Gpu, prompt: &[u32], stop: Option<u32>) -> Result<Vec<u32>> {
        let (t, v) = (self.t, self.cfg.vocab_size);
        if self.b != 1 {
            return Err(Error::config(format!(
                "greedy_completion needs a GPT built with B = 1, this one has B = {}",
                self.b
            )));
        }
        if prompt.is_empty() || prompt.len() >= t {
            return Err(Error::config(format!(
                "the prompt has {} tokens; it needs 1 to T - 1 = {} (build the GPT with a larger T)",
                prompt.len(),
                t - 1
            )));
        }
        let mut tokens = prompt.to_vec();
        tokens.resize(t, 0); // positions after the current one never influence it (causal attention)
        self.set_batch(gpu, &tokens, &vec![0; t])?;
        let sampled = Tensor::zeros(gpu, "greedy token", 1)?; // (1) u32
        let mask = Tensor::zeros(gpu, "greedy mask", t)?; // (1, T)
        let rng = Tensor::zeros(gpu, "greedy rng", 2)?; // read by the kernel, unused at temperature 0
        let steps: Vec<Plan> = (prompt.len() - 1..t - 1)
            .map(|pos| {
                let mut p = Plan::new();
                p.push(sampling::sample_categorical(
                    gpu,
                    &sampled,
                    &self.logits,
                    &rng,
                    1,
                    v,
                    t * v,
                    pos * v,
                    0.0,
                    0,
                    pos as u32,
                ));
                p.push(sampling::append_token(
                    gpu,
                    &self.tokens,
                    &self.targets,
                    &mask,
                    &sampled,
                    1,
                    t,
                    pos,
                    prompt.len(),
                    stop,
                ));
                p
            })
            .collect();
        let plans: Vec<&Plan> = steps.iter().flat_map(|s| [&self.forward, s]).collect();
        gpu.run_plans(&plans, None).await?;
        let mut out = self.tokens.read_u32(gpu).await?.split_off(prompt.len());
        if let Some(end) = stop.and_then(|s| out.iter().position(|&x| x == s)) {
            out.truncate(end + 1);
        }
        Ok(out)
    }
}
