//! Dispatches of `shaders/adamw.wgsl`: the global gradient L2 norm with its clip scale (deterministic two-pass
//! reduction), the AdamW update and plain SGD. The updates read `AdamHyper` and the clip scale from buffers, and
//! Adam's step counter t lives in the norm buffer on the GPU, so a plan is built once and can be recorded several times
//! into one submit; the host writes `AdamHyper::new(..)` into the 8-float hyper tensor when the hyperparameters change.
//!
//! The norm buffer holds `norm_len(G)` = 6G f32: [L2 norm, clip scale] per group, then the step state per group
//! [t, beta1^t, beta2^t, skipped] (start it from `norm_init(G)`). A step whose group norm is not finite is skipped
//! on the GPU (parameters and moments untouched, t not advanced, skipped + 1).

use bytemuck::{Pod, Zeroable};

use crate::gpu::{Dispatch, Gpu, Tensor, WORKGROUP_1D};

const SHADER: &str = "adamw";
const SRC: &str = include_str!("../../shaders/adamw.wgsl");

/// Most workgroups pass 1 of `grad_norm` uses; beyond that each thread just loops over more elements.
const MAX_PARTIALS: usize = 1024;

/// Elements of the per-group step state in the norm buffer: [t, beta1^t, beta2^t, skipped].
pub const STEP_STATE: usize = 4;

/// Length of the norm buffer for G groups: 2G [L2 norm, clip scale], then G step states.
pub fn norm_len(groups: usize) -> usize {
    groups * (2 + STEP_STATE)
}

/// The initial contents of the norm buffer: norms 0, clip scales 1, step states [t = 0, 1, 1, skipped = 0].
pub fn norm_init(groups: usize) -> Vec<f32> {
    let mut v = [0.0f32, 1.0].repeat(groups);
    v.extend([0.0f32, 1.0, 1.0, 0.0].repeat(groups));
    v
}

/// Group g's step state [t, beta1^t, beta2^t, skipped] in a norm buffer's contents of G groups.
pub fn step_state(norm: &[f32], groups: usize, g: usize) -> [f32; STEP_STATE] {
    let s = 2 * groups + STEP_STATE * g;
    [norm[s], norm[s + 1], norm[s + 2], norm[s + 3]]
}

/// AdamW hyperparameters as the kernels read them (8 f32, written with `Tensor::write_f32`). The bias corrections
/// come from the step state on the GPU.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
pub struct AdamHyper {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// SGD's momentum (sgd_momentum_update; ignored by Adam and plain SGD).
    pub momentum: f32,
    pub _pad: [f32; 2],
}

impl AdamHyper {
    pub fn new(lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32) -> AdamHyper {
        AdamHyper { lr, beta1, beta2, eps, weight_decay, momentum: 0.0, _pad: [0.0; 2] }
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

/// norm[0] = ||grads||_2, norm[1] = clip scale (min(1, max_norm / (norm + 1e-6)); max_norm <= 0 disables
/// clipping), and the step state norm[2..6] advanced (finite norm: t + 1, beta powers times hyper's betas) or the step
/// counted as skipped. Two dispatches: workgroup partial sums of squares into `scratch`, then one workgroup sums them.
pub fn grad_norm(
    gpu: &Gpu,
    norm: &Tensor,    // (6) [global L2 norm, clip scale, t, beta1^t, beta2^t, skipped], from norm_init(1)
    grads: &Tensor,   // (n)
    scratch: &Tensor, // (grad_norm_scratch_len(n))
    hyper: &Tensor,   // (8) AdamHyper, a `Tensor::uniform` (beta1, beta2)
    n: usize,
    max_norm: f32,
) -> Vec<Dispatch> {
    grad_norm_groups(gpu, norm, grads, scratch, hyper, n, 1, max_norm)
}

/// `grad_norm` for `groups` independent models packed back to back in `grads` (n / groups elements each, e.g. the
/// replicas of a replicated model): norm[2g], norm[2g + 1] and step state g per group, each norm summed in the order
/// a lone model uses.
#[allow(clippy::too_many_arguments)]
pub fn grad_norm_groups(
    gpu: &Gpu,
    norm: &Tensor,    // (norm_len(G)) from norm_init(G)
    grads: &Tensor,   // (n) = G x (n / G)
    scratch: &Tensor, // (G * grad_norm_scratch_len(n / G))
    hyper: &Tensor,   // (8) AdamHyper
    n: usize,
    groups: usize,
    max_norm: f32,
) -> Vec<Dispatch> {
    let len = group_len(n, groups);
    let parts = grad_norm_scratch_len(len);
    assert!(scratch.len >= groups * parts, "grad_norm scratch has {} elements, needs {}", scratch.len, groups * parts);
    assert!(norm.len >= norm_len(groups), "grad_norm: norm has {} elements for {groups} groups", norm.len);
    let p = Params { n: n as u32, num_partials: parts as u32, max_norm, group_len: len as u32 };
    let bytes = bytemuck::bytes_of(&p);
    let vec4 = len.is_multiple_of(4) && grads.len.is_multiple_of(4);
    vec![
        Dispatch::new(
            gpu,
            SHADER,
            SRC,
            if vec4 { "grad_norm_partial4" } else { "grad_norm_partial" },
            Some(bytes),
            &[(if vec4 { 22 } else { 1 }, grads), (2, scratch)],
            [parts as u32, groups as u32, 1],
        ),
        Dispatch::new(
            gpu,
            SHADER,
            SRC,
            "grad_norm_final",
            Some(bytes),
            &[(3, scratch), (4, norm), (15, hyper)],
            [groups as u32, 1, 1],
        ),
    ]
}

/// `grad_norm_groups`' second pass alone, over partial sums of squares some other kernel wrote (`scratch`:
/// `num_partials` per group, in a fixed order): the norm, the clip scale and the step state of each group. The fused
/// toy MLP (`ops::toy_mlp`) produces its partials in its backward kernels and uses this.
#[allow(clippy::too_many_arguments)]
pub fn grad_norm_final(
    gpu: &Gpu,
    norm: &Tensor,    // (norm_len(G)) from norm_init(G)
    scratch: &Tensor, // (G * num_partials)
    hyper: &Tensor,   // (8) AdamHyper
    group_len: usize,
    groups: usize,
    num_partials: usize,
    max_norm: f32,
) -> Dispatch {
    assert!(scratch.len >= groups * num_partials, "grad_norm_final: scratch too short");
    assert!(norm.len >= norm_len(groups), "grad_norm_final: norm has {} elements for {groups} groups", norm.len);
    let p = Params {
        n: (groups * group_len) as u32,
        num_partials: num_partials as u32,
        max_norm,
        group_len: group_len as u32,
    };
    Dispatch::new(
        gpu,
        SHADER,
        SRC,
        "grad_norm_final",
        Some(bytemuck::bytes_of(&p)),
        &[(3, scratch), (4, norm), (15, hyper)],
        [groups as u32, 1, 1],
    )
}

fn group_len(n: usize, groups: usize) -> usize {
    assert!(groups >= 1 && n.is_multiple_of(groups), "{n} optimizer elements do not split into {groups} equal groups");
    assert!(groups <= 65535, "{groups} optimizer groups exceed a grid dimension");
    (n / groups).max(1)
}

/// One AdamW step over n elements: gradients scaled by norm[1], decoupled weight decay, bias corrections from the step
/// state in `norm` (advanced by `grad_norm` just before), the other hyperparameters read from `hyper` (an
/// `AdamHyper`, 8 f32). Nothing changes when norm[0] is not finite.
#[allow(clippy::too_many_arguments)]
pub fn adamw_update(
    gpu: &Gpu,
    params: &Tensor, // (n)
    grads: &Tensor,  // (n)
    m: &Tensor,      // (n) first moment
    v: &Tensor,      // (n) second moment
    hyper: &Tensor,  // (8) AdamHyper, a `Tensor::uniform`
    norm: &Tensor,   // (6) [L2 norm, grad scale, step state]
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
    norm: &Tensor,   // (norm_len(G)) [L2 norm, grad scale] per group, then the step states
    n: usize,
    groups: usize,
) -> Dispatch {
    let len = group_len(n, groups);
    let p = Params { n: n as u32, num_partials: 0, max_norm: 0.0, group_len: len as u32 };
    // Four elements per invocation where every buffer splits into whole vec4s (all arena-packed models).
    if len.is_multiple_of(4) && [params, grads, m, v].iter().all(|t| t.len % 4 == 0) {
        return Dispatch::new(
            gpu,
            SHADER,
            SRC,
            "adamw_update4",
            Some(bytemuck::bytes_of(&p)),
            &[(16, params), (17, grads), (18, m), (19, v), (20, hyper), (21, norm)],
            update_grid(len / 4, groups),
        );
    }
    Dispatch::new(
        gpu,
        SHADER,
        SRC,
        "adamw_update",
        Some(bytemuck::bytes_of(&p)),
        &[(5, params), (6, grads), (7, m), (8, v), (9, hyper), (10, norm)],
        update_grid(len, groups),
    )
}

/// The updates' grid: workgroups of 256 over a group's `per_group` invocations along x (past 65535 workgroups,
/// spread over z), groups along y (see `update_index` in the shader).
fn update_grid(per_group: usize, groups: usize) -> [u32; 3] {
    let wgs = per_group.div_ceil(WORKGROUP_1D as usize).max(1);
    let z = wgs.div_ceil(65535);
    [wgs.div_ceil(z) as u32, groups as u32, z as u32]
}

/// One plain SGD step over n elements: params -= lr * (grads * norm[1] + weight_decay * params), lr and
/// weight_decay read from `hyper` (the other AdamHyper fields are ignored). Nothing changes when norm[0] is not
/// finite.
pub fn sgd_update(
    gpu: &Gpu,
    params: &Tensor, // (n)
    grads: &Tensor,  // (n)
    hyper: &Tensor,  // (8) AdamHyper, a `Tensor::uniform`
    norm: &Tensor,   // (6) [L2 norm, grad scale, step state]
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
    norm: &Tensor,   // (norm_len(G))
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
        update_grid(p.group_len as usize, groups),
    )
}

/// SGD with momentum (PyTorch's heavy ball, dampening 0) over n elements in groups: buf = momentum * buf + grads *
/// norm[2k + 1]; params -= lr * (buf + weight_decay * params); lr, weight_decay and momentum read from `hyper`.
/// Nothing changes in a group whose norm is not finite.
#[allow(clippy::too_many_arguments)]
pub fn sgd_momentum_update_groups(
    gpu: &Gpu,
    params: &Tensor, // (n)
    grads: &Tensor,  // (n)
    buf: &Tensor,    // (n) momentum buffer, zeros at the start
    hyper: &Tensor,  // (8) AdamHyper
    norm: &Tensor,   // (norm_len(G))
    n: usize,
    groups: usize,
) -> Dispatch {
    let p = Params { n: n as u32, num_partials: 0, max_norm: 0.0, group_len: group_len(n, groups) as u32 };
    Dispatch::new(
        gpu,
        SHADER,
        SRC,
        "sgd_momentum_update",
        Some(bytemuck::bytes_of(&p)),
        &[(23, params), (24, grads), (25, buf), (26, hyper), (27, norm)],
        update_grid(p.group_len as usize, groups),
    )
}
