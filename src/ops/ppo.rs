//! Dispatches of `shaders/ppo.wgsl`: the PPO rollout (per-token KL penalty and rewards, whitening, GAE, rollout
//! metrics), the clipped policy/value loss with its gradients, the metric reduction, the policy's token entropy and
//! the reward sources (table, (prompt, response) one-hot, token count, last-token score). The CPU mirror is
//! `crate::reference::ppo`; the rollout record layout is [`RO`] floats per position, fields `RO_*`.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{grid_1d, Dispatch, Gpu, Tensor};

const SHADER: &str = "ppo";
const SRC: &str = include_str!("../../shaders/ppo.wgsl");

/// Floats per position in the rollout tensor (B, T, RO).
pub const RO: usize = 8;
/// log pi_old of the position's target (the policy at rollout time).
pub const RO_LOGP: usize = 0;
/// log pi_ref of the position's target.
pub const RO_REF_LOGP: usize = 1;
/// The value model's estimate at rollout time.
pub const RO_VALUE: usize = 2;
/// Per-token KL estimate (k1 or k3).
pub const RO_KL: usize = 3;
/// -kl_coef * kl, plus the score at the row's last response token (whitened when `whiten_rewards`).
pub const RO_REWARD: usize = 4;
/// GAE advantage (whitened when `whiten_advantages`).
pub const RO_ADV: usize = 5;
/// Return = advantage + value (from the advantage before whitening).
pub const RO_RET: usize = 6;
/// 1.0 on response positions.
pub const RO_MASK: usize = 7;

/// Rollout metrics written by `rollout_stats`, in order (TRL names).
pub const ROLLOUT_STAT_NAMES: [&str; 5] =
    ["objective/kl", "objective/entropy", "objective/non_score_reward", "objective/rlhf_reward", "objective/scores"];
/// Per-minibatch statistics written by `ppo_loss` (one row of `MB_STATS` per minibatch update).
pub const MB_STATS: usize = 7;
/// Train metrics written by `ppo_reduce`, in order (TRL names): means over the minibatch updates, then the
/// variance of val/ratio.
pub const TRAIN_STAT_NAMES: [&str; 8] = [
    "loss/policy_avg",
    "loss/value_avg",
    "policy/clipfrac_avg",
    "val/clipfrac_avg",
    "policy/approxkl_avg",
    "policy/entropy_avg",
    "val/ratio",
    "val/ratio_var",
];

/// The WGSL parameter block (see `Params` in the shader).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct PpoParams {
    pub b: u32,
    pub t: u32,
    pub n: u32,
    pub v: u32,
    /// 0: k1, 1: k3
    pub kl_estimator: u32,
    pub field: u32,
    pub shift_mean: u32,
    pub stats_row: u32,
    pub epoch: u32,
    pub mb: u32,
    pub mb_size: u32,
    pub token: u32,
    pub kl_coef: f32,
    pub gamma: f32,
    pub lam: f32,
    pub cliprange: f32,
    pub cliprange_value: f32,
    pub vf_coef: f32,
    pub entropy_coef: f32,
    pub scale: f32,
    pub offset: u32,
    pub responses: u32,
    pub _p: [u32; 2],
}

fn dispatch(gpu: &Gpu, entry: &'static str, p: &PpoParams, bindings: &[(u32, &Tensor)], groups: [u32; 3]) -> Dispatch {
    Dispatch::new(gpu, SHADER, SRC, entry, Some(bytemuck::bytes_of(p)), bindings, groups)
}

/// Fill the rollout records from the rollout-time forwards (uses p.b, p.t, p.kl_estimator, p.kl_coef).
#[allow(clippy::too_many_arguments)]
pub fn ppo_rewards(
    gpu: &Gpu,
    rollout: &Tensor,   // (B, T, RO)
    logps: &Tensor,     // (B, T) policy
    ref_logps: &Tensor, // (B, T) reference
    values: &Tensor,    // (B, T) value head
    scores: &Tensor,    // (B)
    mask: &Tensor,      // (B, T)
    p: &PpoParams,
) -> Dispatch {
    dispatch(
        gpu,
        "ppo_rewards",
        p,
        &[(1, logps), (2, ref_logps), (3, values), (4, scores), (5, mask), (6, rollout)],
        grid_1d(p.b as usize, 64),
    )
}

/// TRL's masked_whiten of rollout field `field` over response positions, in place (uses p.b, p.t).
pub fn masked_whiten(
    gpu: &Gpu,
    rollout: &Tensor, // (B, T, RO)
    field: usize,
    shift_mean: bool,
    p: &PpoParams,
) -> Dispatch {
    let q = PpoParams { field: field as u32, shift_mean: shift_mean as u32, ..*p };
    dispatch(gpu, "masked_whiten", &q, &[(7, rollout)], [1, 1, 1])
}

/// GAE advantages and returns from the reward and value fields, in place (uses p.b, p.t, p.gamma, p.lam).
pub fn gae(gpu: &Gpu, rollout: &Tensor /* (B, T, RO) */, p: &PpoParams) -> Dispatch {
    dispatch(gpu, "gae", p, &[(8, rollout)], grid_1d(p.b as usize, 64))
}

/// Rollout metrics (`ROLLOUT_STAT_NAMES`) from the records and scores (uses p.b, p.t, p.kl_coef).
pub fn rollout_stats(
    gpu: &Gpu,
    metrics: &Tensor, // (5)
    rollout: &Tensor, // (B, T, RO)
    scores: &Tensor,  // (B)
    p: &PpoParams,
) -> Dispatch {
    dispatch(gpu, "rollout_stats", p, &[(9, rollout), (10, scores), (11, metrics)], [1, 1, 1])
}

/// out[i] = entropy of softmax(logits[i, :]), N rows of V (one invocation per row).
pub fn token_entropy(
    gpu: &Gpu,
    out: &Tensor,    // (N)
    logits: &Tensor, // (N, V)
    n: usize,
    v: usize,
) -> Dispatch {
    let p = PpoParams { n: n as u32, v: v as u32, ..Default::default() };
    dispatch(gpu, "token_entropy", &p, &[(12, logits), (13, out)], grid_1d(n, 64))
}

/// The PPO loss on minibatch (p.epoch, p.mb) with its gradients (overwrites dlogps and dvalues) and its statistics
/// in row p.stats_row of `stats`.
#[allow(clippy::too_many_arguments)]
pub fn ppo_loss(
    gpu: &Gpu,
    dlogps: &Tensor,  // (B, T)
    dvalues: &Tensor, // (B, T)
    stats: &Tensor,   // (rows, MB_STATS)
    logps: &Tensor,   // (B, T) policy, current parameters
    values: &Tensor,  // (B, T) value head, current parameters
    rollout: &Tensor, // (B, T, RO)
    ranks: &Tensor,   // (E, B) u32
    entropy: &Tensor, // (B, T)
    p: &PpoParams,
) -> Dispatch {
    dispatch(
        gpu,
        "ppo_loss",
        p,
        &[
            (14, logps),
            (15, values),
            (16, rollout),
            (17, ranks),
            (18, entropy),
            (19, dlogps),
            (20, dvalues),
            (21, stats),
        ],
        [1, 1, 1],
    )
}

/// metrics (`TRAIN_STAT_NAMES`) from `rows` minibatch rows of stats.
pub fn ppo_reduce(
    gpu: &Gpu,
    metrics: &Tensor, // (8)
    stats: &Tensor,   // (rows, MB_STATS)
    rows: usize,
) -> Dispatch {
    let p = PpoParams { stats_row: rows as u32, ..Default::default() };
    dispatch(gpu, "ppo_reduce", &p, &[(22, stats), (23, metrics)], [1, 1, 1])
}

/// scores[b] = table[prompts[b], responses[b]].
#[allow(clippy::too_many_arguments)]
pub fn table_reward(
    gpu: &Gpu,
    scores: &Tensor,    // (B)
    table: &Tensor,     // (P, R)
    prompts: &Tensor,   // (B) u32
    responses: &Tensor, // (B) u32
    b: usize,
    r: usize,
) -> Dispatch {
    let p = PpoParams { b: b as u32, responses: r as u32, ..Default::default() };
    dispatch(gpu, "table_reward", &p, &[(24, table), (25, prompts), (26, responses), (27, scores)], grid_1d(b, 64))
}

/// x (B, P*R) = one-hot of (prompt, response) pairs, the input of a toy pair reward model.
pub fn pair_onehot(
    gpu: &Gpu,
    x: &Tensor,         // (B, P*R)
    prompts: &Tensor,   // (B) u32
    responses: &Tensor, // (B) u32
    b: usize,
    p_: usize,
    r: usize,
) -> Dispatch {
    let p = PpoParams { b: b as u32, n: (p_ * r) as u32, responses: r as u32, ..Default::default() };
    dispatch(gpu, "pair_onehot", &p, &[(28, prompts), (29, responses), (30, x)], grid_1d(b * p_ * r, 256))
}

/// scores[b] = scale * #{response tokens == token}.
#[allow(clippy::too_many_arguments)]
pub fn count_token_reward(
    gpu: &Gpu,
    scores: &Tensor, // (B)
    tokens: &Tensor, // (B, T) u32
    mask: &Tensor,   // (B, T)
    b: usize,
    t: usize,
    token: u32,
    scale: f32,
) -> Dispatch {
    let p = PpoParams { b: b as u32, t: t as u32, token, scale, ..Default::default() };
    dispatch(gpu, "count_token_reward", &p, &[(31, tokens), (32, mask), (33, scores)], grid_1d(b, 64))
}

/// scores[b] = src[b, last response position + offset].
pub fn score_gather(
    gpu: &Gpu,
    scores: &Tensor, // (B)
    src: &Tensor,    // (B, T)
    mask: &Tensor,   // (B, T)
    b: usize,
    t: usize,
    offset: usize,
) -> Dispatch {
    let p = PpoParams { b: b as u32, t: t as u32, offset: offset as u32, ..Default::default() };
    dispatch(gpu, "score_gather", &p, &[(34, src), (35, mask), (36, scores)], grid_1d(b, 64))
}
