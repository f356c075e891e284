//! `TrainerState`: everything beyond the weights that a stopped run needs to continue exactly where it stood:
//! optimizer steps taken, the batcher's place in the data order, the sampling RNG, and (in a separate
//! safetensors file) the optimizer's moments. Saved next to each checkpoint as `trainer_state.json` (TRL's file
//! name; `global_step` and `epoch` as TRL writes them) and `optimizer.safetensors`; a run resumed from them on the
//! same device continues bit-for-bit.

use serde::{Deserialize, Serialize};

use crate::data::batcher::BatcherState;
#[cfg(not(target_arch = "wasm32"))]
use crate::gpu::{Gpu, Tensor};
#[cfg(not(target_arch = "wasm32"))]
use crate::train::Optimizer;
#[cfg(not(target_arch = "wasm32"))]
use crate::{Error, Result};

pub const TRAINER_STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken (TRL's `global_step`).
    pub global_step: usize,
    /// Epochs of the training data seen, fractional (TRL's `epoch`).
    pub epoch: f64,
    /// The training batcher's place: the order of every later batch follows from it and the seed.
    pub batcher: BatcherState,
    /// The sampling RNG (generation in PPO), when the run has one.
    pub rng: Option<[u64; 2]>,
    /// The optimizer's own step counter (Adam's bias correction).
    pub optimizer_step: u32,
    /// Micro-batches per optimizer step the moments were accumulated with (a resume must use the same).
    pub gradient_accumulation_steps: usize,
    pub seed: u64,
    /// A second optimizer's step counter (PPO's value model), when the run has one.
    #[serde(default)]
    pub value_optimizer_step: Option<u32>,
}

#[cfg(not(target_arch = "wasm32"))]
impl TrainerState {
    /// Writes `DIR/trainer_state.json` and `DIR/optimizer.safetensors` (the moments, read back from the GPU).
    pub async fn save(&self, gpu: &Gpu, opt: &Optimizer, dir: &std::path::Path) -> Result<()> {
        self.save_moments(gpu, &moment_names("", opt), dir).await
    }

    /// `save` for any set of named state tensors (e.g. PPO's policy and value optimizers' moments).
    pub async fn save_moments(&self, gpu: &Gpu, moments: &[(String, &Tensor)], dir: &std::path::Path) -> Result<()> {
        let mut tensors = Vec::new();
        for (name, t) in moments {
            tensors.push((name.clone(), vec![t.len], t.read_f32(gpu).await?));
        }
        let meta = [("format".to_string(), "dpo3d optimizer state".to_string())].into();
        crate::checkpoint::save_tensors(&dir.join(OPTIMIZER_FILE), &tensors, &meta)?;
        let json = serde_json::to_string_pretty(self).expect("trainer state serializes");
        crate::checkpoint::write_atomic(&dir.join(TRAINER_STATE_FILE), json.as_bytes())
    }

    /// Reads `DIR/trainer_state.json`.
    pub fn load(dir: &std::path::Path) -> Result<TrainerState> {
        let path = dir.join(TRAINER_STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
            path: path.display().to_string(),
            msg: format!("not a trainer state: {e}"),
        })
    }

    /// Restores the optimizer's moments (from `DIR/optimizer.safetensors`) and step counter.
    pub fn restore_optimizer(&self, gpu: &Gpu, opt: &mut Optimizer, dir: &std::path::Path) -> Result<()> {
        restore_moments(gpu, &moment_names("", opt), dir)?;
        opt.step = self.optimizer_step;
        Ok(())
    }
}

/// An optimizer's state as named tensors (prefixed): `exp_avg` and `exp_avg_sq` (Adam's moments) and `step_state`
/// (the norm buffer, whose tail holds each group's step counter and beta powers: Adam's bias correction lives on
/// the GPU, so a resumed run must restore it to continue bit for bit).
#[cfg(not(target_arch = "wasm32"))]
pub fn moment_names<'a>(prefix: &str, opt: &'a Optimizer) -> Vec<(String, &'a Tensor)> {
    // PyTorch's state names: Adam's two moments, SGD's momentum buffer (when it has one).
    let names: &[&str] = match opt.cfg.kind {
        crate::train::OptimizerKind::Adam => &["exp_avg", "exp_avg_sq"],
        crate::train::OptimizerKind::Sgd => &["momentum_buffer"],
    };
    let mut v: Vec<(String, &Tensor)> =
        names.iter().zip(opt.moments()).map(|(n, t)| (format!("{prefix}{n}"), t)).collect();
    v.push((format!("{prefix}step_state"), &opt.norm));
    v
}

/// Uploads the named tensors of `DIR/optimizer.safetensors` into `moments`; each must be there, of the same size.
#[cfg(not(target_arch = "wasm32"))]
pub fn restore_moments(gpu: &Gpu, moments: &[(String, &Tensor)], dir: &std::path::Path) -> Result<()> {
    let path = dir.join(OPTIMIZER_FILE);
    let (tensors, _) = crate::checkpoint::load_tensors(&path)?;
    let err = |msg: String| Error::Checkpoint { path: path.display().to_string(), msg };
    for (name, t) in moments {
        let (_, _, data) =
            tensors.iter().find(|(n, _, _)| n == name).ok_or_else(|| err(format!("missing tensor {name}")))?;
        if data.len() != t.len {
            return Err(err(format!("tensor {name} has {} values, the optimizer {}", data.len(), t.len)));
        }
        t.write_f32(gpu, data);
    }
    Ok(())
}
