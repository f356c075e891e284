//! Reward-model training (Bradley-Terry) for either policy with a scalar head: forward -> BT loss -> backward ->
//! clip + optimizer in one submit; `evaluate` gives held-out pairwise accuracy without updating.

use crate::gpu::{Gpu, Readback};
use crate::model::Policy;
use crate::objectives::{PreferenceMetrics, RewardObjective};
use crate::train::{run_step, OptimConfig, Optimizer};
use crate::{Error, Result};

pub struct RewardTrainer<P: Policy> {
    pub model: P,
    pub objective: RewardObjective,
    pub opt: Optimizer,
    readback: Readback,
}

impl<P: Policy> RewardTrainer<P> {
    pub fn new(gpu: &Gpu, model: P, opt: &OptimConfig) -> Result<Self> {
        gpu.scoped_blocking("building the reward-model trainer", || {
            let objective = RewardObjective::new(gpu, &model)?;
            let opt = Optimizer::new(gpu, model.params(), model.grads(), opt)?;
            let readback = Readback::new(gpu, &[&objective.metrics, &opt.norm]);
            Ok(RewardTrainer { model, objective, opt, readback })
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

    /// Loss and pairwise accuracy on the batch currently uploaded (e.g. held-out pairs), without updating.
    pub async fn evaluate(&self, gpu: &Gpu) -> Result<PreferenceMetrics> {
        let rb = Readback::new(gpu, &[&self.objective.metrics]);
        let out =
            run_step(gpu, &[self.model.forward_plan(), &self.objective.plan], Some(&rb)).await?.expect("readback");
        Ok(PreferenceMetrics::from_raw(&out[0]))
    }
}
