//! Optimizers on the GPU: AdamW (decoupled weight decay, bias correction) and plain SGD, both behind the same global
//! gradient-norm clipping. The whole update is a fixed `Plan` (norm pass, clip scale, one update dispatch over the
//! packed parameter buffer); Adam's step counter and its bias corrections live on the GPU, and the hyperparameters are
//! a small block the host writes before submitting, so nothing is rebuilt or allocated per step and several steps
//! can be recorded into one submit. A step whose gradient norm is not finite is skipped on the GPU (parameters and
//! moments keep their last good values) and counted; `Optimizer::check` turns the count read back with the metrics
//! into an error naming the step.

use serde::{Deserialize, Serialize};

use crate::gpu::{Gpu, Plan, Tensor, TensorArena};
use crate::ops::adamw::{self, AdamHyper};
use crate::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adam,
    Sgd,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimConfig {
    pub kind: OptimizerKind,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Decoupled (AdamW) weight decay; applied to every parameter, as in llm.c's train_gpt2.c.
    pub weight_decay: f32,
    /// Global gradient-norm clipping threshold; 0 disables clipping.
    pub grad_clip: f32,
    /// SGD only: heavy-ball momentum (PyTorch's, dampening 0); 0 is plain SGD.
    pub momentum: f32,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            kind: OptimizerKind::Adam,
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            grad_clip: 1.0,
            momentum: 0.0,
        }
    }
}

pub struct Optimizer {
    pub cfg: OptimConfig,
    /// Steps asked for so far (`prepare` counts them; applied ones and skipped ones alike). Adam's own t, which counts
    /// applied steps only, lives on the GPU in `norm`'s step state.
    pub step: u32,
    /// `ops::adamw::norm_len(G)` f32: [global grad norm, clip scale] of the last step per group (2G), then each
    /// group's step state [t, beta1^t, beta2^t, skipped]. Trainers read it back with their metrics and pass it to
    /// `check`.
    pub norm: Tensor,
    /// G: independent models packed in the arenas (a replicated model's replicas), each clipped by its own norm.
    pub groups: usize,
    hyper: Tensor,
    /// One optimizer step (norm, clip, non-finite check, update). It depends on nothing the host writes per step, so
    /// several steps may be recorded into one submit by recording it several times.
    pub plan: Plan,
    /// Skipped steps per group as of the last `check`.
    skipped_seen: Vec<u32>,
    _state: Vec<Tensor>,
    /// Buffers the plan binds that are not optimizer state (the fused SGD update's unused moment bindings).
    _bound: Vec<Tensor>,
}

/// Parameters per replica-packed arena, checked: `groups` equal replicas, as many gradients as parameters.
fn check_sizes(params: &TensorArena, grads: &TensorArena, groups: usize) -> Result<usize> {
    let n = params.all.len;
    if !n.is_multiple_of(groups) {
        return Err(crate::Error::config(format!("{n} parameters do not split into {groups} equal replicas")));
    }
    if grads.all.len != n {
        return Err(crate::Error::config(format!("{n} parameters but {} gradients", grads.all.len)));
    }
    Ok(n)
}

/// The norm buffer (norms, clip scales, step states; `adamw::norm_init`) and the hyperparameter block.
fn step_buffers(gpu: &Gpu, groups: usize) -> Result<(Tensor, Tensor)> {
    Ok((Tensor::from_f32(gpu, "grad norm", &adamw::norm_init(groups))?, Tensor::uniform(gpu, "optimizer hyper", 8)?))
}

impl Optimizer {
    pub fn new(gpu: &Gpu, params: &TensorArena, grads: &TensorArena, cfg: &OptimConfig) -> Result<Optimizer> {
        Self::with_groups(gpu, params, grads, cfg, 1)
    }

    /// An optimizer over `groups` independent models packed back to back in the arenas (`Policy::replicas`): the
    /// same update everywhere, but each group's gradient norm, and so its clipping, its step counter and its skipping
    /// of non-finite steps, is its own.
    pub fn with_groups(
        gpu: &Gpu,
        params: &TensorArena,
        grads: &TensorArena,
        cfg: &OptimConfig,
        groups: usize,
    ) -> Result<Optimizer> {
        let groups = groups.max(1);
        let n = check_sizes(params, grads, groups)?;
        let (norm, hyper) = step_buffers(gpu, groups)?;
        let scratch = Tensor::zeros(gpu, "grad norm scratch", groups * adamw::grad_norm_scratch_len(n / groups))?;
        let mut plan = Plan::new();
        plan.extend(adamw::grad_norm_groups(gpu, &norm, &grads.all, &scratch, &hyper, n, groups, cfg.grad_clip));
        let mut state = vec![scratch];
        match cfg.kind {
            OptimizerKind::Adam => {
                let m = Tensor::zeros(gpu, "adam m", n)?;
                let v = Tensor::zeros(gpu, "adam v", n)?;
                plan.push(adamw::adamw_update_groups(gpu, &params.all, &grads.all, &m, &v, &hyper, &norm, n, groups));
                state.extend([m, v]);
            }
            OptimizerKind::Sgd if cfg.momentum != 0.0 => {
                let buf = Tensor::zeros(gpu, "sgd momentum", n)?;
                plan.push(adamw::sgd_momentum_update_groups(
                    gpu,
                    &params.all,
                    &grads.all,
                    &buf,
                    &hyper,
                    &norm,
                    n,
                    groups,
                ));
                state.push(buf);
            }
            OptimizerKind::Sgd => {
                plan.push(adamw::sgd_update_groups(gpu, &params.all, &grads.all, &hyper, &norm, n, groups));
            }
        }
        Ok(Self::assemble(gpu, cfg, groups, norm, hyper, plan, state, Vec::new()))
    }

    /// The optimizer from its built parts, with the hyperparameters written.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        gpu: &Gpu,
        cfg: &OptimConfig,
        groups: usize,
        norm: Tensor,
        hyper: Tensor,
        plan: Plan,
        state: Vec<Tensor>,
        bound: Vec<Tensor>,
    ) -> Optimizer {
        let opt = Optimizer {
            cfg: cfg.clone(),
            step: 0,
            norm,
            groups,
            hyper,
            plan,
            skipped_seen: vec![0; groups],
            _state: state,
            _bound: bound,
        };
        opt.write_hyper(gpu);
        opt
    }

    /// The optimizer a policy needs: `with_groups` over its parameter and gradient arenas (one group per replica),
    /// or, for a policy whose backward leaves a gradient factored (`Policy::factored_grads`: the fused toy MLP), the
    /// fused update: the norm from the partial sums of squares its backward wrote, then one dispatch that updates
    /// every parameter, fc2.weight's gradient recomputed from its factors. Same arithmetic per element, same norm
    /// buffer and step state, so `check`, `moments` and resuming work the same.
    pub fn for_policy(gpu: &Gpu, policy: &dyn crate::model::Policy, cfg: &OptimConfig) -> Result<Optimizer> {
        let Some(f) = policy.factored_grads() else {
            return Self::with_groups(gpu, policy.params(), policy.grads(), cfg, policy.replicas());
        };
        let (params, grads) = (policy.params(), policy.grads());
        let groups = policy.replicas().max(1);
        let n = check_sizes(params, grads, groups)?;
        let mut shape = f.shape;
        shape.kind = match cfg.kind {
            OptimizerKind::Adam => 0,
            OptimizerKind::Sgd => 1,
        };
        let (norm, hyper) = step_buffers(gpu, groups)?;
        // SGD keeps its momentum buffer in m (written even at momentum 0) and binds v unused (one float).
        let v_len = if cfg.kind == OptimizerKind::Adam { n } else { 1 };
        let (m, v) = (Tensor::zeros(gpu, "adam m", n)?, Tensor::zeros(gpu, "adam v", v_len)?);
        let mut plan = Plan::new();
        plan.push(adamw::grad_norm_final(
            gpu,
            &norm,
            f.partials,
            &hyper,
            n / groups,
            groups,
            shape.partials(),
            cfg.grad_clip,
        ));
        plan.push(crate::ops::toy_mlp::update(
            gpu,
            &shape,
            &params.all,
            &grads.all,
            &m,
            &v,
            &hyper,
            &norm,
            f.h1t,
            f.dt,
        ));
        // `_state` = [norm scratch (none here: the backward wrote the partials), moments...] as `with_groups` has it.
        let scratch = Tensor::zeros(gpu, "unused norm scratch", 1)?;
        let (state, keep) = match cfg.kind {
            OptimizerKind::Adam => (vec![scratch, m, v], vec![]),
            OptimizerKind::Sgd if cfg.momentum != 0.0 => (vec![scratch, m], vec![v]),
            OptimizerKind::Sgd => (vec![scratch], vec![m, v]),
        };
        Ok(Self::assemble(gpu, cfg, groups, norm, hyper, plan, state, keep))
    }

    /// The optimizer's state buffers, each over the packed parameter buffer (Adam: the first and second moments;
    /// SGD: none), for saving a run and resuming it (`train::state`). Adam's step counters live in `norm` (after
    /// the per-group norms: `ops::adamw::step_state`), which a resumed run restores too.
    pub fn moments(&self) -> &[Tensor] {
        &self._state[1..]
    }

    fn write_hyper(&self, gpu: &Gpu) {
        let c = &self.cfg;
        let h = AdamHyper { momentum: c.momentum, ..AdamHyper::new(c.lr, c.beta1, c.beta2, c.eps, c.weight_decay) };
        self.hyper.write_f32(gpu, h.as_f32s());
    }

    /// Count the step about to be submitted and write the hyperparameters (`cfg` may have changed, e.g. the learning
    /// rate); call before submitting the step.
    pub fn prepare(&mut self, gpu: &Gpu) {
        self.prepare_steps(gpu, 1);
    }

    /// `prepare` for a submit that records `plan` `k` times (k optimizer steps).
    pub fn prepare_steps(&mut self, gpu: &Gpu, k: u32) {
        self.step += k;
        self.write_hyper(gpu);
    }

    /// Check `norm`'s contents read back after a step (with the metrics, in the same submit): an error naming `what`
    /// (e.g. "DPO step 12"), the replica and the norm if a group skipped a step since the last check. The skipped
    /// step left that group's parameters and optimizer moments as they were.
    pub fn check(&mut self, norm: &[f32], what: &str) -> Result<()> {
        let mut bad = Vec::new();
        for g in 0..self.groups {
            let [t, _, _, skipped] = adamw::step_state(norm, self.groups, g);
            let skipped = skipped as u32;
            if skipped > self.skipped_seen[g] {
                let replica = if self.groups > 1 { format!(" replica {g}") } else { String::new() };
                let new = skipped - self.skipped_seen[g];
                let kept =
                    format!("parameters and optimizer state kept from the last good step ({} applied)", t as u32);
                bad.push(if !norm[2 * g].is_finite() {
                    let earlier =
                        if new > 1 { format!(" (and {} earlier unchecked one(s))", new - 1) } else { String::new() };
                    format!(
                        "{what}{replica}: gradient norm {} is not finite; update skipped{earlier}, {kept}",
                        norm[2 * g]
                    )
                } else {
                    format!(
                        "{what}{replica}: {new} update(s) since the last check had a gradient norm that is not finite \
                             and were skipped; {kept}"
                    )
                });
                self.skipped_seen[g] = skipped;
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(crate::Error::NonFinite(bad.join("; ")))
        }
    }

    /// Adam's applied step count t of group g, read from the GPU (a separate readback: for tests and inspection).
    pub async fn applied_steps(&self, gpu: &Gpu, g: usize) -> Result<u32> {
        let norm = self.norm.read_f32(gpu).await?;
        Ok(adamw::step_state(&norm, self.groups, g)[0] as u32)
    }
}
