//! The GPT policy on the GPU: GPT-2's layout (pre-LayerNorm blocks, GELU MLP, tied token embedding and output head),
//! optionally with a scalar head on the final hidden state (reward and value models).
//!
//! Parameters live in one buffer, gradients in another (`TensorArena`s, HF GPT-2 names); every activation has its own
//! buffer, allocated once for a fixed (B, T). `forward` and `backward` are `Plan`s built at construction, which read
//! like llm.c's gpt2_forward / gpt2_backward: a list of op calls. The objective (SFT, DPO, ...) sits between them: it
//! reads `logps` (and `scalar`) and writes `dlogps` (and `dscalar`).

use crate::gpu::{Gpu, Plan, Tensor, TensorArena};
use crate::model::{GptConfig, Policy};
use crate::ops::{attention, encoder, layernorm, logprobs, matmul};
use crate::Result;

/// Per-layer activations (llm.c's ActivationTensors, one buffer each so a kernel never binds one buffer both
/// read-only and read-write).
struct LayerActs {
    ln1: Tensor,       // (B, T, C)
    ln1_mean: Tensor,  // (B, T)
    ln1_rstd: Tensor,  // (B, T)
    qkv: Tensor,       // (B, T, 3C)
    atty: Tensor,      // (B, T, C)
    preatt: Tensor,    // (B, NH, T, T)
    att: Tensor,       // (B, NH, T, T)
    attproj: Tensor,   // (B, T, C)
    residual2: Tensor, // (B, T, C)
    ln2: Tensor,       // (B, T, C)
    ln2_mean: Tensor,  // (B, T)
    ln2_rstd: Tensor,  // (B, T)
    fch: Tensor,       // (B, T, 4C)
    fch_gelu: Tensor,  // (B, T, 4C)
    fcproj: Tensor,    // (B, T, C)
    residual3: Tensor, // (B, T, C)
}

/// Per-layer activation gradients.
struct LayerGrads {
    dln1: Tensor,  // (B, T, C)
    dqkv: Tensor,  // (B, T, 3C)
    datty: Tensor, // (B, T, C)
    dln2: Tensor,  // (B, T, C)
    dfch: Tensor,  // (B, T, 4C)
}

pub struct Gpt {
    pub cfg: GptConfig,
    /// B: sequences per batch the plans are built for.
    pub b: usize,
    /// T: sequence length the plans are built for (<= cfg.context).
    pub t: usize,
    pub params: TensorArena,
    pub grads: TensorArena,
    /// (B, T) u32 input token ids.
    pub tokens: Tensor,
    /// (B, T) u32 next-token targets.
    pub targets: Tensor,
    /// (B, T, V) logits after the forward; after the backward their gradient (it is computed in place).
    pub logits: Tensor,
    /// (B, T) logsumexp of each logits row.
    pub lse: Tensor,
    /// (B, T) log pi(target | prefix).
    pub logps: Tensor,
    /// (B, T) d loss / d logps, written by the objective.
    pub dlogps: Tensor,
    /// (B, T) scalar head output (reward/value), when cfg.scalar_head.
    pub scalar: Option<Tensor>,
    /// (B, T) d loss / d scalar, written by the objective.
    pub dscalar: Option<Tensor>,
    pub forward: Plan,
    pub backward: Plan,
    /// Each layer's qkv activation (B, T, 3C): the keys and values a `Decoder` continues from after `forward`.
    pub(crate) kv_cache: Vec<Tensor>,
}

fn parts(cfg: &GptConfig) -> Vec<(String, usize)> {
    cfg.param_shapes().into_iter().map(|(n, s)| (n, s.iter().product())).collect()
}

/// A linear layer's forward, out = inp @ w^T + bias (`out.1`: GELU's output, for c_fc's epilogue; then `out.0` is the
/// pre-activation), in the form the tuner chose for its shape (`matmul::ForwardForm`): the product as it is, or the
/// weight transposed into `weight_t` first and the plain product.
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_forward(
    gpu: &Gpu,
    fwd: &mut Plan,
    weight_t: &Tensor,
    out: (&Tensor, Option<&Tensor>),
    inp: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    bt: usize,
    c: usize,
    oc: usize,
) {
    let form = matmul::choose_forward_form(gpu, bt, c, oc, true, out.1.is_some());
    let bias = Some(bias);
    match (form, out) {
        (matmul::ForwardForm::Direct, (o, None)) => fwd.push(matmul::matmul_forward(gpu, o, inp, w, bias, bt, c, oc)),
        (matmul::ForwardForm::Direct, (pre, Some(o))) => {
            fwd.push(matmul::matmul_forward_gelu(gpu, o, pre, inp, w, bias, bt, c, oc))
        }
        (matmul::ForwardForm::Transposed, out) => {
            fwd.push(crate::ops::elementwise::transpose4(gpu, weight_t, w, oc, c));
            fwd.push(match out {
                (o, None) => matmul::matmul_forward_t(gpu, o, inp, weight_t, bias, bt, c, oc),
                (pre, Some(o)) => matmul::matmul_forward_gelu_t(gpu, o, pre, inp, weight_t, bias, bt, c, oc),
            });
        }
    }
}

impl Gpt {
    /// Build a GPT for batches of shape (B, T), with parameters from `params` (contiguous, `param_shapes` order).
    pub fn new(gpu: &Gpu, cfg: &GptConfig, b: usize, t: usize, params: &[f32]) -> Result<Gpt> {
        cfg.validate()?;
        if t == 0 || t > cfg.context || b == 0 {
            return Err(crate::Error::config(format!(
                "batch shape (B={b}, T={t}) must have B >= 1 and 1 <= T <= context ({})",
                cfg.context
            )));
        }
        let parts = parts(cfg);
        let expected: usize = parts.iter().map(|p| p.1).sum();
        if params.len() != expected {
            return Err(crate::Error::config(format!("GPT expects {expected} parameters, got {}", params.len())));
        }
        let (v, c, nh, l) = (cfg.vocab_size, cfg.width, cfg.heads, cfg.layers);
        let bt = b * t;
        let param_arena = TensorArena::new(gpu, "params", &parts)?;
        param_arena.upload_contiguous(gpu, params);
        let grad_arena = TensorArena::new(gpu, "grads", &parts)?;

        let z = |label: &str, n: usize| Tensor::zeros(gpu, label, n);
        let tokens = z("tokens", bt)?;
        let targets = z("targets", bt)?;
        let encoded = z("encoded", bt * c)?;
        let mut acts = Vec::with_capacity(l);
        let mut grads = Vec::with_capacity(l);
        for _ in 0..l {
            acts.push(LayerActs {
                ln1: z("ln1", bt * c)?,
                ln1_mean: z("ln1_mean", bt)?,
                ln1_rstd: z("ln1_rstd", bt)?,
                qkv: z("qkv", bt * 3 * c)?,
                atty: z("atty", bt * c)?,
                preatt: z("preatt", b * nh * t * t)?,
                att: z("att", b * nh * t * t)?,
                attproj: z("attproj", bt * c)?,
                residual2: z("residual2", bt * c)?,
                ln2: z("ln2", bt * c)?,
                ln2_mean: z("ln2_mean", bt)?,
                ln2_rstd: z("ln2_rstd", bt)?,
                fch: z("fch", bt * 4 * c)?,
                fch_gelu: z("fch_gelu", bt * 4 * c)?,
                fcproj: z("fcproj", bt * c)?,
                residual3: z("residual3", bt * c)?,
            });
            grads.push(LayerGrads {
                dln1: z("dln1", bt * c)?,
                dqkv: z("dqkv", bt * 3 * c)?,
                datty: z("datty", bt * c)?,
                dln2: z("dln2", bt * c)?,
                dfch: z("dfch", bt * 4 * c)?,
            });
        }
        // (B, T, C) the gradient of the residual stream, shared by every block (see the backward below).
        let dresidual = z("dresidual", bt * c)?;
        let lnf = z("lnf", bt * c)?;
        let lnf_mean = z("lnf_mean", bt)?;
        let lnf_rstd = z("lnf_rstd", bt)?;
        let dlnf = z("dlnf", bt * c)?;
        // (B, T, V) the logits, and after the backward's first kernel their gradient (`logprobs_backward` works in
        // place: no second (B, T, V) buffer).
        let logits = z("logits", bt * v)?;
        let lse = z("lse", bt)?;
        let logps = z("logps", bt)?;
        let dlogps = z("dlogps", bt)?;
        // A linear layer's weight transposed, where the tuner found that faster (`linear_forward`): one scratch for
        // every layer, each transpose followed by its product.
        let weight_t = z("weight_t", 4 * c * c)?;
        // Attention backward scratch, shared by all layers (they run one after another).
        let dpreatt = z("dpreatt", b * nh * t * t)?;
        let datt = z("datt", b * nh * t * t)?;
        let (scalar, dscalar) =
            if cfg.scalar_head { (Some(z("scalar", bt)?), Some(z("dscalar", bt)?)) } else { (None, None) };

        let p = |name: String| param_arena.get(&name).clone();
        let g = |name: String| grad_arena.get(&name).clone();
        let h = |i: usize, s: &str| format!("transformer.h.{i}.{s}");

        // ---- forward (gpt2_forward) ----
        let mut fwd = Plan::new();
        fwd.push(encoder::encoder_forward(
            gpu,
            &encoded,
            &tokens,
            &p("transformer.wte.weight".into()),
            &p("transformer.wpe.weight".into()),
            b,
            t,
            c,
        ));
        for i in 0..l {
            let a = &acts[i];
            let residual = if i == 0 { &encoded } else { &acts[i - 1].residual3 };
            let (ln1w, ln1b) = (p(h(i, "ln_1.weight")), p(h(i, "ln_1.bias")));
            if i == 0 {
                fwd.push(layernorm::layernorm_forward(
                    gpu,
                    &a.ln1,
                    &a.ln1_mean,
                    &a.ln1_rstd,
                    residual,
                    &ln1w,
                    &ln1b,
                    bt,
                    c,
                ));
            } else {
                // The previous block's residual3 = residual2 + fcproj, fused with this block's ln_1.
                let prev = &acts[i - 1];
                fwd.push(layernorm::residual_layernorm_forward(
                    gpu,
                    residual,
                    &a.ln1,
                    &a.ln1_mean,
                    &a.ln1_rstd,
                    &prev.residual2,
                    &prev.fcproj,
                    &ln1w,
                    &ln1b,
                    bt,
                    c,
                ));
            }
            let lin =
                |fwd: &mut Plan, out: (&Tensor, Option<&Tensor>), inp: &Tensor, layer: &str, c: usize, oc: usize| {
                    let (w, bias) = (p(h(i, &format!("{layer}.weight"))), p(h(i, &format!("{layer}.bias"))));
                    linear_forward(gpu, fwd, &weight_t, out, inp, &w, &bias, bt, c, oc);
                };
            lin(&mut fwd, (&a.qkv, None), &a.ln1, "attn.c_attn", c, 3 * c);
            fwd.extend(attention::attention_forward(gpu, &a.atty, &a.preatt, &a.att, &a.qkv, b, t, c, nh));
            lin(&mut fwd, (&a.attproj, None), &a.atty, "attn.c_proj", c, c);
            // residual2 = residual + attproj, fused with ln_2.
            fwd.push(layernorm::residual_layernorm_forward(
                gpu,
                &a.residual2,
                &a.ln2,
                &a.ln2_mean,
                &a.ln2_rstd,
                residual,
                &a.attproj,
                &p(h(i, "ln_2.weight")),
                &p(h(i, "ln_2.bias")),
                bt,
                c,
            ));
            // fch = ln2 @ c_fc + bias and fch_gelu = gelu(fch), the GELU in the product's epilogue.
            lin(&mut fwd, (&a.fch, Some(&a.fch_gelu)), &a.ln2, "mlp.c_fc", c, 4 * c);
            lin(&mut fwd, (&a.fcproj, None), &a.fch_gelu, "mlp.c_proj", 4 * c, c);
            // residual3 = residual2 + fcproj is computed by the next LayerNorm's dispatch (the next block's ln_1,
            // or ln_f after the last block).
        }
        let last = &acts[l - 1];
        let (lnfw, lnfb) = (p("transformer.ln_f.weight".into()), p("transformer.ln_f.bias".into()));
        fwd.push(layernorm::residual_layernorm_forward(
            gpu,
            &last.residual3,
            &lnf,
            &lnf_mean,
            &lnf_rstd,
            &last.residual2,
            &last.fcproj,
            &lnfw,
            &lnfb,
            bt,
            c,
        ));
        let wte = p("transformer.wte.weight".into());
        fwd.push(matmul::matmul_forward(gpu, &logits, &lnf, &wte, None, bt, c, v));
        fwd.push(logprobs::logprobs_forward(gpu, &logps, &lse, &logits, &targets, bt, v));
        if let Some(s) = &scalar {
            fwd.push(matmul::matmul_forward(gpu, s, &lnf, &p("score.weight".into()), None, bt, c, 1));
        }

        // ---- backward (gpt2_backward); every gradient buffer is zeroed at the start of the step ----
        let mut bwd = Plan::new();
        bwd.clear(&grad_arena.all);
        for t_ in [&dresidual, &dlnf] {
            bwd.clear(t_);
        }
        for gr in &grads {
            for t_ in [&gr.dln1, &gr.dqkv, &gr.datty, &gr.dln2, &gr.dfch] {
                bwd.clear(t_);
            }
        }
        let dwte = g("transformer.wte.weight".into());
        // The logits become their gradient, dlogits (in place), which the LM head's backward reads.
        let dlogits = &logits;
        bwd.push(logprobs::logprobs_backward(gpu, dlogits, &dlogps, &lse, &targets, bt, v));
        bwd.extend(matmul::matmul_backward(gpu, Some(&dlnf), &dwte, None, dlogits, &lnf, &wte, bt, c, v));
        if let (Some(_), Some(ds)) = (&scalar, &dscalar) {
            bwd.extend(matmul::matmul_backward(
                gpu,
                Some(&dlnf),
                &g("score.weight".into()),
                None,
                ds,
                &lnf,
                &p("score.weight".into()),
                bt,
                c,
                1,
            ));
        }
        bwd.extend(layernorm::layernorm_backward(
            gpu,
            &dresidual,
            &g("transformer.ln_f.weight".into()),
            &g("transformer.ln_f.bias".into()),
            &dlnf,
            &last.residual3,
            &lnfw,
            &lnf_mean,
            &lnf_rstd,
            bt,
            c,
        ));
        // One buffer holds the residual stream's gradient all the way down (llm.c's CUDA trainer does the same): a
        // residual add's backward copies its output gradient to both inputs, so instead the branch's matmul reads
        // `dresidual` as its output gradient and the LayerNorm behind it accumulates into it. What it holds is
        // d residual3 at the top of a block, d residual2 after ln_2's backward, d residual after ln_1's.
        for i in (0..l).rev() {
            let (a, gr) = (&acts[i], &grads[i]);
            let residual = if i == 0 { &encoded } else { &acts[i - 1].residual3 };
            // residual3 = residual2 + fcproj: dfcproj is dresidual as it stands.
            // dfch += (dfcproj @ c_proj) ⊙ gelu'(fch): the GELU's backward in the dinp product's epilogue.
            bwd.extend(matmul::matmul_backward_gelu(
                gpu,
                &gr.dfch,
                &g(h(i, "mlp.c_proj.weight")),
                Some(&g(h(i, "mlp.c_proj.bias"))),
                &dresidual,
                &a.fch_gelu,
                &a.fch,
                &p(h(i, "mlp.c_proj.weight")),
                bt,
                4 * c,
                c,
            ));
            bwd.extend(matmul::matmul_backward(
                gpu,
                Some(&gr.dln2),
                &g(h(i, "mlp.c_fc.weight")),
                Some(&g(h(i, "mlp.c_fc.bias"))),
                &gr.dfch,
                &a.ln2,
                &p(h(i, "mlp.c_fc.weight")),
                bt,
                c,
                4 * c,
            ));
            bwd.extend(layernorm::layernorm_backward(
                gpu,
                &dresidual,
                &g(h(i, "ln_2.weight")),
                &g(h(i, "ln_2.bias")),
                &gr.dln2,
                &a.residual2,
                &p(h(i, "ln_2.weight")),
                &a.ln2_mean,
                &a.ln2_rstd,
                bt,
                c,
            ));
            // residual2 = residual + attproj: dattproj is dresidual (now d residual2) as it stands.
            bwd.extend(matmul::matmul_backward(
                gpu,
                Some(&gr.datty),
                &g(h(i, "attn.c_proj.weight")),
                Some(&g(h(i, "attn.c_proj.bias"))),
                &dresidual,
                &a.atty,
                &p(h(i, "attn.c_proj.weight")),
                bt,
                c,
                c,
            ));
            bwd.extend(attention::attention_backward(
                gpu, &gr.dqkv, &dpreatt, &datt, &gr.datty, &a.qkv, &a.att, b, t, c, nh,
            ));
            bwd.extend(matmul::matmul_backward(
                gpu,
                Some(&gr.dln1),
                &g(h(i, "attn.c_attn.weight")),
                Some(&g(h(i, "attn.c_attn.bias"))),
                &gr.dqkv,
                &a.ln1,
                &p(h(i, "attn.c_attn.weight")),
                bt,
                c,
                3 * c,
            ));
            bwd.extend(layernorm::layernorm_backward(
                gpu,
                &dresidual,
                &g(h(i, "ln_1.weight")),
                &g(h(i, "ln_1.bias")),
                &gr.dln1,
                residual,
                &p(h(i, "ln_1.weight")),
                &a.ln1_mean,
                &a.ln1_rstd,
                bt,
                c,
            ));
        }
        bwd.extend(encoder::encoder_backward(
            gpu,
            &dwte,
            &g("transformer.wpe.weight".into()),
            &dresidual,
            &tokens,
            b,
            t,
            c,
            v,
        ));

        Ok(Gpt {
            cfg: cfg.clone(),
            b,
            t,
            params: param_arena,
            grads: grad_arena,
            tokens,
            targets,
            logits,
            lse,
            logps,
            dlogps,
            scalar,
            dscalar,
            forward: fwd,
            backward: bwd,
            kv_cache: acts.iter().map(|a| a.qkv.clone()).collect(),
        })
    }

    /// Upload a batch: tokens and targets, each (B, T) row-major.
    pub fn set_batch(&self, gpu: &Gpu, tokens: &[u32], targets: &[u32]) -> Result<()> {
        let n = self.b * self.t;
        if tokens.len() != n || targets.len() != n {
            return Err(crate::Error::config(format!(
                "batch must hold B*T = {n} tokens and targets, got {} and {}",
                tokens.len(),
                targets.len()
            )));
        }
        if let Some(&bad) = tokens.iter().chain(targets).find(|&&x| x as usize >= self.cfg.vocab_size) {
            return Err(crate::Error::config(format!(
                "token id {bad} is outside the vocabulary (V = {})",
                self.cfg.vocab_size
            )));
        }
        self.tokens.write_u32(gpu, tokens);
        self.targets.write_u32(gpu, targets);
        Ok(())
    }

    /// The parameters as contiguous host tensors (`param_shapes` order).
    pub async fn download_params(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        self.params.download_contiguous(gpu).await
    }

    /// Replace the parameters (contiguous, `param_shapes` order); an error unless there are exactly as many as the
    /// model has.
    pub fn upload_params(&self, gpu: &Gpu, params: &[f32]) -> Result<()> {
        let want: usize = self.params.tensors.iter().map(|(_, t)| t.len).sum();
        if params.len() != want {
            return Err(crate::Error::config(format!(
                "upload_params: this GPT has {want} parameters, got {}",
                params.len()
            )));
        }
        self.params.upload_contiguous(gpu, params);
        Ok(())
    }
}

impl Policy for Gpt {
    fn forward_plan(&self) -> &Plan {
        &self.forward
    }
    fn backward_plan(&self) -> &Plan {
        &self.backward
    }
    fn params(&self) -> &TensorArena {
        &self.params
    }
    fn grads(&self) -> &TensorArena {
        &self.grads
    }
    fn logps(&self) -> &Tensor {
        &self.logps
    }
    fn dlogps(&self) -> &Tensor {
        &self.dlogps
    }
    fn scalar(&self) -> Option<&Tensor> {
        self.scalar.as_ref()
    }
    fn dscalar(&self) -> Option<&Tensor> {
        self.dscalar.as_ref()
    }
    fn rows(&self) -> usize {
        self.b
    }
    fn seq_len(&self) -> usize {
        self.t
    }
}
