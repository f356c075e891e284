//! The preference loop (DPO and its family) for either policy: one step = [reference forward + sequence log-probs,
//! when the reference is recomputed every step] -> policy forward -> preference loss -> policy backward -> clip +
//! optimizer, recorded into one encoder and submitted once; only the metric vector and the gradient norm come back.
//!
//! For the GPT, `set_batch` uploads a `PreferenceBatch` to the policy, the reference and the loss's mask together,
//! then `step` trains on it (or `micro_step`, for gradient accumulation over several batches).

use crate::data::PreferenceBatch;
use crate::gpu::{dispatch_count, Gpu, Plan, Readback};
use crate::model::{Gpt, Policy};
use crate::objectives::{Preference, PreferenceLoss, PreferenceMetrics};
use crate::ops::preference::STATS;
use crate::train::{run_step, run_step_keeping, OptimConfig, Optimizer};
use crate::{Error, Result};

/// Where the reference policy's log-probs come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReferenceMode {
    /// The frozen reference runs its forward every step (batches change).
    EveryStep,
    /// Computed once by `precompute_reference` (a fixed batch, like the paper's full-batch toy).
    Precomputed,
}

pub struct PreferenceTrainer<P: Policy> {
    pub policy: P,
    /// The frozen reference (pi0); `None` for reference-free losses.
    pub reference: Option<P>,
    pub objective: Preference,
    pub opt: Optimizer,
    pub mode: ReferenceMode,
    ref_plan: Plan,
    readback: Readback,
    metrics_readback: Readback,
}

impl<P: Policy> PreferenceTrainer<P> {
    pub fn new(
        gpu: &Gpu,
        policy: P,
        reference: Option<P>,
        loss: &PreferenceLoss,
        opt: &OptimConfig,
        mode: ReferenceMode,
    ) -> Result<Self> {
        gpu.scoped_blocking(&format!("building the {} trainer", loss.name()), || {
            Self::build(gpu, policy, reference, loss, opt, mode)
        })
    }

    fn build(
        gpu: &Gpu,
        policy: P,
        reference: Option<P>,
        loss: &PreferenceLoss,
        opt: &OptimConfig,
        mode: ReferenceMode,
    ) -> Result<Self> {
        let objective = Preference::new(gpu, &policy, loss)?;
        if loss.uses_reference() && reference.is_none() {
            return Err(Error::config(format!("{} needs a reference policy", loss.name())));
        }
        let ref_plan = match &reference {
            Some(r) => {
                if r.rows() != policy.rows() || r.seq_len() != policy.seq_len() {
                    return Err(Error::config(
                        "the reference policy must be built for the same batch shape as the policy",
                    ));
                }
                objective.reference_plan(gpu, r)
            }
            None => Plan::new(),
        };
        let optim = Optimizer::for_policy(gpu, &policy, opt)?;
        let readback = Readback::new(gpu, &[&objective.metrics, &optim.norm]);
        let metrics_readback = Readback::new(gpu, &[&objective.metrics]);
        Ok(PreferenceTrainer { policy, reference, objective, opt: optim, mode, ref_plan, readback, metrics_readback })
    }

    /// Run the reference forward once and keep its sequence log-probs (ReferenceMode::Precomputed).
    pub async fn precompute_reference(&self, gpu: &Gpu) -> Result<()> {
        if let Some(r) = &self.reference {
            run_step(gpu, &[r.forward_plan(), &self.ref_plan], None).await?;
        }
        Ok(())
    }

    fn step_plans(&self, update: bool) -> Vec<&Plan> {
        let mut plans: Vec<&Plan> = Vec::new();
        if let (Some(r), ReferenceMode::EveryStep) = (&self.reference, self.mode) {
            plans.push(r.forward_plan());
            plans.push(&self.ref_plan);
        }
        plans.push(self.policy.forward_plan());
        plans.push(&self.objective.plan);
        if update {
            plans.push(self.policy.backward_plan());
            plans.push(&self.opt.plan);
        }
        plans
    }

    pub fn dispatches_per_step(&self) -> usize {
        dispatch_count(&self.step_plans(true))
    }

    /// One optimizer step; returns the metrics of the batch before the update (as TRL logs them) and the gradient
    /// norm (replica 0's for a replicated policy; `step_with` reads every replica's). Stops with an error naming the
    /// step (and the replica) if any replica's loss or gradient norm is not finite; a non-finite gradient norm was
    /// caught on the GPU before the update, so the parameters are still those of the last good step.
    pub async fn step(&mut self, gpu: &Gpu) -> Result<(PreferenceMetrics, f32)> {
        self.opt.prepare(gpu);
        let plans = self.step_plans(true);
        let out = run_step(gpu, &plans, Some(&self.readback)).await?.expect("readback");
        self.opt.check(&out[1], &format!("{} step {}", self.objective.loss.name(), self.opt.step))?;
        for g in 0..self.objective.groups {
            let (loss, norm) = (out[0][g * STATS], out[1][2 * g]);
            if !loss.is_finite() || !norm.is_finite() {
                let replica = if self.objective.groups > 1 { format!(" replica {g}") } else { String::new() };
                return Err(Error::NonFinite(format!(
                    "{} step {}{replica}: loss {loss} grad norm {norm}",
                    self.objective.loss.name(),
                    self.opt.step
                )));
            }
        }
        Ok((PreferenceMetrics::from_raw(&out[0][..STATS]), out[1][0]))
    }

    /// One optimizer step without reading anything back (the toy study's unlogged epochs), or with `extra`'s
    /// tensors copied back in the same submit. Non-finite values are only detected where something is read back.
    pub async fn step_with(&mut self, gpu: &Gpu, extra: Option<&Readback>) -> Result<Option<Vec<Vec<f32>>>> {
        self.opt.prepare(gpu);
        let plans = self.step_plans(true);
        run_step(gpu, &plans, extra).await
    }

    /// `k` optimizer steps recorded into one submit (Adam's step counter lives on the GPU), with `extra`'s tensors
    /// copied back after the last one: what the toy study does between two logged epochs, so that a short step
    /// pays the submit-and-wait overhead once per `k` steps. Non-finite values are detected where read back.
    pub async fn steps_with(&mut self, gpu: &Gpu, k: usize, extra: Option<&Readback>) -> Result<Option<Vec<Vec<f32>>>> {
        if k == 0 {
            return Ok(None);
        }
        self.opt.prepare_steps(gpu, k as u32);
        let plans = self.step_plans(true);
        let all: Vec<&Plan> = (0..k).flat_map(|_| plans.iter().copied()).collect();
        run_step(gpu, &all, extra).await
    }

    /// One micro-batch of gradient accumulation on the batch uploaded: forward, loss and backward, the gradient
    /// added to the previous micro-batches' unless `first`; when `last`, the optimizer step follows in the same
    /// submit and its gradient norm comes back. `first && last` is `step`. Build the optimizer with
    /// `accumulation_config` when a cycle has more than one micro-batch.
    pub async fn micro_step(&mut self, gpu: &Gpu, first: bool, last: bool) -> Result<(PreferenceMetrics, Option<f32>)> {
        if !(first && last) && self.policy.factored_grads().is_some() {
            return Err(Error::config(
                "this policy keeps part of its gradient factored (the fused toy MLP): it cannot accumulate gradients \
                 over micro-batches; use Mlp",
            ));
        }
        if last {
            self.opt.prepare(gpu);
        }
        let mut plans = self.step_plans(false);
        plans.push(self.policy.backward_plan());
        if last {
            plans.push(&self.opt.plan);
        }
        let keep = if first { None } else { Some(&self.policy.grads().all) };
        let rb = if last { &self.readback } else { &self.metrics_readback };
        let out = run_step_keeping(gpu, &plans, keep, Some(rb)).await?.expect("readback");
        let loss = out[0][0];
        let norm = if last { Some(out[1][0]) } else { None };
        if last {
            self.opt.check(&out[1], &format!("{} step {}", self.objective.loss.name(), self.opt.step))?;
        }
        if !loss.is_finite() || !norm.unwrap_or(0.0).is_finite() {
            return Err(Error::NonFinite(format!(
                "{} step {}: loss {loss} grad norm {}",
                self.objective.loss.name(),
                self.opt.step,
                norm.unwrap_or(f32::NAN)
            )));
        }
        Ok((PreferenceMetrics::from_raw(&out[0][..STATS]), norm))
    }

    /// Metrics of the current batch without updating.
    pub async fn evaluate(&self, gpu: &Gpu) -> Result<PreferenceMetrics> {
        let plans = self.step_plans(false);
        let out = run_step(gpu, &plans, Some(&self.metrics_readback)).await?.expect("readback");
        Ok(PreferenceMetrics::from_raw(&out[0]))
    }
}

impl PreferenceTrainer<Gpt> {
    /// Upload one batch (2B rows: chosen then rejected) to the policy, the reference (when there is one) and the
    /// loss's response mask, together, so the reference can never be left on a stale batch.
    pub fn set_batch(&self, gpu: &Gpu, batch: &PreferenceBatch) -> Result<()> {
        if 2 * batch.b != self.policy.b || batch.t != self.policy.t {
            return Err(Error::config(format!(
                "batch of {} pairs x T = {} does not fit the trainer's {} rows x T = {}",
                batch.b, batch.t, self.policy.b, self.policy.t
            )));
        }
        self.policy.set_batch(gpu, &batch.tokens, &batch.targets)?;
        if let Some(r) = &self.reference {
            r.set_batch(gpu, &batch.tokens, &batch.targets)?;
        }
        self.objective.set_mask(gpu, &batch.mask)
    }
}
