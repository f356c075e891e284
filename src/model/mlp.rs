//! The paper's toy policy on the GPU (section 3.2): a one-hot prompt (P) -> hidden (H) -> hidden (H) -> response
//! logits (R), ReLU between, softmax over responses. Each batch row is (prompt, response); its "sequence" is one
//! token, so T = 1 and the same objectives that drive the GPT drive this model. An optional scalar head on the last
//! hidden layer makes it a toy reward or value model.
//!
//! `forward` also writes the full (B, R) log-softmax, from which the toy study reads every response's probability.

use crate::gpu::{Gpu, Plan, Tensor, TensorArena};
use crate::model::{MlpConfig, Policy};
use crate::ops::{elementwise, logprobs, matmul};
use crate::Result;

pub struct Mlp {
    pub cfg: MlpConfig,
    /// B: rows per batch the plans are built for.
    pub b: usize,
    pub params: TensorArena,
    pub grads: TensorArena,
    /// (B, P) one-hot prompts.
    pub x: Tensor,
    /// (B) u32 response index of each row.
    pub targets: Tensor,
    /// (B, R)
    pub logits: Tensor,
    /// (B, R) full log-softmax.
    pub log_probs: Tensor,
    /// (B)
    pub lse: Tensor,
    /// (B) log pi(target | prompt)
    pub logps: Tensor,
    /// (B) d loss / d logps
    pub dlogps: Tensor,
    pub scalar: Option<Tensor>,
    pub dscalar: Option<Tensor>,
    pub forward: Plan,
    pub backward: Plan,
}

fn parts(cfg: &MlpConfig) -> Vec<(String, usize)> {
    cfg.param_shapes().into_iter().map(|(n, s)| (n, s.iter().product())).collect()
}

impl Mlp {
    pub fn new(gpu: &Gpu, cfg: &MlpConfig, b: usize, params: &[f32]) -> Result<Mlp> {
        cfg.validate()?;
        if b == 0 {
            return Err(crate::Error::config("MLP batch must have at least one row"));
        }
        let parts = parts(cfg);
        let expected: usize = parts.iter().map(|p| p.1).sum();
        if params.len() != expected {
            return Err(crate::Error::config(format!("MLP expects {expected} parameters, got {}", params.len())));
        }
        let (p_, h, r) = (cfg.prompts, cfg.hidden, cfg.responses);
        let pa = TensorArena::new(gpu, "mlp params", &parts)?;
        pa.upload_contiguous(gpu, params);
        let ga = TensorArena::new(gpu, "mlp grads", &parts)?;
        let z = |label: &str, n: usize| Tensor::zeros(gpu, label, n);
        let x = z("x", b * p_)?;
        let targets = z("targets", b)?;
        let (h1pre, h1, h2pre, h2) = (z("h1pre", b * h)?, z("h1", b * h)?, z("h2pre", b * h)?, z("h2", b * h)?);
        let (dh1pre, dh1, dh2pre, dh2) = (z("dh1pre", b * h)?, z("dh1", b * h)?, z("dh2pre", b * h)?, z("dh2", b * h)?);
        let logits = z("logits", b * r)?;
        let dlogits = z("dlogits", b * r)?;
        let log_probs = z("log_probs", b * r)?;
        let lse = z("lse", b)?;
        let logps = z("logps", b)?;
        let dlogps = z("dlogps", b)?;
        let (scalar, dscalar) =
            if cfg.scalar_head { (Some(z("scalar", b)?), Some(z("dscalar", b)?)) } else { (None, None) };

        let p = |n: &str| pa.get(n).clone();
        let g = |n: &str| ga.get(n).clone();
        let fc1b = cfg.first_bias.then(|| p("fc1.bias"));
        let dfc1b = cfg.first_bias.then(|| g("fc1.bias"));

        let mut fwd = Plan::new();
        fwd.push(matmul::matmul_forward(gpu, &h1pre, &x, &p("fc1.weight"), fc1b.as_ref(), b, p_, h));
        fwd.push(elementwise::relu_forward(gpu, &h1, &h1pre, b * h));
        fwd.push(matmul::matmul_forward(gpu, &h2pre, &h1, &p("fc2.weight"), Some(&p("fc2.bias")), b, h, h));
        fwd.push(elementwise::relu_forward(gpu, &h2, &h2pre, b * h));
        fwd.push(matmul::matmul_forward(gpu, &logits, &h2, &p("fc3.weight"), Some(&p("fc3.bias")), b, h, r));
        fwd.push(logprobs::logprobs_forward(gpu, &logps, &lse, &logits, &targets, b, r));
        fwd.push(logprobs::log_softmax(gpu, &log_probs, &logits, b, r));
        if let Some(s) = &scalar {
            fwd.push(matmul::matmul_forward(gpu, s, &h2, &p("score.weight"), Some(&p("score.bias")), b, h, 1));
        }

        let mut bwd = Plan::new();
        bwd.clear(&ga.all);
        for t in [&dh1pre, &dh1, &dh2pre, &dh2, &dlogits] {
            bwd.clear(t);
        }
        bwd.push(logprobs::logprobs_backward(gpu, &dlogits, &dlogps, &logits, &lse, &targets, b, r));
        bwd.extend(matmul::matmul_backward(
            gpu,
            Some(&dh2),
            &g("fc3.weight"),
            Some(&g("fc3.bias")),
            &dlogits,
            &h2,
            &p("fc3.weight"),
            b,
            h,
            r,
        ));
        if let (Some(_), Some(ds)) = (&scalar, &dscalar) {
            bwd.extend(matmul::matmul_backward(
                gpu,
                Some(&dh2),
                &g("score.weight"),
                Some(&g("score.bias")),
                ds,
                &h2,
                &p("score.weight"),
                b,
                h,
                1,
            ));
        }
        bwd.push(elementwise::relu_backward(gpu, &dh2pre, &h2pre, &dh2, b * h));
        bwd.extend(matmul::matmul_backward(
            gpu,
            Some(&dh1),
            &g("fc2.weight"),
            Some(&g("fc2.bias")),
            &dh2pre,
            &h1,
            &p("fc2.weight"),
            b,
            h,
            h,
        ));
        bwd.push(elementwise::relu_backward(gpu, &dh1pre, &h1pre, &dh1, b * h));
        bwd.extend(matmul::matmul_backward(
            gpu,
            None,
            &g("fc1.weight"),
            dfc1b.as_ref(),
            &dh1pre,
            &x,
            &p("fc1.weight"),
            b,
            p_,
            h,
        ));

        Ok(Mlp {
            cfg: cfg.clone(),
            b,
            params: pa,
            grads: ga,
            x,
            targets,
            logits,
            log_probs,
            lse,
            logps,
            dlogps,
            scalar,
            dscalar,
            forward: fwd,
            backward: bwd,
        })
    }

    /// Upload a batch: the prompt index and the response index of each of the B rows.
    pub fn set_batch(&self, gpu: &Gpu, prompts: &[u32], responses: &[u32]) -> Result<()> {
        if prompts.len() != self.b || responses.len() != self.b {
            return Err(crate::Error::config(format!(
                "MLP batch needs {} prompts and responses, got {} and {}",
                self.b,
                prompts.len(),
                responses.len()
            )));
        }
        let mut x = vec![0.0f32; self.b * self.cfg.prompts];
        for (i, &pr) in prompts.iter().enumerate() {
            if pr as usize >= self.cfg.prompts {
                return Err(crate::Error::config(format!("prompt {pr} out of range (P = {})", self.cfg.prompts)));
            }
            x[i * self.cfg.prompts + pr as usize] = 1.0;
        }
        if let Some(&bad) = responses.iter().find(|&&r| r as usize >= self.cfg.responses) {
            return Err(crate::Error::config(format!("response {bad} out of range (R = {})", self.cfg.responses)));
        }
        self.x.write_f32(gpu, &x);
        self.targets.write_u32(gpu, responses);
        Ok(())
    }

    /// Upload arbitrary inputs (B, P) (for example two-hot (prompt, response) encodings of a toy reward model)
    /// and the response index of each row.
    pub fn set_inputs(&self, gpu: &Gpu, x: &[f32], responses: &[u32]) -> Result<()> {
        if x.len() != self.b * self.cfg.prompts || responses.len() != self.b {
            return Err(crate::Error::config(format!(
                "MLP inputs must be ({}, {}) with {} responses",
                self.b, self.cfg.prompts, self.b
            )));
        }
        if let Some(&bad) = responses.iter().find(|&&r| r as usize >= self.cfg.responses) {
            return Err(crate::Error::config(format!("response {bad} out of range (R = {})", self.cfg.responses)));
        }
        self.x.write_f32(gpu, x);
        self.targets.write_u32(gpu, responses);
        Ok(())
    }

    pub async fn download_params(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        self.params.download_contiguous(gpu).await
    }

    pub fn upload_params(&self, gpu: &Gpu, params: &[f32]) {
        self.params.upload_contiguous(gpu, params);
    }
}

impl Policy for Mlp {
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
        1
    }
}
