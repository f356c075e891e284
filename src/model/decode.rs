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
//! Two ways to own the cache: [`Decoder::new`] decodes in the GPT's own qkv activations (its forward over (B, T) is the
//! prefill; PPO, whose policy is built for (B, T) anyway, does this), and [`Decoder::after_prefill`] keeps caches of T
//! positions of its own, which [`Decoder::fill`] copies from a GPT built for the prompts' T_p <= T positions only, so
//! the prefill computes no position that generation will overwrite (`Generator`).
//!
//! A step is two plans ([`Decoder::step`]): the step's embedding (built per step because it carries s) and
//! [`Decoder::body`] (shared by every step), both built once. [`Decoder::sample`] and [`Decoder::logprob`] build the
//! draw of each step and its log-probability from the right logits (the prefill's at step 0).

use crate::gpu::{Plan, Tensor};
use crate::model::gpt::linear_forward;
use crate::model::Gpt;
use crate::ops::{attention, encoder, layernorm, matmul, sampling};
use crate::{Error, Gpu, Result};

/// The decode steps of one GPT (its parameters and its KV cache), for steps 1..steps.
pub struct Decoder {
    /// Copies the prefill's keys and values into the caches, between the prefill and step 1 (empty when the cache is
    /// the GPT's own qkv activation).
    pub fill: Plan,
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
    /// The prefill GPT's (B, T_p, V) logits: step 0's.
    prefill_logits: Tensor,
    /// T_p: the prefill's positions.
    prefill_t: usize,
    /// (B, T, V)
    shape: (usize, usize, usize),
    /// The KV caches (B, T, 3C) per layer when this decoder owns them (`after_prefill`).
    #[allow(dead_code)] // bound by the plans; kept with the buffers they belong to
    caches: Vec<Tensor>,
}

impl Decoder {
    /// Decode steps 1..steps for `gpt`, whose rows continue prompts of `lens` (B) u32 tokens, in the GPT's own
    /// (B, T) tokens and qkv activations. The GPT's `forward` must have run over the prompts before step 1 (the
    /// prefill).
    pub fn new(gpu: &Gpu, gpt: &Gpt, lens: &Tensor, steps: usize) -> Result<Decoder> {
        Decoder::build(gpu, gpt, &gpt.tokens, gpt.t, lens, steps, false)
    }

    /// Decode steps 1..steps of sequences of `t` positions, in `tokens` (B, T) u32, whose prompts (`lens`, each at most
    /// `prefill.t`) went through `prefill`, a GPT built for (B, T_p <= T) with the generator's parameters: after its
    /// `forward`, [`Decoder::fill`] copies its keys and values into this decoder's caches of T positions.
    pub fn after_prefill(
        gpu: &Gpu,
        prefill: &Gpt,
        tokens: &Tensor,
        t: usize,
        lens: &Tensor,
        steps: usize,
    ) -> Result<Decoder> {
        Decoder::build(gpu, prefill, tokens, t, lens, steps, true)
    }

    /// `own_caches`: caches of T positions filled from `gpt` (T_p = gpt.t), else `gpt`'s own (T = gpt.t).
    fn build(
        gpu: &Gpu,
        gpt: &Gpt,
        tokens: &Tensor,
        t: usize,
        lens: &Tensor,
        steps: usize,
        own_caches: bool,
    ) -> Result<Decoder> {
        let b = gpt.b;
        let cfg = &gpt.cfg;
        let (v, c, nh, l) = (cfg.vocab_size, cfg.width, cfg.heads, cfg.layers);
        if t > attention::DECODE_MAX_T {
            return Err(Error::config(format!(
                "KV-cached decoding takes sequences of up to {} positions, this GPT was built for T = {t}",
                attention::DECODE_MAX_T
            )));
        }
        if gpt.t > t || tokens.len < b * t {
            return Err(Error::config(format!(
                "decoder: the prefill covers T_p = {} positions and the sequences T = {t} (T_p must not exceed T), \
                 with {} token slots for B x T = {}",
                gpt.t,
                tokens.len,
                b * t
            )));
        }
        let z = |label: &str, n: usize| Tensor::zeros(gpu, label, n);
        let mut fill = Plan::new();
        let caches: Vec<Tensor> = if own_caches {
            (0..l).map(|_| z("decode kv cache", b * t * 3 * c)).collect::<Result<_>>()?
        } else {
            vec![]
        };
        for (cache, qkv) in caches.iter().zip(&gpt.kv_cache) {
            fill.push(attention::attention_cache_fill(gpu, cache, qkv, b, t, gpt.t, c));
        }
        let cache = |i: usize| if caches.is_empty() { &gpt.kv_cache[i] } else { &caches[i] };
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
        // The linear layers' weights transposed where the tuner found that faster (`gpt::linear_forward`).
        let weight_t = z("decode weight_t", 4 * c * c)?;
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
            linear_forward(gpu, &mut body, &weight_t, (&qkv, None), &ln, &w, &bias, b, c, 3 * c);
            body.push(attention::attention_decode(gpu, &atty, cache(i), &qkv, &pos, b, t, c, nh));
            let (w, bias) = (h(i, "attn.c_proj.weight"), h(i, "attn.c_proj.bias"));
            linear_forward(gpu, &mut body, &weight_t, (&attproj, None), &atty, &w, &bias, b, c, c);
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
            linear_forward(gpu, &mut body, &weight_t, (&fch, Some(&fch_gelu)), &ln, &w, &bias, b, c, 4 * c);
            let (w, bias) = (h(i, "mlp.c_proj.weight"), h(i, "mlp.c_proj.bias"));
            linear_forward(gpu, &mut body, &weight_t, (&fcproj, None), &fch_gelu, &w, &bias, b, 4 * c, c);
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
                plan.push(encoder::encoder_decode(gpu, &x, &pos, tokens, lens, &wte, &wpe, b, t, c, s));
                plan
            })
            .collect();
        Ok(Decoder {
            fill,
            pos,
            logits,
            body,
            inputs,
            lens: lens.clone(),
            prefill_logits: gpt.logits.clone(),
            prefill_t: gpt.t,
            shape: (b, t, v),
            caches,
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
        let (b, v, tp) = (self.shape.0, self.shape.2, self.prefill_t);
        if s == 0 {
            sampling::sample_ragged(
                gpu,
                sampled,
                &self.prefill_logits,
                rng,
                &self.lens,
                b,
                tp,
                v,
                0,
                temperature,
                top_k,
            )
        } else {
            sampling::sample_categorical(gpu, sampled, &self.logits, rng, b, v, v, 0, temperature, top_k, s as u32)
        }
    }

    /// The log-probability of step s's draw at its target slot in `out` (B, T), from the logits it was drawn from.
    pub fn logprob(&self, gpu: &Gpu, out: &Tensor, sampled: &Tensor, s: usize) -> crate::gpu::Dispatch {
        let (b, t, v) = self.shape;
        let logits = if s == 0 { &self.prefill_logits } else { &self.logits };
        sampling::sampled_logprob(gpu, out, logits, sampled, &self.lens, b, t, v, s, (s == 0).then_some(self.prefill_t))
    }

    /// The plans of decode step s (1 <= s < steps): the input, then the body; `logits` holds the result.
    pub fn step(&self, s: usize) -> [&Plan; 2] {
        assert!(s >= 1 && s <= self.inputs.len(), "decode step {s} outside 1..{}", self.inputs.len() + 1);
        [&self.inputs[s - 1], &self.body]
    }
}
