//! Dispatches of `shaders/preference.wgsl`: the preference losses' forward (per-pair loss, metrics, coefficients),
//! the metric reduction, and the backward into per-token d loss / d logp.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{grid_1d, Dispatch, Gpu, Tensor};

const SHADER: &str = "preference";
const SRC: &str = include_str!("../../shaders/preference.wgsl");

/// Statistics per pair (and metrics after the reduction), in this order.
pub const STATS: usize = 12;
pub const STAT_NAMES: [&str; STATS] = [
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "grad/log10_chosen",
    "grad/log10_rejected",
    "logps/chosen_token_mean",
    "logps/rejected_token_mean",
    "nll/chosen",
];

/// The WGSL parameter block (see `Params` in the shader).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct PrefParams {
    pub loss_type: u32,
    pub n_pairs: u32,
    pub t: u32,
    pub use_mean: u32,
    pub beta: f32,
    pub beta_neg: f32,
    pub gamma: f32,
    pub eta: f32,
    pub delta: f32,
    pub label_smoothing: f32,
    pub lambda: f32,
    pub margin: f32,
    /// Independent groups (replicas) in the batch; 0 or 1: one. See the shader's batch layout.
    pub groups: u32,
    pub _pad: [u32; 3],
}

impl PrefParams {
    /// Groups in the batch (at least 1).
    pub fn groups(&self) -> usize {
        self.groups.max(1) as usize
    }

    /// Pairs per group.
    pub fn group_pairs(&self) -> usize {
        self.n_pairs as usize / self.groups()
    }

    /// (chosen row, rejected row) of pair i: group g = i / n holds rows [2 g n, 2 g n + 2n).
    pub fn pair_rows(&self, i: usize) -> (usize, usize) {
        let n = self.group_pairs();
        let c = (i / n) * 2 * n + i % n;
        (c, c + n)
    }
}

/// stats (N, STATS), coef (2N) from token logps (2N, T), mask (2N, T) and the reference's sequence sums and means (2N).
#[allow(clippy::too_many_arguments)]
pub fn preference_forward(
    gpu: &Gpu,
    stats: &Tensor,
    coef: &Tensor,
    logps: &Tensor,
    mask: &Tensor,
    ref_sum: &Tensor,
    ref_mean: &Tensor,
    p: &PrefParams,
) -> Dispatch {
    Dispatch::new(
        gpu,
        SHADER,
        SRC,
        "preference_forward",
        Some(bytemuck::bytes_of(p)),
        &[(1, logps), (2, mask), (3, ref_sum), (4, ref_mean), (5, stats), (6, coef)],
        grid_1d(p.n_pairs as usize, 64),
    )
}

/// metrics (G, STATS) = mean over each group's pairs of stats (N, STATS).
pub fn preference_reduce(gpu: &Gpu, metrics: &Tensor, stats: &Tensor, p: &PrefParams) -> Dispatch {
    assert!(metrics.len >= p.groups() * STATS, "preference_reduce: metrics too small for {} groups", p.groups());
    Dispatch::new(
        gpu,
        SHADER,
        SRC,
        "preference_reduce",
        Some(bytemuck::bytes_of(p)),
        &[(7, stats), (8, metrics)],
        grid_1d(p.groups() * STATS, 64),
    )
}

/// dlogps (2N, T) = coef[s] * mask (/ count when use_mean). Overwrites.
pub fn preference_backward(gpu: &Gpu, dlogps: &Tensor, coef: &Tensor, mask: &Tensor, p: &PrefParams) -> Dispatch {
    Dispatch::new(
        gpu,
        SHADER,
        SRC,
        "preference_backward",
        Some(bytemuck::bytes_of(p)),
        &[(9, coef), (10, mask), (11, dlogps)],
        grid_1d(2 * p.n_pairs as usize, 64),
    )
}

/// Bradley-Terry reward loss: stats (N, STATS) and coef (2N) from the scalar head (2N, T) read at `last` (2N, u32).
pub fn bt_forward(
    gpu: &Gpu,
    stats: &Tensor,
    coef: &Tensor,
    scalar: &Tensor,
    last: &Tensor,
    p: &PrefParams,
) -> Dispatch {
    Dispatch::new(
        gpu,
        SHADER,
        SRC,
        "bt_forward",
        Some(bytemuck::bytes_of(p)),
        &[(12, scalar), (13, last), (14, stats), (15, coef)],
        grid_1d(p.n_pairs as usize, 64),
    )
}

/// dscalar (2N, T) = coef[s] at t = last[s], 0 elsewhere. Overwrites.
pub fn bt_backward(gpu: &Gpu, dscalar: &Tensor, coef: &Tensor, last: &Tensor, p: &PrefParams) -> Dispatch {
    Dispatch::new(
        gpu,
        SHADER,
        SRC,
        "bt_backward",
        Some(bytemuck::bytes_of(p)),
        &[(16, coef), (17, last), (18, dscalar)],
        grid_1d(2 * p.n_pairs as usize, 64),
    )
}
