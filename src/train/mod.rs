//! Training: optimizers and the loops that string a policy's forward plan, an objective's plan, the backward plan
//! and the optimizer's plan into one command encoder and one submit per step; LR schedules with warmup
//! ([`schedule`]), gradient accumulation (`micro_step` on each trainer, [`accumulation_config`]) and the state a
//! stopped run resumes from ([`state`]).

pub mod optim;
pub mod ppo;
pub mod preference;
pub mod reward;
pub mod schedule;
pub mod sft;
pub mod state;

pub use optim::{OptimConfig, Optimizer, OptimizerKind};
pub use preference::{PreferenceTrainer, ReferenceMode};
pub use reward::RewardTrainer;
pub use schedule::{LrSchedule, LrSchedulerType};
pub use state::TrainerState;

use crate::gpu::{Gpu, Plan, Readback, Tensor};
use crate::{Error, Result};

/// One training step on the GPU: `Gpu::run_plans` (one encoder, one submit, then the readback if any).
pub async fn run_step(gpu: &Gpu, plans: &[&Plan], readback: Option<&Readback>) -> Result<Option<Vec<Vec<f32>>>> {
    gpu.run_plans(plans, readback).await
}

/// `run_step` for a micro-batch of gradient accumulation: every plan's clears run except that of `keep` (the
/// gradient arena), so the backward kernels, which accumulate (`+=`), add this micro-batch's gradient to the ones
/// before it. Pass `keep = None` on the first micro-batch of a cycle.
pub async fn run_step_keeping(
    gpu: &Gpu,
    plans: &[&Plan],
    keep: Option<&Tensor>,
    readback: Option<&Readback>,
) -> Result<Option<Vec<Vec<f32>>>> {
    let Some(keep) = keep else { return run_step(gpu, plans, readback).await };
    gpu.check()?;
    let kept = |t: &Tensor| t.buffer == keep.buffer && t.offset == keep.offset && t.len == keep.len;
    let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("dpo3d micro") });
    for p in plans {
        for t in p.clears.iter().filter(|t| !kept(t)) {
            enc.clear_buffer(&t.buffer, t.offset, Some(t.bytes()));
        }
    }
    {
        let mut pass =
            enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("dpo3d micro"), timestamp_writes: None });
        for p in plans {
            p.record(&mut pass);
        }
    }
    if let Some(rb) = readback {
        rb.record(&mut enc);
    }
    gpu.queue.submit([enc.finish()]);
    let out = match readback {
        Some(rb) => Some(rb.fetch(gpu).await?),
        None => None,
    };
    gpu.check()?;
    Ok(out)
}

/// The optimizer config for `k` micro-batches of gradient accumulation. The backward kernels sum the k
/// micro-batch gradients; for Adam, scaling `eps` and the clipping threshold by k makes the update on that sum
/// exactly the update on their mean (TRL's loss / k): m and sqrt(v) both scale by k and cancel, and the clip scale
/// min(1, k c / (k |g|)) is unchanged. Weight decay is decoupled and unaffected. The gradient norm the optimizer
/// reports is then k times the mean gradient's: divide by k to log it. SGD would need lr / k: refused here.
pub fn accumulation_config(cfg: &OptimConfig, k: usize) -> Result<OptimConfig> {
    if k == 0 {
        return Err(Error::config("gradient_accumulation_steps must be positive"));
    }
    if k > 1 && cfg.kind != OptimizerKind::Adam {
        return Err(Error::config("gradient accumulation is implemented for Adam(W) only"));
    }
    Ok(OptimConfig { eps: cfg.eps * k as f32, grad_clip: cfg.grad_clip * k as f32, ..cfg.clone() })
}
