//! The SFT loop for the GPT: forward, masked NLL, backward, clip + AdamW: one encoder, one submit, and a readback
//! of the loss and gradient norm only. A non-finite loss stops training with the step number; a non-finite gradient
//! norm is caught on the GPU before the update (the parameters stay the last good ones).

use crate::data::SftBatch;
use crate::gpu::{dispatch_count, Gpu, Readback};
use crate::model::{Gpt, GptConfig};
use crate::objectives::Sft;
use crate::train::{run_step, run_step_keeping, OptimConfig, Optimizer};
use crate::{Error, Result};

pub struct SftTrainer {
    pub gpt: Gpt,
    pub sft: Sft,
    pub opt: Optimizer,
    readback: Readback,
    loss_readback: Readback,
}

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct SftMetrics {
    pub step: u32,
    pub loss: f32,
    pub grad_norm: f32,
}

impl SftTrainer {
    pub fn new(
        gpu: &Gpu,
        cfg: &GptConfig,
        params: &[f32],
        b: usize,
        t: usize,
        opt: &OptimConfig,
    ) -> Result<SftTrainer> {
        let what = format!("building the SFT trainer (GPT of {} parameters, B = {b}, T = {t})", cfg.num_params());
        gpu.scoped_blocking(&what, || {
            let gpt = Gpt::new(gpu, cfg, b, t, params)?;
            let sft = Sft::new(gpu, &gpt)?;
            let opt = Optimizer::new(gpu, &gpt.params, &gpt.grads, opt)?;
            let readback = Readback::new(gpu, &[&sft.loss, &opt.norm]);
            let loss_readback = Readback::new(gpu, &[&sft.loss]);
            Ok(SftTrainer { gpt, sft, opt, readback, loss_readback })
        })
    }

    /// Dispatches recorded per training step (forward + loss + backward + optimizer).
    pub fn dispatches_per_step(&self) -> usize {
        dispatch_count(&[&self.gpt.forward, &self.sft.plan, &self.gpt.backward, &self.opt.plan])
    }

    /// Upload a batch (tokens, targets and the completion mask together).
    pub fn set_batch(&self, gpu: &Gpu, batch: &SftBatch) -> Result<()> {
        if batch.b != self.gpt.b || batch.t != self.gpt.t {
            return Err(Error::config(format!(
                "batch shape ({}, {}) differs from the trainer's ({}, {})",
                batch.b, batch.t, self.gpt.b, self.gpt.t
            )));
        }
        self.gpt.set_batch(gpu, &batch.tokens, &batch.targets)?;
        self.sft.set_mask(gpu, &batch.mask)
    }

    /// One optimizer step on `batch`; returns the loss (before the update) and the gradient norm.
    pub async fn step(&mut self, gpu: &Gpu, batch: &SftBatch) -> Result<SftMetrics> {
        self.set_batch(gpu, batch)?;
        self.opt.prepare(gpu);
        let plans = [&self.gpt.forward, &self.sft.plan, &self.gpt.backward, &self.opt.plan];
        let out = run_step(gpu, &plans, Some(&self.readback)).await?.expect("readback");
        let m = SftMetrics { step: self.opt.step, loss: out[0][0], grad_norm: out[1][0] };
        self.opt.check(&out[1], &format!("SFT step {} (loss {})", m.step, m.loss))?;
        if !m.loss.is_finite() || !m.grad_norm.is_finite() {
            return Err(Error::NonFinite(format!("SFT step {}: loss {} grad norm {}", m.step, m.loss, m.grad_norm)));
        }
        Ok(m)
    }

    /// One micro-batch of gradient accumulation on the batch uploaded by `set_batch`: forward, loss and backward,
    /// the gradient added to the previous micro-batches' unless `first`; when `last`, the optimizer step follows in
    /// the same submit and its gradient norm comes back. Returns the micro-batch loss (before the update).
    pub async fn micro_step(&mut self, gpu: &Gpu, first: bool, last: bool) -> Result<(f32, Option<f32>)> {
        let mut plans = vec![&self.gpt.forward, &self.sft.plan, &self.gpt.backward];
        if last {
            self.opt.prepare(gpu);
            plans.push(&self.opt.plan);
        }
        let keep = if first { None } else { Some(&self.gpt.grads.all) };
        let rb = if last { &self.readback } else { &self.loss_readback };
        let out = run_step_keeping(gpu, &plans, keep, Some(rb)).await?.expect("readback");
        let (loss, norm) = (out[0][0], if last { Some(out[1][0]) } else { None });
        if last {
            self.opt.check(&out[1], &format!("SFT step {}", self.opt.step))?;
        }
        if !loss.is_finite() || !norm.unwrap_or(0.0).is_finite() {
            return Err(Error::NonFinite(format!(
                "SFT step {}: loss {loss} grad norm {}",
                self.opt.step,
                norm.unwrap_or(f32::NAN)
            )));
        }
        Ok((loss, norm))
    }

    /// Loss on `batch` without updating (evaluation).
    pub async fn eval(&self, gpu: &Gpu, batch: &SftBatch) -> Result<f32> {
        self.set_batch(gpu, batch)?;
        let out =
            run_step(gpu, &[&self.gpt.forward, &self.sft.plan], Some(&self.loss_readback)).await?.expect("readback");
        Ok(out[0][0])
    }
}
