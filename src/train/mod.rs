//! Training: optimizers and the loops that string a policy's forward plan, an objective's plan, the backward plan
//! and the optimizer's plan into one command encoder and one submit per step.

pub mod optim;
pub mod ppo;
pub mod preference;
pub mod reward;
pub mod sft;

pub use optim::{OptimConfig, Optimizer, OptimizerKind};
pub use preference::{PreferenceTrainer, ReferenceMode};
pub use reward::RewardTrainer;

use crate::gpu::{encode_all, Gpu, Plan, Readback};
use crate::Result;

/// Record `plans` (clears first, then one compute pass) and `readback`'s copies into one encoder, submit once, and
/// fetch the readback if there is one.
/// GPU errors (validation, out of memory, a lost device) recorded since the last check are returned as `Err`, before
/// submitting and after the readback.
pub async fn run_step(gpu: &Gpu, plans: &[&Plan], readback: Option<&Readback>) -> Result<Option<Vec<Vec<f32>>>> {
    gpu.check()?;
    let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("dpo3d step") });
    encode_all(&mut enc, plans);
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
