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

use crate::gpu::{Gpu, Plan, Readback};
use crate::Result;

/// One training step on the GPU: `Gpu::run_plans` (one encoder, one submit, then the readback if any).
pub async fn run_step(gpu: &Gpu, plans: &[&Plan], readback: Option<&Readback>) -> Result<Option<Vec<Vec<f32>>>> {
    gpu.run_plans(plans, readback).await
}
