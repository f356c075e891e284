//! Dispatches of `shaders/adamw.wgsl`: the global gradient L2 norm with its clip scale (deterministic two-pass
//! reduction), the AdamW update and plain SGD. The updates read `AdamHyper` and the clip scale from storage buffers,
//! so a plan is built once; before each step the host writes `AdamHyper::for_step(..)` into the 8-float hyper tensor.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{grid_1d, Dispatch, Gpu, Tensor, WORKGROUP_1D};

const SHADER: &str = "adamw";
const SRC: &str = include_str!("../../shaders/adamw.wgsl");

/// Most workgroups pass 1 of `grad_norm` uses; beyond that each thread just loops over more elements.
const MAX_PARTIALS: usize = 1024;

/// AdamW hyperparameters for one step, as the kernel reads them (8 f32, written with `Tensor::write_f32`).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
pub struct AdamHyper {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// 1 - beta1^step
    pub bias_correction1: f32,
    /// 1 - beta2^step
    pub bias_correction2: f32,
    pub _pad: f32,
}

impl AdamHyper {
    /// The block for optimizer step `step` (1-based), with bias corrections computed exactly as
    /// `reference::adamw::adamw_update` does.
    pub fn for_step(step: u32, lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32) -> AdamHyper {
        let (bias_correction1, bias_correction2) = crate::reference::adamw::bias_corrections(step, beta1, beta2);
        AdamHyper { lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2, _pad: 0.0 }
    }

    /// The 8 floats to write into the hyper tensor.
    pub fn as_f32s(&self) -> &[f32] {
        bytemuck::cast_slice(bytemuck::bytes_of(self))
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    num_partials: u32,
    max_norm: f32,
    group_len: u32,
}

/// Length of the scratch tensor `grad_norm` needs for `n` gradients (the number of pass-1 workgroups, a function of
/// `n` only, which is what makes the reduction order fixed).
pub fn grad_norm_scratch_len(n: usize) -> usize {
    // Each thread sums at least 64 elements: fewer workgroups means fewer barrier-heavy tree reductions (on
    // lavapipe each workgroup's 8 barriers dominate: 275 partials for 70k parameters took ~8 ms; 17 took 210 us,
    // 5 take ~110 us), while a GPT of millions of parameters still gets hundreds of workgroups.
    n.div_ceil(WORKGROUP_1D as usize * 64).clamp(1, MAX_PARTIALS)
}

/// norm[0] = ||grads||_2, norm[1] = clip scale (`reference::adamw::clip_scale(norm, max_norm)`; max_norm <= 0
/// disables clipping). Two dispatches: workgroup partial sums of squares into `scratch`, then one workgroup sums them.
pub fn grad_norm(
    gpu: &Gpu,
    norm: &Tensor,    // (2) [global L2 norm, clip scale]
    grads: &Tensor,   // (n)
    scratch: &Tensor, // (grad_norm_scratch_len(n))
    n: usize,
    max_norm: f32,
) -> Vec<Dispatch> {
    grad_norm_groups(gpu, norm, grads, scratch, n, 1, max_norm)
}

/// `grad_norm` for `groups` independent models packed back to back in `grads` (n / groups elements each, e.g. the
/// replicas of a replicated model): norm[2g], norm[2g + 1] per group, each summed in the order a lone model uses.
pub fn grad_norm_groups(
    gpu: &Gpu,
    norm: &Tensor,    // (2G)
    grads: &Tensor,   // (n) = G x (n / G)
    scratch: &Tensor, // (G * grad_norm_scratch_len(n / G))
    n: usize,
    groups: usize,
    max_norm: f32,
) -> Vec<Dispatch> {
    let len = group_len(n, groups);
    let parts = grad_norm_scratch_len(len);
    assert!(scratch.len >= groups * parts, "grad_norm scratch has {} elements, needs {}", scratch.len, groups * parts);
    assert!(norm.len >= 2 * groups, "grad_norm: norm has {} elements for {groups} groups", norm.len);
    let p = Params { n: n as u32, num_partials: parts as u32, max_norm, group_len: len as u32 };
    let bytes = bytemuck::bytes_of(&p);
    vec![
        Dispatch::new(
            gpu,
            SHADER,
            SRC,
            "grad_norm_partial",
            Some(bytes),
            &[(1, grads), (2, scratch)],
            [parts as u32, groups as u32, 1],
        ),
        Dispatch::new(
            gpu,
            SHADER,
            SRC,
            "grad_norm_final",
            Some(bytes),
            &[(3, scratch), (4, norm)],
            [groups as u32, 1, 1],
        ),
    ]
}

fn group_len(n: usize, groups: usize) -> usize {
    assert!(groups >= 1 && n % groups == 0, "{n} optimizer elements do not split into {groups} equal groups");
    assert!(groups <= 65535, "{groups} optimizer groups exceed a grid dimension");
    (n / groups).max(1)
}

/// One AdamW step over n elements: gradients scaled by norm[1], decoupled weight decay, bias corrections and the
/// other hyperparameters read from `hyper` (an `AdamHyper`, 8 f32).
#[allow(clippy::too_many_arguments)]
pub fn adamw_update(
    gpu: &Gpu,
    params: &Tensor, // (n)
    grads: &Tensor,  // (n)
    m: &Tensor,      // (n) first moment
    v: &Tensor,      // (n) second moment
    hyper: &Tensor,  // (8) AdamHyper, a `Tensor::uniform`
    norm: &Tensor,   // (2) [L2 norm, grad scale]
    n: usize,
) -> Dispatch {
    adamw_update_groups(gpu, params, grads, m, v, hyper, norm, n, 1)
}

/// `adamw_update` where element i takes its group's clip scale norm[2 (i / (n / groups)) + 1].
#[allow(clippy::too_many_arguments)]
pub fn adamw_update_groups(
    gpu: &Gpu,
    params: &Tensor, // (n)
    grads: &Tensor,  // (n)
    m: &Tensor,      // (n) first moment
    v: &Tensor,      // (n) second moment
    hyper: &Tensor,  // (8) AdamHyper, a `Tensor::uniform`
    norm: &Tensor,   // (2G) [L2 norm, grad scale] per group
    n: usize,
    groups: usize,
) -> Dispatch {
    let p = Params { n: n as u32, num_partials: 0, max_norm: 0.0, group_len: group_len(n, groups) as u32 };
    Dispatch::new(
        gpu,
        SHADER,
        SRC,
        "adamw_update",
        Some(bytemuck::bytes_of(&p)),
        &[(5, params), (6, grads), (7, m), (8, v), (9, hyper), (10, norm)],
        grid_1d(n, WORKGROUP_1D),
    )
}

/// One plain SGD step over n elements: params -= lr * (grads * norm[1] + weight_decay * params), lr and
/// weight_decay read from `hyper` (the other AdamHyper fields are ignored).
pub fn sgd_update(
    gpu: &Gpu,
    params: &Tensor, // (n)
    grads: &Tensor,  // (n)
    hyper: &Tensor,  // (8) AdamHyper, a `Tensor::uniform`
    norm: &Tensor,   // (2) [L2 norm, grad scale]
    n: usize,
) -> Dispatch {
    sgd_update_groups(gpu, params, grads, hyper, norm, n, 1)
}

/// `sgd_update` with per-group clip scales (see `adamw_update_groups`).
pub fn sgd_update_groups(
    gpu: &Gpu,
    params: &Tensor, // (n)
    grads: &Tensor,  // (n)
    hyper: &Tensor,  // (8) AdamHyper, a `Tensor::uniform`
    norm: &Tensor,   // (2G)
    n: usize,
    groups: usize,
) -> Dispatch {
    let p = Params { n: n as u32, num_partials: 0, max_norm: 0.0, group_len: group_len(n, groups) as u32 };
    Dispatch::new(
        gpu,
        SHADER,
        SRC,
        "sgd_update",
        Some(bytemuck::bytes_of(&p)),
        &[(11, params), (12, grads), (13, hyper), (14, norm)],
        grid_1d(n, WORKGROUP_1D),
    )
}
