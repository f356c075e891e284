//! The paper's toy MLP with fused kernels (`ops::toy_mlp`): the same model, parameters and layout as `Mlp`, for the
//! toy's shape (one-hot prompts P <= 4, R <= 16 responses, P R <= 64, B <= 64 rows per replica). The forward
//! computes the whole (P, R) table of log-probabilities (every row is a lookup in it) in 2 dispatches; the backward
//! takes 2 and leaves fc2.weight's gradient factored (h1t, dt), which the fused update (`train::Optimizer::for_policy`)
//! recomputes where it reads the weight. A toy DPO step is 9 dispatches (forward 2, loss 3, backward 2, norm and
//! update 2) where `Mlp` with `Optimizer` takes 23, and no pass reads or writes a materialised fc2 gradient.
//!
//! `Mlp` stays the general model (any P, a scalar head, arbitrary inputs) and the reference this one is tested
//! against (`tests/fused_mlp.rs`): same numbers up to f32 summation order.
//!
//! Replicas as in `Mlp::replicated`: N independent copies in the same dispatches, each bit for bit what it computes
//! alone; rows and activations are replica-major.

use crate::gpu::{Gpu, Plan, Tensor, TensorArena};
use crate::model::{FactoredGrads, MlpConfig, Policy};
use crate::ops::toy_mlp::{self, ToyShape, NONE};
use crate::{Error, Result};

pub struct FusedMlp {
    pub cfg: MlpConfig,
    /// B: rows per replica.
    pub b: usize,
    /// N
    pub replicas: usize,
    pub shape: ToyShape,
    pub params: TensorArena,
    /// Every gradient except fc2.weight's, which stays factored unless `w2_grad` runs.
    pub grads: TensorArena,
    /// (N, B, 2) u32 (prompt, response) per row.
    pub rows: Tensor,
    /// depth x (N, H) vec4: hidden layer l + 1's activation, per prompt (component u = prompt u).
    pub hs: Vec<Tensor>,
    /// (depth - 1) x (N, H) vec4: d loss / d pre-activation of hidden layer l + 2 (ds[0]: fc2's).
    pub ds: Vec<Tensor>,
    /// (N, P, R) log-softmax of every prompt's logits.
    pub log_probs: Tensor,
    /// (N, B) log pi(response | prompt) of the rows.
    pub logps: Tensor,
    /// (N, B) d loss / d logps
    pub dlogps: Tensor,
    /// (N, depth nblk) partial sums of squares of the gradient.
    pub partials: Tensor,
    pub forward: Plan,
    pub backward: Plan,
    /// fc2.weight's gradient written into `grads` (after `backward`): for tests and inspection.
    pub w2_grad: Plan,
}

impl FusedMlp {
    /// Why `cfg` with `b` rows cannot use the fused kernels, if it cannot.
    pub fn unsupported(cfg: &MlpConfig, b: usize) -> Option<String> {
        if cfg.scalar_head {
            Some("the fused toy MLP has no scalar head".into())
        } else if cfg.depth < 2 {
            Some(format!("the fused toy MLP needs at least 2 hidden layers, got {}", cfg.depth))
        } else if !(1..=4).contains(&cfg.prompts) {
            Some(format!("the fused toy MLP takes 1 to 4 prompts, got {}", cfg.prompts))
        } else if cfg.responses > 16 || cfg.prompts * cfg.responses > toy_mlp::WG {
            Some(format!(
                "the fused toy MLP takes at most 16 responses and 64 (prompt, response) logits, got {}",
                cfg.responses
            ))
        } else if b == 0 || b > toy_mlp::WG {
            Some(format!("the fused toy MLP takes 1 to 64 rows per replica, got {b}"))
        } else {
            None
        }
    }

    /// `replicas` copies with B rows each; `params` as for `Mlp::replicated` (each replica's parameters in
    /// `MlpConfig::param_shapes` order, one replica after another).
    pub fn replicated(gpu: &Gpu, cfg: &MlpConfig, replicas: usize, b: usize, params: &[f32]) -> Result<FusedMlp> {
        cfg.validate()?;
        if let Some(why) = Self::unsupported(cfg, b) {
            return Err(Error::config(why));
        }
        if replicas == 0 || replicas > 65535 {
            return Err(Error::config(format!("the fused toy MLP takes 1 to 65535 replicas, got {replicas}")));
        }
        let one: Vec<(String, usize)> = cfg.param_shapes().into_iter().map(|(n, s)| (n, s.iter().product())).collect();
        let per: usize = one.iter().map(|p| p.1).sum();
        if params.len() != replicas * per {
            return Err(Error::config(format!(
                "MLP expects {} parameters ({replicas} replicas x {per}), got {}",
                replicas * per,
                params.len()
            )));
        }
        let (offsets, stride) = TensorArena::layout(&one);
        let off = |name: &str| one.iter().position(|(n, _)| n == name).map(|i| offsets[i] as u32);
        let all_parts: Vec<(String, usize)> = (0..replicas)
            .flat_map(|k| {
                one.iter().map(move |(n, l)| (if k == 0 { n.clone() } else { format!("replica{k}.{n}") }, *l))
            })
            .collect();
        let params_arena = TensorArena::new(gpu, "fused mlp params", &all_parts)?;
        params_arena.upload_contiguous(gpu, params);
        let grads = TensorArena::new(gpu, "fused mlp grads", &all_parts)?;
        let (h, p, r, depth) = (cfg.hidden, cfg.prompts, cfg.responses, cfg.depth);
        let nblk = ToyShape::blocks(h);
        let name = |l: usize, what: &str| off(&format!("fc{l}.{what}")).expect("MLP parameter");
        let head = cfg.head();
        let shape = ToyShape {
            h: h as u32,
            p: p as u32,
            r: r as u32,
            b: b as u32,
            stride: stride as u32,
            o_w1: name(1, "weight"),
            o_b1: off("fc1.bias").unwrap_or(NONE),
            o_w2: name(2, "weight"),
            o_b2: name(2, "bias"),
            o_w3: off(&format!("{head}.weight")).expect("head"),
            o_b3: off(&format!("{head}.bias")).expect("head"),
            nblk: nblk as u32,
            kind: 0,
            replicas: replicas as u32,
            np: (depth * nblk) as u32,
            slot: 0,
        };
        // The parameter block of a dispatch working on H -> H layer `l` (o_w2, o_b2 name it).
        let layer = |l: usize| ToyShape { o_w2: name(l, "weight"), o_b2: name(l, "bias"), ..shape };
        let n = replicas;
        let z = |label: &str, len: usize| Tensor::zeros(gpu, label, len);
        let rows = z("fused mlp rows", n * b * 2)?;
        let hs = (1..=depth).map(|l| z(&format!("h{l}t"), n * h * 4)).collect::<Result<Vec<_>>>()?;
        let ds = (2..=depth).map(|l| z(&format!("d{l}t"), n * h * 4)).collect::<Result<Vec<_>>>()?;
        let log_probs = z("fused mlp log_probs", n * p * r)?;
        let (logps, dlogps) = (z("fused mlp logps", n * b)?, z("fused mlp dlogps", n * b)?);
        let partials = z("fused mlp grad partials", n * shape.partials())?;
        let pa = &params_arena.all;
        let last = &hs[depth - 1];
        let mut forward = Plan::new();
        forward.push(toy_mlp::forward(gpu, &shape, pa, &hs[0], &hs[1]));
        for l in 3..=depth {
            forward.push(toy_mlp::hidden_forward(gpu, &layer(l), pa, &hs[l - 2], &hs[l - 1], &hs[0]));
        }
        forward.push(toy_mlp::head(gpu, &shape, pa, last, &rows, &log_probs, &logps));
        let mut backward = Plan::new();
        // The head's backward writes the last hidden layer's bias gradient (o_b2 names it).
        let head_shape = ToyShape { o_b2: name(depth, "bias"), ..shape };
        backward.push(toy_mlp::head_backward(
            gpu,
            &head_shape,
            pa,
            last,
            &rows,
            &log_probs,
            &dlogps,
            &ds[depth - 2],
            &grads.all,
            &partials,
        ));
        for l in (3..=depth).rev() {
            let s = ToyShape { o_b1: name(l - 1, "bias"), slot: ((depth - l + 1) * nblk) as u32, ..layer(l) };
            backward.push(toy_mlp::mid_backward(
                gpu,
                &s,
                pa,
                &hs[l - 2],
                &ds[l - 2],
                &ds[l - 3],
                &grads.all,
                &partials,
            ));
            backward.push(toy_mlp::w2_grad(gpu, &layer(l), &hs[l - 2], &ds[l - 2], &grads.all));
        }
        let first = ToyShape { slot: ((depth - 1) * nblk) as u32, ..shape };
        backward.push(toy_mlp::hidden_backward(gpu, &first, pa, &hs[0], &ds[0], &grads.all, &partials, &hs[1]));
        let mut w2_grad = Plan::new();
        w2_grad.push(toy_mlp::w2_grad(gpu, &shape, &hs[0], &ds[0], &grads.all));
        Ok(FusedMlp {
            cfg: cfg.clone(),
            b,
            replicas,
            shape,
            params: params_arena,
            grads,
            rows,
            hs,
            ds,
            log_probs,
            logps,
            dlogps,
            partials,
            forward,
            backward,
            w2_grad,
        })
    }

    /// Upload the batch: the prompt and response index of each of the B rows (the same for every replica), or of
    /// all N B rows.
    pub fn set_batch(&self, gpu: &Gpu, prompts: &[u32], responses: &[u32]) -> Result<()> {
        let all = self.replicas * self.b;
        if !(prompts.len() == self.b || prompts.len() == all) || responses.len() != prompts.len() {
            return Err(Error::config(format!(
                "MLP batch needs {} (or {all}) prompts and as many responses, got {} and {}",
                self.b,
                prompts.len(),
                responses.len()
            )));
        }
        if let Some(&bad) = prompts.iter().find(|&&p| p as usize >= self.cfg.prompts) {
            return Err(Error::config(format!("prompt {bad} out of range (P = {})", self.cfg.prompts)));
        }
        if let Some(&bad) = responses.iter().find(|&&r| r as usize >= self.cfg.responses) {
            return Err(Error::config(format!("response {bad} out of range (R = {})", self.cfg.responses)));
        }
        let rows: Vec<u32> = prompts.iter().zip(responses).flat_map(|(&p, &r)| [p, r]).cycle().take(2 * all).collect();
        self.rows.write_u32(gpu, &rows);
        Ok(())
    }

    /// Each replica's parameters separately (`MlpConfig::param_shapes` order, unpadded).
    pub async fn download_replica_params(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        let all = self.params.download_contiguous(gpu).await?;
        let per = all.len() / self.replicas;
        Ok(all.chunks(per).map(|c| c.to_vec()).collect())
    }

    /// Each replica's (P, R) log-probabilities, from `log_probs` read back.
    pub fn tables(&self, log_probs: &[f32]) -> Vec<Vec<f32>> {
        log_probs.chunks(self.cfg.prompts * self.cfg.responses).map(|c| c.to_vec()).collect()
    }
}

impl Policy for FusedMlp {
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
        None
    }
    fn dscalar(&self) -> Option<&Tensor> {
        None
    }
    fn rows(&self) -> usize {
        self.replicas * self.b
    }
    fn seq_len(&self) -> usize {
        1
    }
    fn replicas(&self) -> usize {
        self.replicas
    }
    fn factored_grads(&self) -> Option<FactoredGrads<'_>> {
        Some(FactoredGrads { shape: self.shape, h1t: &self.hs[0], dt: &self.ds[0], partials: &self.partials })
    }
}
