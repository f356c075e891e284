//! The CPU reference GPT-2: llm.c's `gpt2_forward` / `gpt2_backward`, call for call, written with the reference
//! ops of this module's siblings. It is what the GPU model's logits, log-probabilities and every parameter
//! gradient are compared against, and its own gradients are checked by finite differences
//! (tests/reference_models.rs). It is deliberately plain: fresh allocations per call, no threads, f32 throughout.
//!
//! Parameters are one packed `Vec<f32>` in `GptConfig::param_shapes` order, each tensor contiguous, no padding;
//! gradients use the same layout. The language-model head is tied to the token embedding (`wte`), so `dwte`
//! collects both the head's gradient and the encoder's. An optional scalar head (`score.weight`, (1, C), no bias)
//! reads the final layer-normed hidden state at every position: reward and value models.
//!
//! Dimension letters: B batch, T time, C channels, V vocab, NH heads, L layers.

use crate::model::config::GptConfig;
use crate::reference::attention::{attention_backward, attention_forward};
use crate::reference::elementwise::{gelu_backward, gelu_forward, residual_backward, residual_forward};
use crate::reference::encoder::{encoder_backward, encoder_forward};
use crate::reference::layernorm::{layernorm_backward, layernorm_forward};
use crate::reference::logprobs::{logprobs_backward, logprobs_forward, sft_loss};
use crate::reference::matmul::{matmul_backward, matmul_forward};

/// One transformer block's tensors as views `S` (`&[f32]` or `&mut [f32]`) into a packed buffer. Field names are
/// llm.c's; the Hugging Face name (`transformer.h.{l}.` prefix) and internal (out, in) shape are in the comments.
#[derive(Debug)]
pub struct GptLayer<S> {
    pub ln1w: S,     // (C)      ln_1.weight
    pub ln1b: S,     // (C)      ln_1.bias
    pub qkvw: S,     // (3C, C)  attn.c_attn.weight
    pub qkvb: S,     // (3C)     attn.c_attn.bias
    pub attprojw: S, // (C, C)   attn.c_proj.weight
    pub attprojb: S, // (C)      attn.c_proj.bias
    pub ln2w: S,     // (C)      ln_2.weight
    pub ln2b: S,     // (C)      ln_2.bias
    pub fcw: S,      // (4C, C)  mlp.c_fc.weight
    pub fcb: S,      // (4C)     mlp.c_fc.bias
    pub fcprojw: S,  // (C, 4C)  mlp.c_proj.weight
    pub fcprojb: S,  // (C)      mlp.c_proj.bias
}

/// Every GPT tensor as a view `S` into one packed buffer (parameters or gradients).
#[derive(Debug)]
pub struct GptTensors<S> {
    pub wte: S, // (V, C)  transformer.wte.weight (also the language-model head)
    pub wpe: S, // (maxT, C)  transformer.wpe.weight
    pub layers: Vec<GptLayer<S>>,
    pub lnfw: S,           // (C)  transformer.ln_f.weight
    pub lnfb: S,           // (C)  transformer.ln_f.bias
    pub scorew: Option<S>, // (1, C)  score.weight, present iff cfg.scalar_head
}

impl<S> GptTensors<S> {
    /// Assemble from one view per tensor, in `param_shapes` order.
    fn from_parts(cfg: &GptConfig, parts: Vec<S>) -> GptTensors<S> {
        let mut it = parts.into_iter();
        let mut next = || it.next().expect("GPT parameter table shorter than the config says");
        let wte = next();
        let wpe = next();
        let mut layers = Vec::with_capacity(cfg.layers);
        for _ in 0..cfg.layers {
            layers.push(GptLayer {
                ln1w: next(),
                ln1b: next(),
                qkvw: next(),
                qkvb: next(),
                attprojw: next(),
                attprojb: next(),
                ln2w: next(),
                ln2b: next(),
                fcw: next(),
                fcb: next(),
                fcprojw: next(),
                fcprojb: next(),
            });
        }
        let lnfw = next();
        let lnfb = next();
        let scorew = if cfg.scalar_head { Some(next()) } else { None };
        GptTensors { wte, wpe, layers, lnfw, lnfb, scorew }
    }
}

/// (name, offset into the packed buffer, shape) of every tensor, in packing order.
pub fn offsets(cfg: &GptConfig) -> Vec<(String, usize, Vec<usize>)> {
    packed_offsets(cfg.param_shapes())
}

/// Shared by the GPT and MLP tables: running offsets over (name, shape) in order.
pub(crate) fn packed_offsets(shapes: Vec<(String, Vec<usize>)>) -> Vec<(String, usize, Vec<usize>)> {
    let mut off = 0;
    shapes
        .into_iter()
        .map(|(name, shape)| {
            let o = off;
            off += shape.iter().product::<usize>();
            (name, o, shape)
        })
        .collect()
}

/// Split a packed buffer into consecutive read-only pieces of the given sizes.
pub(crate) fn split_packed<'a>(buf: &'a [f32], sizes: &[usize]) -> Vec<&'a [f32]> {
    let mut rest = buf;
    let mut out = Vec::with_capacity(sizes.len());
    for &n in sizes {
        let (a, r) = rest.split_at(n);
        out.push(a);
        rest = r;
    }
    assert!(rest.is_empty(), "packed buffer has {} elements past the last tensor", rest.len());
    out
}

/// Split a packed buffer into consecutive mutable pieces of the given sizes.
pub(crate) fn split_packed_mut<'a>(buf: &'a mut [f32], sizes: &[usize]) -> Vec<&'a mut [f32]> {
    let mut rest = buf;
    let mut out = Vec::with_capacity(sizes.len());
    for &n in sizes {
        let (a, r) = std::mem::take(&mut rest).split_at_mut(n);
        out.push(a);
        rest = r;
    }
    assert!(rest.is_empty(), "packed buffer has {} elements past the last tensor", rest.len());
    out
}

fn sizes(cfg: &GptConfig) -> Vec<usize> {
    cfg.param_shapes().iter().map(|(_, s)| s.iter().product()).collect()
}

/// Read-only views of a packed GPT buffer (parameters or gradients).
pub fn views<'a>(cfg: &GptConfig, buf: &'a [f32]) -> GptTensors<&'a [f32]> {
    GptTensors::from_parts(cfg, split_packed(buf, &sizes(cfg)))
}

/// Mutable views of a packed GPT buffer (parameters or gradients).
pub fn views_mut<'a>(cfg: &GptConfig, buf: &'a mut [f32]) -> GptTensors<&'a mut [f32]> {
    GptTensors::from_parts(cfg, split_packed_mut(buf, &sizes(cfg)))
}

/// Everything the forward pass keeps for the backward pass, llm.c's `ActivationTensors` (with lse and token
/// log-probabilities where llm.c keeps probs and losses). Per-layer tensors are stacked along a leading L.
#[derive(Clone, Debug)]
pub struct GptActs {
    pub b: usize,
    pub t: usize,
    pub encoded: Vec<f32>,        // (B, T, C)
    pub ln1: Vec<f32>,            // (L, B, T, C)
    pub ln1_mean: Vec<f32>,       // (L, B, T)
    pub ln1_rstd: Vec<f32>,       // (L, B, T)
    pub qkv: Vec<f32>,            // (L, B, T, 3C)
    pub atty: Vec<f32>,           // (L, B, T, C)
    pub preatt: Vec<f32>,         // (L, B, NH, T, T)
    pub att: Vec<f32>,            // (L, B, NH, T, T)
    pub attproj: Vec<f32>,        // (L, B, T, C)
    pub residual2: Vec<f32>,      // (L, B, T, C)
    pub ln2: Vec<f32>,            // (L, B, T, C)
    pub ln2_mean: Vec<f32>,       // (L, B, T)
    pub ln2_rstd: Vec<f32>,       // (L, B, T)
    pub fch: Vec<f32>,            // (L, B, T, 4C)
    pub fch_gelu: Vec<f32>,       // (L, B, T, 4C)
    pub fcproj: Vec<f32>,         // (L, B, T, C)
    pub residual3: Vec<f32>,      // (L, B, T, C)
    pub lnf: Vec<f32>,            // (B, T, C)
    pub lnf_mean: Vec<f32>,       // (B, T)
    pub lnf_rstd: Vec<f32>,       // (B, T)
    pub logits: Vec<f32>,         // (B, T, V)
    pub lse: Vec<f32>,            // (B, T)  logsumexp of each logits row
    pub logps: Vec<f32>,          // (B, T)  log p(targets[b, t] | tokens[b, ..=t])
    pub scalar: Option<Vec<f32>>, // (B, T)  lnf @ score.weight^T, iff cfg.scalar_head
}

impl GptActs {
    fn zeros(cfg: &GptConfig, b: usize, t: usize) -> GptActs {
        let (l, c, v, nh) = (cfg.layers, cfg.width, cfg.vocab_size, cfg.heads);
        let (bt, btc) = (b * t, b * t * c);
        let z = |n: usize| vec![0.0f32; n];
        GptActs {
            b,
            t,
            encoded: z(btc),
            ln1: z(l * btc),
            ln1_mean: z(l * bt),
            ln1_rstd: z(l * bt),
            qkv: z(l * 3 * btc),
            atty: z(l * btc),
            preatt: z(l * b * nh * t * t),
            att: z(l * b * nh * t * t),
            attproj: z(l * btc),
            residual2: z(l * btc),
            ln2: z(l * btc),
            ln2_mean: z(l * bt),
            ln2_rstd: z(l * bt),
            fch: z(l * 4 * btc),
            fch_gelu: z(l * 4 * btc),
            fcproj: z(l * btc),
            residual3: z(l * btc),
            lnf: z(btc),
            lnf_mean: z(bt),
            lnf_rstd: z(bt),
            logits: z(bt * v),
            lse: z(bt),
            logps: z(bt),
            scalar: if cfg.scalar_head { Some(z(bt)) } else { None },
        }
    }
}

/// Layer `l`'s slice of a tensor stacked along a leading L of `nl` layers.
fn lay(v: &[f32], l: usize, nl: usize) -> &[f32] {
    let n = v.len() / nl;
    &v[l * n..(l + 1) * n]
}

fn lay_mut(v: &mut [f32], l: usize, nl: usize) -> &mut [f32] {
    let n = v.len() / nl;
    &mut v[l * n..(l + 1) * n]
}

/// The reference GPT: a config and its packed parameters.
#[derive(Clone, Debug)]
pub struct GptRef {
    pub cfg: GptConfig,
    pub params: Vec<f32>, // packed in param_shapes order, each tensor contiguous, no padding
}

impl GptRef {
    /// Wrap packed parameters (from `model::init`, the GPU or a checkpoint).
    pub fn from_params(cfg: &GptConfig, params: Vec<f32>) -> GptRef {
        assert_eq!(params.len(), cfg.num_params(), "packed GPT parameter count");
        GptRef { cfg: cfg.clone(), params }
    }

    /// Read-only views of the parameters, one field per tensor.
    pub fn views(&self) -> GptTensors<&[f32]> {
        views(&self.cfg, &self.params)
    }

    /// The tensor called `name` (a `param_shapes` name); panics if there is none.
    pub fn tensor(&self, name: &str) -> &[f32] {
        let (off, n) = self.locate(name);
        &self.params[off..off + n]
    }

    pub fn tensor_mut(&mut self, name: &str) -> &mut [f32] {
        let (off, n) = self.locate(name);
        &mut self.params[off..off + n]
    }

    fn locate(&self, name: &str) -> (usize, usize) {
        let (_, off, shape) = offsets(&self.cfg)
            .into_iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no GPT tensor named {name}"));
        (off, shape.iter().product())
    }

    /// llm.c's gpt2_forward, ending in per-position log-probabilities of `targets` instead of a mean loss.
    pub fn forward(
        &self,
        tokens: &[u32],  // (B, T) input token ids
        targets: &[u32], // (B, T) token whose log-probability is taken at each position
        b: usize,
        t: usize,
    ) -> GptActs {
        let cfg = &self.cfg;
        let (v, c, nh, nl) = (cfg.vocab_size, cfg.width, cfg.heads, cfg.layers);
        assert!(t <= cfg.context, "T = {t} exceeds the context {}", cfg.context);
        assert_eq!(tokens.len(), b * t, "tokens must be (B, T)");
        assert_eq!(targets.len(), b * t, "targets must be (B, T)");
        let (bt, btc) = (b * t, b * t * c);
        let p = self.views();
        let mut a = GptActs::zeros(cfg, b, t);

        encoder_forward(&mut a.encoded, tokens, p.wte, p.wpe, b, t, c); // encoding goes into residual[0]
        for l in 0..nl {
            let lp = &p.layers[l];
            let (r3_prev, r3_cur) = a.residual3.split_at_mut(l * btc);
            let residual: &[f32] = if l == 0 { &a.encoded } else { &r3_prev[(l - 1) * btc..] };
            let l_residual3 = &mut r3_cur[..btc];
            let l_ln1 = lay_mut(&mut a.ln1, l, nl);
            let l_ln1_mean = lay_mut(&mut a.ln1_mean, l, nl);
            let l_ln1_rstd = lay_mut(&mut a.ln1_rstd, l, nl);
            let l_qkv = lay_mut(&mut a.qkv, l, nl);
            let l_atty = lay_mut(&mut a.atty, l, nl);
            let l_preatt = lay_mut(&mut a.preatt, l, nl);
            let l_att = lay_mut(&mut a.att, l, nl);
            let l_attproj = lay_mut(&mut a.attproj, l, nl);
            let l_residual2 = lay_mut(&mut a.residual2, l, nl);
            let l_ln2 = lay_mut(&mut a.ln2, l, nl);
            let l_ln2_mean = lay_mut(&mut a.ln2_mean, l, nl);
            let l_ln2_rstd = lay_mut(&mut a.ln2_rstd, l, nl);
            let l_fch = lay_mut(&mut a.fch, l, nl);
            let l_fch_gelu = lay_mut(&mut a.fch_gelu, l, nl);
            let l_fcproj = lay_mut(&mut a.fcproj, l, nl);

            layernorm_forward(l_ln1, l_ln1_mean, l_ln1_rstd, residual, lp.ln1w, lp.ln1b, bt, c);
            matmul_forward(l_qkv, l_ln1, lp.qkvw, Some(lp.qkvb), bt, c, 3 * c);
            attention_forward(l_atty, l_preatt, l_att, l_qkv, b, t, c, nh);
            matmul_forward(l_attproj, l_atty, lp.attprojw, Some(lp.attprojb), bt, c, c);
            residual_forward(l_residual2, residual, l_attproj);
            layernorm_forward(l_ln2, l_ln2_mean, l_ln2_rstd, l_residual2, lp.ln2w, lp.ln2b, bt, c);
            matmul_forward(l_fch, l_ln2, lp.fcw, Some(lp.fcb), bt, c, 4 * c);
            gelu_forward(l_fch_gelu, l_fch);
            matmul_forward(l_fcproj, l_fch_gelu, lp.fcprojw, Some(lp.fcprojb), bt, 4 * c, c);
            residual_forward(l_residual3, l_residual2, l_fcproj);
        }
        let residual = lay(&a.residual3, nl - 1, nl); // last residual is in residual3
        layernorm_forward(&mut a.lnf, &mut a.lnf_mean, &mut a.lnf_rstd, residual, p.lnfw, p.lnfb, bt, c);
        matmul_forward(&mut a.logits, &a.lnf, p.wte, None, bt, c, v); // tied head: logits = lnf @ wte^T
        logprobs_forward(&mut a.logps, &mut a.lse, &a.logits, targets, bt, v);
        if let (Some(scalar), Some(scorew)) = (a.scalar.as_mut(), p.scorew) {
            matmul_forward(scalar, &a.lnf, scorew, None, bt, c, 1);
        }
        a
    }

    /// llm.c's gpt2_backward from d loss / d logps (and d loss / d scalar for a scalar head): returns the packed
    /// parameter gradients, same layout as `params`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        acts: &GptActs,
        tokens: &[u32],          // (B, T)
        targets: &[u32],         // (B, T)
        dlogps: &[f32],          // (B, T) d loss / d logps
        dscalar: Option<&[f32]>, // (B, T) d loss / d scalar; needs cfg.scalar_head
        b: usize,
        t: usize,
    ) -> Vec<f32> {
        let mut grads = vec![0.0f32; self.params.len()];
        self.backward_into(&mut grads, acts, tokens, targets, dlogps, dscalar, b, t);
        grads
    }

    /// `backward`, accumulating (+=) into `grads` (packed, same layout as `params`).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_into(
        &self,
        grads: &mut [f32], // packed, like params
        acts: &GptActs,
        tokens: &[u32],          // (B, T)
        targets: &[u32],         // (B, T)
        dlogps: &[f32],          // (B, T)
        dscalar: Option<&[f32]>, // (B, T)
        b: usize,
        t: usize,
    ) {
        let cfg = &self.cfg;
        let (v, c, nh, nl) = (cfg.vocab_size, cfg.width, cfg.heads, cfg.layers);
        assert_eq!((acts.b, acts.t), (b, t), "activations were computed for another (B, T)");
        assert_eq!(dlogps.len(), b * t, "dlogps must be (B, T)");
        assert!(dscalar.is_none() || cfg.scalar_head, "dscalar given but the config has no scalar head");
        let (bt, btc) = (b * t, b * t * c);
        let z = |n: usize| vec![0.0f32; n];
        let p = self.views();
        let mut g = views_mut(cfg, grads);

        // d loss / d lnf: from the tied language-model head, and from the scalar head if any
        let mut dlogits = z(bt * v); // (B, T, V)
        logprobs_backward(&mut dlogits, dlogps, &acts.logits, &acts.lse, targets, bt, v);
        let mut dlnf = z(btc); // (B, T, C)
        matmul_backward(Some(&mut dlnf), &mut *g.wte, None, &dlogits, &acts.lnf, p.wte, bt, c, v);
        if let (Some(dscalar), Some(scorew), Some(dscorew)) = (dscalar, p.scorew, g.scorew.as_deref_mut()) {
            assert_eq!(dscalar.len(), bt, "dscalar must be (B, T)");
            matmul_backward(Some(&mut dlnf), dscorew, None, dscalar, &acts.lnf, scorew, bt, c, 1);
        }

        // dres[0] is d encoded, dres[l + 1] is d residual3 of layer l
        let mut dres: Vec<Vec<f32>> = (0..=nl).map(|_| z(btc)).collect();
        let residual = lay(&acts.residual3, nl - 1, nl);
        layernorm_backward(
            &mut dres[nl],
            &mut *g.lnfw,
            &mut *g.lnfb,
            &dlnf,
            residual,
            p.lnfw,
            &acts.lnf_mean,
            &acts.lnf_rstd,
            bt,
            c,
        );

        for l in (0..nl).rev() {
            let residual: &[f32] = if l == 0 { &acts.encoded } else { lay(&acts.residual3, l - 1, nl) };
            let (lo, hi) = dres.split_at_mut(l + 1);
            let dresidual = &mut lo[l]; // (B, T, C) d of this layer's input
            let dl_residual3 = &hi[0]; // (B, T, C) d of this layer's output
            let (lp, gl) = (&p.layers[l], &mut g.layers[l]);

            let mut dl_residual2 = z(btc); // (B, T, C)
            let mut dl_fcproj = z(btc); // (B, T, C)
            let mut dl_fch_gelu = z(4 * btc); // (B, T, 4C)
            let mut dl_fch = z(4 * btc); // (B, T, 4C)
            let mut dl_ln2 = z(btc); // (B, T, C)
            let mut dl_attproj = z(btc); // (B, T, C)
            let mut dl_atty = z(btc); // (B, T, C)
            let mut dl_preatt = z(b * nh * t * t); // (B, NH, T, T)
            let mut dl_att = z(b * nh * t * t); // (B, NH, T, T)
            let mut dl_qkv = z(3 * btc); // (B, T, 3C)
            let mut dl_ln1 = z(btc); // (B, T, C)

            residual_backward(&mut dl_residual2, &mut dl_fcproj, dl_residual3);
            matmul_backward(
                Some(&mut dl_fch_gelu),
                &mut *gl.fcprojw,
                Some(&mut *gl.fcprojb),
                &dl_fcproj,
                lay(&acts.fch_gelu, l, nl),
                lp.fcprojw,
                bt,
                4 * c,
                c,
            );
            gelu_backward(&mut dl_fch, lay(&acts.fch, l, nl), &dl_fch_gelu);
            matmul_backward(
                Some(&mut dl_ln2),
                &mut *gl.fcw,
                Some(&mut *gl.fcb),
                &dl_fch,
                lay(&acts.ln2, l, nl),
                lp.fcw,
                bt,
                c,
                4 * c,
            );
            layernorm_backward(
                &mut dl_residual2,
                &mut *gl.ln2w,
                &mut *gl.ln2b,
                &dl_ln2,
                lay(&acts.residual2, l, nl),
                lp.ln2w,
                lay(&acts.ln2_mean, l, nl),
                lay(&acts.ln2_rstd, l, nl),
                bt,
                c,
            );
            residual_backward(dresidual, &mut dl_attproj, &dl_residual2);
            matmul_backward(
                Some(&mut dl_atty),
                &mut *gl.attprojw,
                Some(&mut *gl.attprojb),
                &dl_attproj,
                lay(&acts.atty, l, nl),
                lp.attprojw,
                bt,
                c,
                c,
            );
            attention_backward(
                &mut dl_qkv,
                &mut dl_preatt,
                &mut dl_att,
                &dl_atty,
                lay(&acts.qkv, l, nl),
                lay(&acts.att, l, nl),
                b,
                t,
                c,
                nh,
            );
            matmul_backward(
                Some(&mut dl_ln1),
                &mut *gl.qkvw,
                Some(&mut *gl.qkvb),
                &dl_qkv,
                lay(&acts.ln1, l, nl),
                lp.qkvw,
                bt,
                c,
                3 * c,
            );
            layernorm_backward(
                dresidual,
                &mut *gl.ln1w,
                &mut *gl.ln1b,
                &dl_ln1,
                residual,
                lp.ln1w,
                lay(&acts.ln1_mean, l, nl),
                lay(&acts.ln1_rstd, l, nl),
                bt,
                c,
            );
        }
        encoder_backward(&mut *g.wte, &mut *g.wpe, &dres[0], tokens, b, t, c);
    }

    /// SFT in one call: forward, masked mean negative log-likelihood (reference::logprobs::sft_loss), backward.
    /// Returns (loss, packed grads).
    pub fn sft_loss_and_grads(
        &self,
        tokens: &[u32],  // (B, T)
        targets: &[u32], // (B, T)
        mask: &[f32],    // (B, T) 1 where the target counts
        b: usize,
        t: usize,
    ) -> (f32, Vec<f32>) {
        let acts = self.forward(tokens, targets, b, t);
        let mut loss = [0.0f32];
        let mut dlogps = vec![0.0f32; b * t];
        sft_loss(&mut loss, &mut dlogps, &acts.logps, mask, b * t);
        let grads = self.backward(&acts, tokens, targets, &dlogps, None, b, t);
        (loss[0], grads)
    }
}
