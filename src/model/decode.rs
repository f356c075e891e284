//! KV-cached decoding: one generation step of a GPT for B rows at one position each, instead of a full forward pass
//! over (B, T). After the GPT's `forward` has run over the prompts (the prefill), each layer's qkv activation
//! (B, T, 3C) holds every prompt position's keys and values; a decode step embeds each row's newest token, runs the
//! blocks on B rows (B, C), attends over the cached keys and values, writes its own into the cache, and ends with the
//! next-token logits (B, V). Per step that is T times less matmul work than re-running the forward, which is what makes
//! sampling (on-policy pairs, evaluation, PPO rollouts) affordable on a CPU adapter.
//!
//! Rows have prompts of different lengths (`lens`, each >= 1) and are continued after their own last prompt token: at
//! step s >= 1 row b's input is the token at position lens_b - 1 + s, which the sampler appended at step s - 1, and the
//! logits are those of the full forward at that position (same ops, same summation order where the kernels allow:
//! equal to rounding). Step 0 is the prefill's own logits. Positions a row has not reached yet hold keys and values of
//! padding, which causal attention never reads before the decode step at that position overwrites them.
//!
//! A step is two plans ([`Decoder::step`]): the step's embedding (built per step because it carries s) and
//! [`Decoder::body`] (shared by every step), both built once. [`Decoder::sample`] and [`Decoder::logprob`] build the
//! draw of each step and its log-probability from the right logits (the prefill's at step 0).

use crate::gpu::{Plan, Tensor};
use crate::model::Gpt;
use crate::ops::{attention, encoder, layernorm, matmul, sampling};
use crate::{Error, Gpu, Result};

/// The decode steps of one GPT (its parameters and its KV cache), for steps 1..steps.
pub struct Decoder {
    /// (B) u32: row b's newest position at the current step (written by the step's input).
    pub pos: Tensor,
    /// (B, V) the next-token logits of the current step.
    pub logits: Tensor,
    /// The blocks, ln_f and the output head on B rows; shared by every step.
    pub body: Plan,
    /// inputs[s - 1]: the embedding of step s.
    inputs: Vec<Plan>,
    /// (B) u32 the rows' prompt lengths.
    lens: Tensor,
    /// The GPT's (B, T, V) logits: step 0's, after the prefill.
    prefill_logits: Tensor,
    /// (B, T, V)
    shape: (usize, usize, usize),
}

impl Decoder {
    /// Decode steps 1..steps for `gpt`, whose rows continue prompts of `lens` (B) u32 tokens. The GPT's `forward`
    /// must have run over the prompts before step 1 (the prefill).
    pub fn new(gpu: &Gpu, gpt: &Gpt, lens: &Tensor, steps: usize) -> Result<Decoder> {
        let (b, t) = (gpt.b, gpt.t);
        let cfg = &gpt.cfg;
        let (v, c, nh, l) = (cfg.vocab_size, cfg.width, cfg.heads, cfg.layers);
        if t > attention::DECODE_MAX_T {
            return Err(Error::config(format!(
                "KV-cached decoding takes sequences of up to {} positions, this GPT was built for T = {t}",
                attention::DECODE_MAX_T
            )));
        }
        let z = |label: &str, n: usize| Tensor::zeros(gpu, label, n);
        let pos = z("decode pos", b)?;
        let x = z("decode x", b * c)?; // (B, C) embedding of the newest tokens
        let ln = z("decode ln", b * c)?;
        let (mean, rstd) = (z("decode ln mean", b)?, z("decode ln rstd", b)?);
        let qkv = z("decode qkv", b * 3 * c)?;
        let atty = z("decode atty", b * c)?;
        let attproj = z("decode attproj", b * c)?;
        let fch = z("decode fch", b * 4 * c)?;
        let fch_gelu = z("decode fch_gelu", b * 4 * c)?;
        let fcproj = z("decode fcproj", b * c)?;
        let logits = z("decode logits", b * v)?;
        // The residual stream after each block's attention (r2) and after its MLP (r3), per layer: the fused
        // residual + LayerNorm kernels write them while reading the previous ones.
        let r2: Vec<Tensor> = (0..l).map(|_| z("decode residual2", b * c)).collect::<Result<_>>()?;
        let r3: Vec<Tensor> = (0..l).map(|_| z("decode residual3", b * c)).collect::<Result<_>>()?;

        let p = |name: &str| gpt.params.get(name).clone();
        let h = |i: usize, s: &str| p(&format!("transformer.h.{i}.{s}"));
        let (wte, wpe) = (p("transformer.wte.weight"), p("transformer.wpe.weight"));

        // ---- the blocks on B rows, as `Gpt::new`'s forward with N = B and attention over the cache ----
        let mut body = Plan::new();
        for i in 0..l {
            let residual = if i == 0 { &x } else { &r3[i - 1] };
            if i == 0 {
                body.push(layernorm::layernorm_forward(
                    gpu,
                    &ln,
                    &mean,
                    &rstd,
                    &x,
                    &h(i, "ln_1.weight"),
                    &h(i, "ln_1.bias"),
                    b,
                    c,
                ));
            } else {
                body.push(layernorm::residual_layernorm_forward(
                    gpu,
                    residual,
                    &ln,
                    &mean,
                    &rstd,
                    &r2[i - 1],
                    &fcproj,
                    &h(i, "ln_1.weight"),
                    &h(i, "ln_1.bias"),
                    b,
                    c,
                ));
            }
            let (w, bias) = (h(i, "attn.c_attn.weight"), h(i, "attn.c_attn.bias"));
            body.push(matmul::matmul_forward(gpu, &qkv, &ln, &w, Some(&bias), b, c, 3 * c));
            body.push(attention::attention_decode(gpu, &atty, &gpt.kv_cache[i], &qkv, &pos, b, t, c, nh));
            let (w, bias) = (h(i, "attn.c_proj.weight"), h(i, "attn.c_proj.bias"));
            body.push(matmul::matmul_forward(gpu, &attproj, &atty, &w, Some(&bias), b, c, c));
            body.push(layernorm::residual_layernorm_forward(
                gpu,
                &r2[i],
                &ln,
                &mean,
                &rstd,
                residual,
                &attproj,
                &h(i, "ln_2.weight"),
                &h(i, "ln_2.bias"),
                b,
                c,
            ));
            let (w, bias) = (h(i, "mlp.c_fc.weight"), h(i, "mlp.c_fc.bias"));
            body.push(matmul::matmul_forward_gelu(gpu, &fch_gelu, &fch, &ln, &w, Some(&bias), b, c, 4 * c));
            let (w, bias) = (h(i, "mlp.c_proj.weight"), h(i, "mlp.c_proj.bias"));
            body.push(matmul::matmul_forward(gpu, &fcproj, &fch_gelu, &w, Some(&bias), b, 4 * c, c));
        }
        let r3_last = z("decode residual3", b * c)?;
        body.push(layernorm::residual_layernorm_forward(
            gpu,
            &r3_last,
            &ln,
            &mean,
            &rstd,
            &r2[l - 1],
            &fcproj,
            &p("transformer.ln_f.weight"),
            &p("transformer.ln_f.bias"),
            b,
            c,
        ));
        body.push(matmul::matmul_forward(gpu, &logits, &ln, &wte, None, b, c, v));

        let inputs = (1..steps.max(1))
            .map(|s| {
                let mut plan = Plan::new();
                plan.push(encoder::encoder_decode(gpu, &x, &pos, &gpt.tokens, lens, &wte, &wpe, b, t, c, s));
                plan
            })
            .collect();
        Ok(Decoder {
            pos,
            logits,
            body,
            inputs,
            lens: lens.clone(),
            prefill_logits: gpt.logits.clone(),
            shape: (b, t, v),
        })
    }

    /// Generation step s's draw into `sampled` (B) u32, with the step as the random stream: at s = 0 from the
    /// prefill's logits at each row's last prompt token, after that from this decoder's logits.
    pub fn sample(
        &self,
        gpu: &Gpu,
        sampled: &Tensor,
        rng: &Tensor,
        s: usize,
        temperature: f32,
        top_k: usize,
    ) -> crate::gpu::Dispatch {
        let (b, t, v) = self.shape;
        if s == 0 {
            sampling::sample_ragged(gpu, sampled, &self.prefill_logits, rng, &self.lens, b, t, v, 0, temperature, top_k)
        } else {
            sampling::sample_categorical(gpu, sampled, &self.logits, rng, b, v, v, 0, temperature, top_k, s as u32)
        }
    }

    /// The log-probability of step s's draw at its target slot in `out` (B, T), from the logits it was drawn from.
    pub fn logprob(&self, gpu: &Gpu, out: &Tensor, sampled: &Tensor, s: usize) -> crate::gpu::Dispatch {
        let (b, t, v) = self.shape;
        let logits = if s == 0 { &self.prefill_logits } else { &self.logits };
        sampling::sampled_logprob(gpu, out, logits, sampled, &self.lens, b, t, v, s, s == 0)
    }

    /// The plans of decode step s (1 <= s < steps): the input, then the body; `logits` holds the result.
    pub fn step(&self, s: usize) -> [&Plan; 2] {
        assert!(s >= 1 && s <= self.inputs.len(), "decode step {s} outside 1..{}", self.inputs.len() + 1);
        [&self.inputs[s - 1], &self.body]
    }
}
