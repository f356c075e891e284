//! Optimizers on the GPU: AdamW (decoupled weight decay, bias correction) and plain SGD, both behind the same global
//! gradient-norm clipping. The whole update is a fixed `Plan` (norm pass, clip scale, one update dispatch over the
//! packed parameter buffer); what changes per step (learning rate, bias corrections) is a small parameter block the
//! host writes before submitting, so nothing is rebuilt or allocated per step.

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
        }
    }
}

pub struct Optimizer {
    pub cfg: OptimConfig,
    /// Updates taken so far.
    pub step: u32,
    /// [global grad norm, clip scale] of the last step (2 elements), per group (2G).
    pub norm: Tensor,
    /// G: independent models packed in the arenas (a replicated model's replicas), each clipped by its own norm.
    pub groups: usize,
    hyper: Tensor,
    pub plan: Plan,
    _state: Vec<Tensor>,
}

impl Optimizer {
    pub fn new(gpu: &Gpu, params: &TensorArena, grads: &TensorArena, cfg: &OptimConfig) -> Result<Optimizer> {
        Self::with_groups(gpu, params, grads, cfg, 1)
    }

    /// An optimizer over `groups` independent models packed back to back in the arenas (`Policy::replicas`): the
    /// same update everywhere, but each group's gradient norm, and so its clipping, is its own.
    pub fn with_groups(
        gpu: &Gpu,
        params: &TensorArena,
        grads: &TensorArena,
        cfg: &OptimConfig,
        groups: usize,
    ) -> Result<Optimizer> {
        let n = params.all.len;
        let groups = groups.max(1);
        if n % groups != 0 {
            return Err(crate::Error::config(format!("{n} parameters do not split into {groups} equal replicas")));
        }
        let norm = Tensor::zeros(gpu, "grad norm", 2 * groups)?;
        let hyper = Tensor::uniform(gpu, "optimizer hyper", 8)?;
        let scratch = Tensor::zeros(gpu, "grad norm scratch", groups * adamw::grad_norm_scratch_len(n / groups))?;
        let mut plan = Plan::new();
        plan.extend(adamw::grad_norm_groups(gpu, &norm, &grads.all, &scratch, n, groups, cfg.grad_clip));
        let mut state = vec![scratch];
        match cfg.kind {
            OptimizerKind::Adam => {
                let m = Tensor::zeros(gpu, "adam m", n)?;
                let v = Tensor::zeros(gpu, "adam v", n)?;
                plan.push(adamw::adamw_update_groups(gpu, &params.all, &grads.all, &m, &v, &hyper, &norm, n, groups));
                state.extend([m, v]);
            }
            OptimizerKind::Sgd => {
                plan.push(adamw::sgd_update_groups(gpu, &params.all, &grads.all, &hyper, &norm, n, groups));
            }
        }
        Ok(Optimizer { cfg: cfg.clone(), step: 0, norm, groups, hyper, plan, _state: state })
    }

    /// The optimizer's state buffers, each over the packed parameter buffer (Adam: the first and second moments;
    /// SGD: none), for saving a run and resuming it (`train::state`).
    pub fn moments(&self) -> &[Tensor] {
        &self._state[1..]
    }

    /// Advance the step counter and write this step's hyper-parameters; call before submitting the step.
    pub fn prepare(&mut self, gpu: &Gpu) {
        self.step += 1;
        let c = &self.cfg;
        let h = AdamHyper {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
            bias_correction1: 1.0 - c.beta1.powi(self.step as i32),
            bias_correction2: 1.0 - c.beta2.powi(self.step as i32),
            _pad: 0.0,
        };
        self.hyper.write_f32(gpu, bytemuck::cast_slice(&[h]));
    }
}
