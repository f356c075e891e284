//! Weight initialisation of the two policies: the packed parameter vector a training run starts from, in the
//! config's `param_shapes` order (each tensor contiguous, no padding). Every example, the toy study and the tests
//! start here; the CPU reference (`crate::reference`) only wraps parameters it is given. Tensors draw from one
//! `Rng` stream in packing order, so the same config and seed give the same bits on every platform.

use crate::model::config::{GptConfig, MlpConfig};
use crate::rng::Rng;
use crate::Result;

/// GPT-2 initialisation (as in HF's `GPT2PreTrainedModel._init_weights` and llm.c's train_gpt2.py): linear weights
/// and wte ~ N(0, 0.02), wpe ~ N(0, 0.01), the two residual projections (attn.c_proj, mlp.c_proj)
/// ~ N(0, 0.02/sqrt(2L)), biases 0, layernorm weight 1 and bias 0, score.weight ~ N(0, 0.02).
/// Returns `cfg.num_params()` values; an invalid config (e.g. `heads` not dividing `width`) is an error.
pub fn gpt_params(cfg: &GptConfig, seed: u64) -> Result<Vec<f32>> {
    cfg.validate()?;
    let mut rng = Rng::new(seed);
    let mut params = Vec::with_capacity(cfg.num_params());
    let proj_std = 0.02 / ((2 * cfg.layers) as f32).sqrt();
    for (name, shape) in cfg.param_shapes() {
        let start = params.len();
        params.resize(start + shape.iter().product::<usize>(), 0.0);
        let p = &mut params[start..];
        if name.ends_with("c_proj.weight") {
            rng.fill_normal(p, proj_std);
        } else if name == "transformer.wpe.weight" {
            rng.fill_normal(p, 0.01);
        } else if name.contains("ln_") && name.ends_with(".weight") {
            p.fill(1.0);
        } else if name.ends_with(".weight") {
            rng.fill_normal(p, 0.02);
        } // biases stay 0
    }
    Ok(params)
}

/// PyTorch's `nn.Linear` default: weight and bias ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform with a = sqrt(5)
/// gives exactly that bound for the weight); `in` is P for fc1 and H for fc2, fc3 and the score head.
/// Returns one value per parameter of `cfg.param_shapes()`; an invalid config (a zero size) is an error.
pub fn mlp_params(cfg: &MlpConfig, seed: u64) -> Result<Vec<f32>> {
    cfg.validate()?;
    let mut rng = Rng::new(seed);
    let mut params = Vec::new();
    for (name, shape) in cfg.param_shapes() {
        let fan_in = match name.as_str() {
            "fc1.weight" | "fc1.bias" => cfg.prompts,
            _ => cfg.hidden, // fc2, fc3 and score all read H
        };
        let bound = 1.0 / (fan_in as f32).sqrt();
        let start = params.len();
        params.resize(start + shape.iter().product::<usize>(), 0.0);
        rng.fill_uniform(&mut params[start..], -bound, bound);
    }
    Ok(params)
}
