//! Sampling completions from a GPT on the GPU: B prompts of different lengths at once, each continued by up to
//! `max_new_tokens` tokens drawn with temperature and top-k, stopping at a stop token; with each completion's
//! log-probability under the model. This is what a study needs to build on-policy preference pairs (8 samples per
//! problem, judged) and to evaluate a model on held-out prompts.
//!
//! How: the prompts are written left-aligned into a (B, T) batch, T = longest prompt + max_new_tokens. A forward pass
//! over the prompts' T_p = T - max_new_tokens positions only (the prefill, a GPT built for (B, T_p)) gives step 0's
//! logits, read by `sampling::sample_ragged` at each row's own last prompt token Lp_b - 1, and its keys and values
//! go into each layer's KV cache of T positions (`Decoder::fill`). Each later step s is a `Decoder` step: one position
//! per row, Lp_b - 1 + s,
//! attending over the cache, so rows never wait for or pad into each other (causal attention: the positions after a
//! row's current one do not influence it). `append_ragged` writes each sampled token after the row's position, and
//! `sampled_logprob` its log-probability from the same logits, so no forward pass is needed to score the completions.
//! Every step of a call is recorded into one submit; buffers and plans are built once per generator.
//! The cache holds T <= `ops::attention::DECODE_MAX_T` (2048) positions; a longer T is refused when the generator is
//! built.

use crate::gpu::{Plan, Readback, Tensor};
use crate::model::{Decoder, Gpt, GptConfig};
use crate::ops::sampling;
use crate::{Error, Gpu, Result};

/// How completions are drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    /// <= 0: greedy (argmax).
    pub temperature: f32,
    /// 0: no top-k filter.
    pub top_k: usize,
    /// Generation of a row ends after this token (it is part of the completion).
    pub stop_token_id: Option<u32>,
    /// Draws are a pure function of (seed, call number, step, row, token id): the same seed and the same sequence
    /// of calls give the same completions.
    pub seed: u64,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig { max_new_tokens: 32, temperature: 1.0, top_k: 0, stop_token_id: None, seed: 0 }
    }
}

/// One sampled completion.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// The generated ids, ending with the stop token when the model produced it.
    pub tokens: Vec<u32>,
    /// log pi(tokens | prompt) under the sampling model at temperature 1 (the sum over tokens).
    pub logp: f32,
    /// Whether the completion ended with the stop token (else it ran to max_new_tokens).
    pub stopped: bool,
}

/// A GPT built for (B, T) with its sampling plans.
pub struct Generator {
    /// The prefill's GPT, built for (B, T_p = max_prompt_len); it holds the generator's parameters.
    pub model: Gpt,
    pub cfg: GenerationConfig,
    /// (B, T) u32: the prompts and their completions.
    tokens: Tensor,
    /// (B, T) u32: what `append_ragged` writes as each sampled token's target (unused here).
    #[allow(dead_code)] // bound by the plans
    targets: Tensor,
    /// T = max_prompt_len + max_new_tokens.
    t: usize,
    /// Longest prompt this generator takes: T - max_new_tokens.
    pub max_prompt_len: usize,
    lens: Tensor, // (B) u32 prompt lengths
    #[allow(dead_code)] // bound by the plans; kept with the buffers it belongs to
    sampled: Tensor, // (B) u32
    mask: Tensor, // (B, T) 1 on generated positions (targets)
    #[allow(dead_code)] // bound by the plans; read back through `readback`
    logps: Tensor, // (B, T) log pi of each sampled token at its target position
    rng: Tensor,  // (2) u32
    /// steps[s]: sample generation step s's token and append it.
    steps: Vec<Plan>,
    decoder: Decoder,
    /// tokens, logps and mask, read back together after a call.
    readback: Readback,
    calls: u32,
}

impl Generator {
    /// A generator of up to `b` completions per call for prompts of up to `max_prompt_len` tokens.
    pub fn new(
        gpu: &Gpu,
        model_cfg: &GptConfig,
        params: &[f32],
        b: usize,
        max_prompt_len: usize,
        cfg: &GenerationConfig,
    ) -> Result<Generator> {
        if model_cfg.scalar_head {
            return Err(Error::config("a model with a scalar (reward) head cannot generate"));
        }
        let t = max_prompt_len + cfg.max_new_tokens;
        if max_prompt_len == 0 || cfg.max_new_tokens == 0 || t > model_cfg.context {
            return Err(Error::config(format!(
                "generation: the longest prompt ({max_prompt_len} tokens) + max_new_tokens ({}) must be positive and \
                 fit the model's context ({})",
                cfg.max_new_tokens, model_cfg.context
            )));
        }
        let v = model_cfg.vocab_size;
        if let Some(s) = cfg.stop_token_id.filter(|&s| s as usize >= v) {
            return Err(Error::config(format!("generation: stop token {s} is outside the vocabulary ({v})")));
        }
        let what = format!("building a generator (GPT of {} parameters, B = {b}, T = {t})", model_cfg.num_params());
        gpu.scoped_blocking(&what, || {
            let model = Gpt::new(gpu, model_cfg, b, max_prompt_len, params)?;
            let tokens = Tensor::zeros(gpu, "generate tokens", b * t)?;
            let targets = Tensor::zeros(gpu, "generate targets", b * t)?;
            let lens = Tensor::zeros(gpu, "generate lens", b)?;
            let sampled = Tensor::zeros(gpu, "generate sampled", b)?;
            let mask = Tensor::zeros(gpu, "generate mask", b * t)?;
            let rng = Tensor::zeros(gpu, "generate rng", 2)?;
            let logps = Tensor::zeros(gpu, "generate logps", b * t)?;
            // Step 0 samples from the prefill's logits (B, T_p, V) at each row's last prompt token; steps >= 1 from
            // the decoder's (B, V). Both draw with the step number as the random stream, so the draws depend only
            // on (seed, call, step, row, token id).
            let decoder = Decoder::after_prefill(gpu, &model, &tokens, t, &lens, cfg.max_new_tokens)?;
            let steps = (0..cfg.max_new_tokens)
                .map(|s| {
                    let mut p = Plan::new();
                    p.push(decoder.sample(gpu, &sampled, &rng, s, cfg.temperature, cfg.top_k));
                    p.push(decoder.logprob(gpu, &logps, &sampled, s));
                    p.push(sampling::append_ragged(
                        gpu,
                        &tokens,
                        &targets,
                        &mask,
                        &sampled,
                        &lens,
                        b,
                        t,
                        s,
                        cfg.stop_token_id,
                    ));
                    p
                })
                .collect();
            let readback = Readback::new(gpu, &[&tokens, &logps, &mask]);
            Ok(Generator {
                model,
                cfg: cfg.clone(),
                tokens,
                targets,
                t,
                max_prompt_len,
                lens,
                sampled,
                mask,
                logps,
                rng,
                steps,
                decoder,
                readback,
                calls: 0,
            })
        })
    }

    /// B: completions per call.
    pub fn batch(&self) -> usize {
        self.model.b
    }

    /// Replace the model's parameters (same architecture), e.g. to sample from a later checkpoint.
    pub fn set_params(&self, gpu: &Gpu, params: &[f32]) -> Result<()> {
        self.model.upload_params(gpu, params)
    }

    /// One completion per prompt (at most B prompts, each 1..=max_prompt_len ids), in one submit.
    pub async fn generate(&mut self, gpu: &Gpu, prompts: &[Vec<u32>]) -> Result<Vec<Completion>> {
        let (b, t, tp, v) = (self.model.b, self.t, self.model.t, self.model.cfg.vocab_size);
        if prompts.is_empty() || prompts.len() > b {
            return Err(Error::config(format!("generate: 1 to B = {b} prompts per call, got {}", prompts.len())));
        }
        let mut tokens = vec![0u32; b * t];
        let mut lens = vec![1u32; b];
        for (r, p) in prompts.iter().enumerate() {
            if p.is_empty() || p.len() > self.max_prompt_len {
                return Err(Error::config(format!(
                    "generate: prompt {r} has {} tokens; this generator takes 1 to {}",
                    p.len(),
                    self.max_prompt_len
                )));
            }
            if let Some(&bad) = p.iter().find(|&&x| x as usize >= v) {
                return Err(Error::config(format!("generate: token id {bad} is outside the vocabulary ({v})")));
            }
            tokens[r * t..r * t + p.len()].copy_from_slice(p);
            lens[r] = p.len() as u32;
        }
        // The prefill reads the prompts' T_p positions; the decoder and the readback the whole (B, T).
        let prefill: Vec<u32> = tokens.chunks(t).flat_map(|row| row[..tp].iter().copied()).collect();
        self.model.tokens.write_u32(gpu, &prefill);
        self.model.targets.write_u32(gpu, &vec![0u32; b * tp]);
        self.tokens.write_u32(gpu, &tokens);
        self.lens.write_u32(gpu, &lens);
        self.mask.write_f32(gpu, &vec![0.0; b * t]);
        self.calls += 1;
        sampling::write_rng(gpu, &self.rng, self.cfg.seed, self.calls);
        // The prefill (a forward over the prompts), then generation with the KV cache; each step also writes its
        // token's log-prob.
        let mut plans: Vec<&Plan> = Vec::with_capacity(3 * self.steps.len() + 2);
        plans.push(&self.model.forward);
        plans.push(&self.decoder.fill);
        for (s, sample) in self.steps.iter().enumerate() {
            if s > 0 {
                plans.extend(self.decoder.step(s));
            }
            plans.push(sample);
        }
        let read = gpu.run_plans(&plans, Some(&self.readback)).await?.expect("readback");
        let out: Vec<u32> = read[0].iter().map(|x| x.to_bits()).collect();
        let (logps, mask) = (&read[1], &read[2]);
        Ok(prompts
            .iter()
            .enumerate()
            .map(|(r, p)| {
                let lp = p.len();
                let n = self.cfg.max_new_tokens.min(t - lp);
                let mut ids = out[r * t + lp..r * t + lp + n].to_vec();
                let stop = self.cfg.stop_token_id.and_then(|s| ids.iter().position(|&x| x == s));
                if let Some(end) = stop {
                    ids.truncate(end + 1);
                }
                // Position j predicts token j + 1: the completion's ids sit at targets lp-1 .. lp-1+len.
                let logp: f64 = (lp - 1..lp - 1 + ids.len())
                    .filter(|&j| mask[r * t + j] > 0.0)
                    .map(|j| logps[r * t + j] as f64)
                    .sum();
                Completion { tokens: ids, logp: logp as f32, stopped: stop.is_some() }
            })
            .collect())
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn generate_blocking(&mut self, gpu: &Gpu, prompts: &[Vec<u32>]) -> Result<Vec<Completion>> {
        pollster::block_on(self.generate(gpu, prompts))
    }
}
