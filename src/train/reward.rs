//! Reward-model training (Bradley-Terry) for either policy with a scalar head: forward -> BT loss -> backward ->
//! clip + optimizer in one submit; `evaluate` gives held-out pairwise accuracy without updating.

use crate::data::PreferenceBatch;
use crate::gpu::{Gpu, Readback};
use crate::model::{Gpt, Policy};
use crate::objectives::{PreferenceMetrics, RewardObjective};
use crate::train::{run_step, run_step_keeping, OptimConfig, Optimizer};
use crate::{Error, Result};

pub struct RewardTrainer<P: Policy> {
    pub model: P,
    pub objective: RewardObjective,
    pub opt: Optimizer,
    readback: Readback,
    metrics_readback: Readback,
}

impl<P: Policy> RewardTrainer<P> {
    pub fn new(gpu: &Gpu, model: P, opt: &OptimConfig) -> Result<Self> {
        gpu.scoped_blocking("building the reward-model trainer", || {
            let objective = RewardObjective::new(gpu, &model)?;
            let opt = Optimizer::for_policy(gpu, &model, opt)?;
            let readback = Readback::new(gpu, &[&objective.metrics, &opt.norm]);
            let metrics_readback = Readback::new(gpu, &[&objective.metrics]);
            Ok(RewardTrainer { model, objective, opt, readback, metrics_readback })
        })
    }

    pub async fn step(&mut self, gpu: &Gpu) -> Result<PreferenceMetrics> {
        self.opt.prepare(gpu);
        let plans = [self.model.forward_plan(), &self.objective.plan, self.model.backward_plan(), &self.opt.plan];
        let out = run_step(gpu, &plans, Some(&self.readback)).await?.expect("readback");
        let m = PreferenceMetrics::from_raw(&out[0]);
        self.opt.check(&out[1], &format!("reward model step {}", self.opt.step))?;
        if !m.get("loss").is_finite() || !out[1][0].is_finite() {
            return Err(Error::NonFinite(format!("reward model step {}: loss {}", self.opt.step, m.get("loss"))));
        }
        Ok(m)
    }

    /// One micro-batch of gradient accumulation (see `PreferenceTrainer::micro_step`): the gradient is added to
    /// the previous micro-batches' unless `first`; the optimizer steps when `last` and its gradient norm comes back.
    pub async fn micro_step(&mut self, gpu: &Gpu, first: bool, last: bool) -> Result<(PreferenceMetrics, Option<f32>)> {
        let mut plans = vec![self.model.forward_plan(), &self.objective.plan, self.model.backward_plan()];
        if last {
            self.opt.prepare(gpu);
            plans.push(&self.opt.plan);
        }
        let keep = if first { None } else { Some(&self.model.grads().all) };
        let rb = if last { &self.readback } else { &self.metrics_readback };
        let out = run_step_keeping(gpu, &plans, keep, Some(rb)).await?.expect("readback");
        let m = PreferenceMetrics::from_raw(&out[0]);
        let norm = if last { Some(out[1][0]) } else { None };
        if last {
            self.opt.check(&out[1], &format!("reward-model step {}", self.opt.step))?;
        }
        if !m.get("loss").is_finite() || !norm.unwrap_or(0.0).is_finite() {
            return Err(Error::NonFinite(format!("reward model step {}: loss {}", self.opt.step, m.get("loss"))));
        }
        Ok((m, norm))
    }

    /// Loss and pairwise accuracy on the batch currently uploaded (e.g. held-out pairs), without updating.
    pub async fn evaluate(&self, gpu: &Gpu) -> Result<PreferenceMetrics> {
        let plans = [self.model.forward_plan(), &self.objective.plan];
        let out = run_step(gpu, &plans, Some(&self.metrics_readback)).await?.expect("readback");
        Ok(PreferenceMetrics::from_raw(&out[0]))
    }
}

impl RewardTrainer<Gpt> {
    /// Upload one batch (2B rows: chosen then rejected) and the index of each sequence's last response token,
    /// where the scalar head is read.
    pub fn set_batch(&self, gpu: &Gpu, batch: &PreferenceBatch) -> Result<()> {
        if 2 * batch.b != self.model.b || batch.t != self.model.t {
            return Err(Error::config(format!(
                "batch of {} pairs x T = {} does not fit the reward model's {} rows x T = {}",
                batch.b, batch.t, self.model.b, self.model.t
            )));
        }
        self.model.set_batch(gpu, &batch.tokens, &batch.targets)?;
        self.objective.set_last_from_mask(gpu, &batch.mask)
    }
}
