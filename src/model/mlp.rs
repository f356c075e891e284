//! The paper's toy policy on the GPU (section 3.2): a one-hot prompt (P) -> hidden (H) -> hidden (H) -> response
//! logits (R), ReLU between, softmax over responses. Each batch row is (prompt, response); its "sequence" is one
//! token, so T = 1 and the same objectives that drive the GPT drive this model. An optional scalar head on the last
//! hidden layer makes it a toy reward or value model.
//!
//! `forward` also writes the full (B, R) log-softmax, from which the toy study reads every response's probability.
//!
//! Replicas: `Mlp::replicated` builds N independent copies (own parameters, gradients, rows) evaluated by the same
//! dispatches, which is how the toy study trains its 5 seeds (or 4 data scenarios) at once: on a launch-bound device
//! N runs cost about what one does. Each replica computes bit-for-bit what it would alone (same kernels, same
//! summation orders; objectives reduce and optimizers clip per replica). Rows are replica-major: (N, B) for every
//! activation; the arenas hold N consecutive copies of the single model's layout.

use crate::gpu::{Gpu, Plan, Tensor, TensorArena};
use crate::model::{MlpConfig, Policy};
use crate::ops::matmul::Replicas;
use crate::ops::{elementwise, logprobs, matmul};
use crate::Result;

pub struct Mlp {
    pub cfg: MlpConfig,
    /// B: rows per replica the plans are built for.
    pub b: usize,
    /// N: independent replicas (1 for a lone model).
    pub replicas: usize,
    pub params: TensorArena,
    pub grads: TensorArena,
    /// (N, B, P) one-hot prompts.
    pub x: Tensor,
    /// (N, B) u32 response index of each row.
    pub targets: Tensor,
    /// (N, B, R) logits after the forward; after the backward their gradient (it is computed in place).
    pub logits: Tensor,
    /// (N, B, R) full log-softmax.
    pub log_probs: Tensor,
    /// (N, B)
    pub lse: Tensor,
    /// (N, B) log pi(target | prompt)
    pub logps: Tensor,
    /// (N, B) d loss / d logps
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
        Self::replicated(gpu, cfg, 1, b, params)
    }

    /// `replicas` independent copies of the model, each with B rows; `params` holds each replica's parameters
    /// (in `MlpConfig::param_shapes` order) one replica after another.
    pub fn replicated(gpu: &Gpu, cfg: &MlpConfig, replicas: usize, b: usize, params: &[f32]) -> Result<Mlp> {
        cfg.validate()?;
        if b == 0 || replicas == 0 {
            return Err(crate::Error::config("an MLP needs at least one row and one replica"));
        }
        let one = parts(cfg);
        let per: usize = one.iter().map(|p| p.1).sum();
        if params.len() != replicas * per {
            return Err(crate::Error::config(format!(
                "MLP expects {} parameters ({replicas} replicas x {per}), got {}",
                replicas * per,
                params.len()
            )));
        }
        let (offsets, stride) = TensorArena::layout(&one);
        let all_parts: Vec<(String, usize)> = (0..replicas)
            .flat_map(|k| {
                one.iter().map(move |(n, l)| (if k == 0 { n.clone() } else { format!("replica{k}.{n}") }, *l))
            })
            .collect();
        let (p_, h, r) = (cfg.prompts, cfg.hidden, cfg.responses);
        let pa = TensorArena::new(gpu, "mlp params", &all_parts)?;
        pa.upload_contiguous(gpu, params);
        let ga = TensorArena::new(gpu, "mlp grads", &all_parts)?;
        let rep = Replicas::new(replicas, stride);
        let rows = replicas * b;
        let z = |label: &str, n: usize| Tensor::zeros(gpu, label, n);
        let x = z("x", rows * p_)?;
        let targets = z("targets", rows)?;
        // Hidden layer l (0-based): pre-activation, activation and their gradients, (N B, H) each.
        let depth = cfg.depth;
        let layer =
            |what: &str| (0..depth).map(|l| z(&format!("{what}{}", l + 1), rows * h)).collect::<Result<Vec<_>>>();
        let (hpre, hs, dhpre, dhs) = (layer("hpre")?, layer("h")?, layer("dhpre")?, layer("dh")?);
        let logits = z("logits", rows * r)?;
        let log_probs = z("log_probs", rows * r)?;
        let lse = z("lse", rows)?;
        let logps = z("logps", rows)?;
        let dlogps = z("dlogps", rows)?;
        let (scalar, dscalar) =
            if cfg.scalar_head { (Some(z("scalar", rows)?), Some(z("dscalar", rows)?)) } else { (None, None) };

        // Views from replica 0's tensor across every replica's copy (`Replicas::span`).
        let view = |arena: &TensorArena, name: &str| {
            let i = one.iter().position(|(n, _)| n == name).expect("parameter name");
            arena.all.slice(offsets[i], rep.span(one[i].1))
        };
        let p = |n: &str| view(&pa, n);
        let g = |n: &str| view(&ga, n);
        let fc1b = cfg.first_bias.then(|| p("fc1.bias"));
        let dfc1b = cfg.first_bias.then(|| g("fc1.bias"));
        let head = cfg.head();
        let last = &hs[depth - 1];

        let mut fwd = Plan::new();
        fwd.push(matmul::matmul_forward_replicas(gpu, &hpre[0], &x, &p("fc1.weight"), fc1b.as_ref(), b, p_, h, rep));
        fwd.push(elementwise::relu_forward(gpu, &hs[0], &hpre[0], rows * h));
        for l in 1..depth {
            let (w, bias) = (p(&format!("fc{}.weight", l + 1)), p(&format!("fc{}.bias", l + 1)));
            fwd.push(matmul::matmul_forward_replicas(gpu, &hpre[l], &hs[l - 1], &w, Some(&bias), b, h, h, rep));
            fwd.push(elementwise::relu_forward(gpu, &hs[l], &hpre[l], rows * h));
        }
        let (hw, hb) = (p(&format!("{head}.weight")), p(&format!("{head}.bias")));
        fwd.push(matmul::matmul_forward_replicas(gpu, &logits, last, &hw, Some(&hb), b, h, r, rep));
        // Row forms chosen for one replica's rows, as a lone model chooses them: bit for bit the same sums.
        fwd.push(logprobs::logprobs_forward_replicas(gpu, &logps, &lse, &logits, &targets, b, rep.count, r));
        fwd.push(logprobs::log_softmax_replicas(gpu, &log_probs, &logits, b, rep.count, r));
        if let Some(s) = &scalar {
            fwd.push(matmul::matmul_forward_replicas(
                gpu,
                s,
                last,
                &p("score.weight"),
                Some(&p("score.bias")),
                b,
                h,
                1,
                rep,
            ));
        }

        let mut bwd = Plan::new();
        bwd.clear(&ga.all);
        // The logits become their gradient, dlogits, in place (`logprobs_backward`).
        let dlogits = &logits;
        for t in dhpre.iter().chain(&dhs) {
            bwd.clear(t);
        }
        bwd.push(logprobs::logprobs_backward(gpu, dlogits, &dlogps, &lse, &targets, rows, r));
        let dlast = &dhs[depth - 1];
        let (dhw, dhb) = (g(&format!("{head}.weight")), g(&format!("{head}.bias")));
        bwd.extend(matmul::matmul_backward_replicas(
            gpu,
            Some(dlast),
            &dhw,
            Some(&dhb),
            dlogits,
            last,
            &hw,
            b,
            h,
            r,
            rep,
        ));
        if let (Some(_), Some(ds)) = (&scalar, &dscalar) {
            bwd.extend(matmul::matmul_backward_replicas(
                gpu,
                Some(dlast),
                &g("score.weight"),
                Some(&g("score.bias")),
                ds,
                last,
                &p("score.weight"),
                b,
                h,
                1,
                rep,
            ));
        }
        for l in (1..depth).rev() {
            bwd.push(elementwise::relu_backward(gpu, &dhpre[l], &hpre[l], &dhs[l], rows * h));
            let name = format!("fc{}", l + 1);
            bwd.extend(matmul::matmul_backward_replicas(
                gpu,
                Some(&dhs[l - 1]),
                &g(&format!("{name}.weight")),
                Some(&g(&format!("{name}.bias"))),
                &dhpre[l],
                &hs[l - 1],
                &p(&format!("{name}.weight")),
                b,
                h,
                h,
                rep,
            ));
        }
        bwd.push(elementwise::relu_backward(gpu, &dhpre[0], &hpre[0], &dhs[0], rows * h));
        bwd.extend(matmul::matmul_backward_replicas(
            gpu,
            None,
            &g("fc1.weight"),
            dfc1b.as_ref(),
            &dhpre[0],
            &x,
            &p("fc1.weight"),
            b,
            p_,
            h,
            rep,
        ));

        Ok(Mlp {
            cfg: cfg.clone(),
            b,
            replicas,
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

    /// Rows over all replicas (N B).
    pub fn rows(&self) -> usize {
        self.replicas * self.b
    }

    /// Upload a batch: the prompt index and the response index of each of the B rows (the same batch for every
    /// replica), or of all N B rows.
    pub fn set_batch(&self, gpu: &Gpu, prompts: &[u32], responses: &[u32]) -> Result<()> {
        let ok = |n: usize| n == self.b || n == self.rows();
        if !ok(prompts.len()) || responses.len() != prompts.len() {
            return Err(crate::Error::config(format!(
                "MLP batch needs {} (or {}) prompts and as many responses, got {} and {}",
                self.b,
                self.rows(),
                prompts.len(),
                responses.len()
            )));
        }
        let (prompts, responses) = (self.tile(prompts), self.tile(responses));
        let mut x = vec![0.0f32; self.rows() * self.cfg.prompts];
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
        self.targets.write_u32(gpu, &responses);
        Ok(())
    }

    /// A per-replica batch repeated for every replica (or all rows as given).
    fn tile<T: Copy>(&self, v: &[T]) -> Vec<T> {
        if v.len() == self.rows() {
            v.to_vec()
        } else {
            v.iter().copied().cycle().take(self.rows()).collect()
        }
    }

    /// Upload arbitrary inputs (B, P) (for example two-hot (prompt, response) encodings of a toy reward model)
    /// and the response index of each row.
    pub fn set_inputs(&self, gpu: &Gpu, x: &[f32], responses: &[u32]) -> Result<()> {
        if x.len() != self.rows() * self.cfg.prompts || responses.len() != self.rows() {
            return Err(crate::Error::config(format!(
                "MLP inputs must be ({}, {}) with {} responses",
                self.rows(),
                self.cfg.prompts,
                self.rows()
            )));
        }
        if let Some(&bad) = responses.iter().find(|&&r| r as usize >= self.cfg.responses) {
            return Err(crate::Error::config(format!("response {bad} out of range (R = {})", self.cfg.responses)));
        }
        self.x.write_f32(gpu, x);
        self.targets.write_u32(gpu, responses);
        Ok(())
    }

    /// Every replica's parameters, one replica after another (contiguous, `MlpConfig::param_shapes` order).
    pub async fn download_params(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        self.params.download_contiguous(gpu).await
    }

    /// Each replica's parameters separately.
    pub async fn download_replica_params(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        let all = self.download_params(gpu).await?;
        let per = all.len() / self.replicas;
        Ok(all.chunks(per).map(|c| c.to_vec()).collect())
    }

    /// Replace every replica's parameters (one replica after another, as `download_params` gives them); an error
    /// unless there are exactly as many as the model has.
    pub fn upload_params(&self, gpu: &Gpu, params: &[f32]) -> Result<()> {
        let want: usize = self.params.tensors.iter().map(|(_, t)| t.len).sum();
        if params.len() != want {
            return Err(crate::Error::config(format!(
                "upload_params: this MLP has {want} parameters ({} replica(s)), got {}",
                self.replicas,
                params.len()
            )));
        }
        self.params.upload_contiguous(gpu, params);
        Ok(())
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
        self.replicas * self.b
    }
    fn replicas(&self) -> usize {
        self.replicas
    }
    fn seq_len(&self) -> usize {
        1
    }
}
