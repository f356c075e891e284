//! CPU mirror of `shaders/ppo.wgsl` (TRL's PPO math): rewards with a per-token KL penalty, masked whitening, GAE,
//! rollout metrics, token entropy, the clipped policy/value loss with its gradients and statistics, the metric
//! reduction and the reward sources. Reductions emulate the shader's 256-lane workgroup order, so the
//! GPU agrees to float rounding. Also the analytic RLHF optimum of a bandit, pi* ∝ pi0 exp(r / beta), and the total
//! variation distance the toy test measures against it.

/// The rollout record, in the shader's layout: RO floats per position of a (B, T, RO) tensor.
pub const RO: usize = 8;
/// log pi_old of the position's target.
pub const RO_LOGP: usize = 0;
/// log pi_ref of the position's target.
pub const RO_REF_LOGP: usize = 1;
/// The value model's estimate at rollout time.
pub const RO_VALUE: usize = 2;
/// Per-token KL estimate (k1 or k3).
pub const RO_KL: usize = 3;
/// -kl_coef * kl, plus the score at the row's last response token.
pub const RO_REWARD: usize = 4;
/// GAE advantage.
pub const RO_ADV: usize = 5;
/// Return = advantage + value.
pub const RO_RET: usize = 6;
/// 1.0 on response positions.
pub const RO_MASK: usize = 7;
/// Per-minibatch statistics written by `ppo_loss` (one row per minibatch update).
pub const MB_STATS: usize = 7;

/// The fields of the shader's `Params` block that the mirror reads (declared here, named as in the WGSL).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PpoParams {
    pub b: u32,
    pub t: u32,
    /// 0: k1, 1: k3
    pub kl_estimator: u32,
    pub stats_row: u32,
    pub epoch: u32,
    pub mb: u32,
    pub mb_size: u32,
    pub kl_coef: f32,
    pub cliprange: f32,
    pub cliprange_value: f32,
    pub vf_coef: f32,
    pub entropy_coef: f32,
}

/// Per-lane partial sums as a `lanes`-wide workgroup accumulates them: lane l adds items l, l + lanes, ... in order.
fn lane_partials(n: usize, lanes: usize, f: impl Fn(usize) -> f32) -> Vec<f32> {
    let mut part = vec![0.0f32; lanes];
    for (l, acc) in part.iter_mut().enumerate() {
        let mut i = l;
        while i < n {
            *acc += f(i);
            i += lanes;
        }
    }
    part
}

/// The shader's tree reduction over a workgroup's lanes (stride halves each round).
fn tree(mut part: Vec<f32>, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut s = part.len() / 2;
    while s > 0 {
        for l in 0..s {
            part[l] = op(part[l], part[l + s]);
        }
        s /= 2;
    }
    part[0]
}

/// `wg_sum` of the 256-lane kernels over items 0..n.
fn wg_sum(n: usize, f: impl Fn(usize) -> f32) -> f32 {
    tree(lane_partials(n, 256, f), |a, b| a + b)
}

/// Fill the rollout records (see `RO_*`): kl (k1 or k3), reward = -kl_coef kl + score at the last token.
pub fn ppo_rewards(
    rollout: &mut [f32], // (B, T, RO)
    logps: &[f32],       // (B, T)
    ref_logps: &[f32],   // (B, T)
    values: &[f32],      // (B, T)
    scores: &[f32],      // (B)
    mask: &[f32],        // (B, T)
    p: &PpoParams,
) {
    let (b, t) = (p.b as usize, p.t as usize);
    for bi in 0..b {
        let mut last = t;
        for ti in 0..t {
            if mask[bi * t + ti] > 0.0 {
                last = ti;
            }
        }
        for ti in 0..t {
            let i = bi * t + ti;
            let mut rec = [0.0f32; RO];
            if mask[i] > 0.0 {
                let logr = ref_logps[i] - logps[i];
                let kl = if p.kl_estimator == 1 { (logr.exp() - 1.0) - logr } else { -logr };
                let mut reward = -p.kl_coef * kl;
                if ti == last {
                    reward += scores[bi];
                }
                rec[RO_LOGP] = logps[i];
                rec[RO_REF_LOGP] = ref_logps[i];
                rec[RO_VALUE] = values[i];
                rec[RO_KL] = kl;
                rec[RO_REWARD] = reward;
                rec[RO_MASK] = 1.0;
            }
            rollout[i * RO..(i + 1) * RO].copy_from_slice(&rec);
        }
    }
}

/// TRL's masked_whiten of one field over response positions, in place.
pub fn masked_whiten(rollout: &mut [f32], field: usize, shift_mean: bool, b: usize, t: usize) {
    let n = b * t;
    let (count, mean) = {
        let r = &*rollout;
        let count = wg_sum(n, |i| r[i * RO + RO_MASK]);
        let mean = wg_sum(n, |i| r[i * RO + RO_MASK] * r[i * RO + field]) / count.max(1.0);
        (count, mean)
    };
    let r = &*rollout;
    let mut variance = wg_sum(n, |i| {
        let d = r[i * RO + field] - mean;
        r[i * RO + RO_MASK] * d * d
    }) / count.max(1.0);
    if count > 1.0 {
        variance = variance * count / (count - 1.0);
    }
    let rs = 1.0 / (variance + 1e-8).sqrt();
    for i in 0..n {
        if rollout[i * RO + RO_MASK] > 0.0 {
            let mut w = (rollout[i * RO + field] - mean) * rs;
            if !shift_mean {
                w += mean;
            }
            rollout[i * RO + field] = w;
        }
    }
}

/// GAE over each row's response positions, last to first, in place.
pub fn gae(rollout: &mut [f32], b: usize, t: usize, gamma: f32, lam: f32) {
    for bi in 0..b {
        let mut lastgaelam = 0.0f32;
        let mut nextvalue = 0.0f32;
        for k in 0..t {
            let o = (bi * t + (t - 1 - k)) * RO;
            if rollout[o + RO_MASK] > 0.0 {
                let v = rollout[o + RO_VALUE];
                let delta = rollout[o + RO_REWARD] + gamma * nextvalue - v;
                lastgaelam = delta + gamma * lam * lastgaelam;
                rollout[o + RO_ADV] = lastgaelam;
                rollout[o + RO_RET] = lastgaelam + v;
                nextvalue = v;
            } else {
                rollout[o + RO_ADV] = 0.0;
                rollout[o + RO_RET] = 0.0;
            }
        }
    }
}

/// Rollout metrics: [objective/kl, objective/entropy, objective/non_score_reward, objective/rlhf_reward,
/// objective/scores].
pub fn rollout_stats(metrics: &mut [f32], rollout: &[f32], scores: &[f32], b: usize, t: usize, kl_coef: f32) {
    let n = b * t;
    let inv_b = 1.0 / b.max(1) as f32;
    let mean_kl = wg_sum(n, |i| rollout[i * RO + RO_MASK] * rollout[i * RO + RO_KL]) * inv_b;
    let mean_ent = tree(
        {
            let mut part = vec![0.0f32; 256];
            for (l, acc) in part.iter_mut().enumerate() {
                let mut i = l;
                while i < n {
                    *acc -= rollout[i * RO + RO_MASK] * rollout[i * RO + RO_LOGP];
                    i += 256;
                }
            }
            part
        },
        |a, c| a + c,
    ) * inv_b;
    let mean_score = wg_sum(b, |i| scores[i]) * inv_b;
    let non_score = -kl_coef * mean_kl;
    metrics[..5].copy_from_slice(&[mean_kl, mean_ent, non_score, non_score + mean_score, mean_score]);
}

/// out[i] = entropy of softmax(logits[i, :]) = logsumexp - E[x].
pub fn token_entropy(out: &mut [f32], logits: &[f32], n: usize, v: usize) {
    for row in 0..n {
        let x = &logits[row * v..(row + 1) * v];
        let m = x.iter().fold(-3.0e38f32, |a, &b| a.max(b));
        let (mut z, mut zx) = (0.0f32, 0.0f32);
        for &xj in x {
            let d = xj - m;
            let e = d.exp();
            z += e;
            zx += d * e;
        }
        out[row] = z.ln() - zx / z;
    }
}

/// Whether row `row` is in minibatch (p.epoch, p.mb).
pub fn in_minibatch(ranks: &[u32], row: usize, p: &PpoParams) -> bool {
    let r = ranks[p.epoch as usize * p.b as usize + row];
    r >= p.mb * p.mb_size && r < (p.mb + 1) * p.mb_size
}

/// The PPO loss on minibatch (p.epoch, p.mb): overwrites dlogps and dvalues, writes row p.stats_row of stats
/// ([loss/policy, loss/value, policy/clipfrac, val/clipfrac, policy/approxkl, policy/entropy, val/ratio]).
#[allow(clippy::too_many_arguments)]
pub fn ppo_loss(
    dlogps: &mut [f32],  // (B, T)
    dvalues: &mut [f32], // (B, T)
    stats: &mut [f32],   // (rows, MB_STATS)
    logps: &[f32],       // (B, T)
    values: &[f32],      // (B, T)
    rollout: &[f32],     // (B, T, RO)
    ranks: &[u32],       // (E, B)
    entropy: &[f32],     // (B, T)
    p: &PpoParams,
) {
    let t = p.t as usize;
    let n = p.b as usize * t;
    let m_of = |i: usize| if in_minibatch(ranks, i / t, p) { rollout[i * RO + RO_MASK] } else { 0.0 };
    let count = wg_sum(n, m_of);
    let inv = 1.0 / count.max(1.0);
    // Per-position terms: [pg, vf, pg_clipped, vf_clipped, approxkl, entropy, ratio].
    let mut terms = vec![[0.0f32; MB_STATS]; n];
    for i in 0..n {
        let o = i * RO;
        if m_of(i) == 0.0 {
            dlogps[i] = 0.0;
            dvalues[i] = 0.0;
            continue;
        }
        let logp = logps[i];
        let adv = rollout[o + RO_ADV];
        let diff = logp - rollout[o + RO_LOGP];
        let ratio = diff.exp();
        let pg1 = -adv * ratio;
        let pg2 = -adv * ratio.clamp(1.0 - p.cliprange, 1.0 + p.cliprange);
        let (mut dlogp, pg_clipped) = if pg2 > pg1 { (0.0, 1.0) } else { (-adv * ratio, 0.0) };
        dlogp += p.entropy_coef * ratio * (logp + 1.0);
        dlogps[i] = dlogp * inv;

        let v = values[i];
        let v_old = rollout[o + RO_VALUE];
        let ret = rollout[o + RO_RET];
        let vclip = v.clamp(v_old - p.cliprange_value, v_old + p.cliprange_value);
        let vf1 = (v - ret) * (v - ret);
        let vf2 = (vclip - ret) * (vclip - ret);
        let (dv, vf_clipped) = if vf2 > vf1 { (0.0, 1.0) } else { (p.vf_coef * (v - ret), 0.0) };
        dvalues[i] = dv * inv;
        terms[i] = [pg1.max(pg2), vf1.max(vf2), pg_clipped, vf_clipped, 0.5 * diff * diff, entropy[i], ratio];
    }
    let o = p.stats_row as usize * MB_STATS;
    for k in 0..MB_STATS {
        let s = wg_sum(n, |i| terms[i][k]);
        stats[o + k] = if k == 1 { 0.5 * s * inv } else { s * inv };
    }
}

/// The scalar the gradients of `ppo_loss` differentiate (for finite-difference checks):
/// loss/policy + vf_coef * loss/value - entropy_coef * H_hat, with H_hat = sum(-ratio * logp) / n the importance-
/// weighted sample estimate of the policy's entropy (its gradient is the entropy bonus term of `ppo_loss`).
#[allow(clippy::too_many_arguments)]
pub fn ppo_loss_value(logps: &[f32], values: &[f32], rollout: &[f32], ranks: &[u32], p: &PpoParams) -> f64 {
    let t = p.t as usize;
    let n = p.b as usize * t;
    let (mut pg, mut vf, mut ent, mut count) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for i in 0..n {
        let o = i * RO;
        let m = if in_minibatch(ranks, i / t, p) { rollout[o + RO_MASK] } else { 0.0 };
        if m == 0.0 {
            continue;
        }
        count += 1.0;
        let (logp, adv) = (logps[i] as f64, rollout[o + RO_ADV] as f64);
        let ratio = (logp - rollout[o + RO_LOGP] as f64).exp();
        let clipped = ratio.clamp(1.0 - p.cliprange as f64, 1.0 + p.cliprange as f64);
        pg += (-adv * ratio).max(-adv * clipped);
        let (v, v_old, ret) = (values[i] as f64, rollout[o + RO_VALUE] as f64, rollout[o + RO_RET] as f64);
        let vclip = v.clamp(v_old - p.cliprange_value as f64, v_old + p.cliprange_value as f64);
        vf += ((v - ret) * (v - ret)).max((vclip - ret) * (vclip - ret));
        ent += -ratio * logp;
    }
    let c = count.max(1.0);
    pg / c + p.vf_coef as f64 * 0.5 * vf / c - p.entropy_coef as f64 * ent / c
}

/// Train metrics from `rows` minibatch rows: the mean of each statistic, then the unbiased variance of val/ratio.
pub fn ppo_reduce(metrics: &mut [f32], stats: &[f32], rows: usize) {
    let inv = 1.0 / rows.max(1) as f32;
    for k in 0..MB_STATS {
        let mut s = 0.0f32;
        for r in 0..rows {
            s += stats[r * MB_STATS + k];
        }
        metrics[k] = s * inv;
    }
    let mut s = 0.0f32;
    for r in 0..rows {
        s += stats[r * MB_STATS + 6];
    }
    let mean = s * inv;
    let mut q = 0.0f32;
    for r in 0..rows {
        let d = stats[r * MB_STATS + 6] - mean;
        q += d * d;
    }
    metrics[MB_STATS] = if rows > 1 { q / (rows - 1) as f32 } else { 0.0 };
}

/// scores[b] = table[prompts[b], responses[b]].
pub fn table_reward(scores: &mut [f32], table: &[f32], prompts: &[u32], responses: &[u32], r: usize) {
    for b in 0..scores.len() {
        scores[b] = table[prompts[b] as usize * r + responses[b] as usize];
    }
}

/// x (B, P*R) = one-hot of prompts[b] * R + responses[b].
pub fn pair_onehot(x: &mut [f32], prompts: &[u32], responses: &[u32], p: usize, r: usize) {
    let n = p * r;
    for b in 0..prompts.len() {
        for j in 0..n {
            x[b * n + j] = if j == prompts[b] as usize * r + responses[b] as usize { 1.0 } else { 0.0 };
        }
    }
}

/// scores[b] = scale * #{t : mask[b, t] > 0 and tokens[b, t + 1] == token}.
pub fn count_token_reward(
    scores: &mut [f32],
    tokens: &[u32],
    mask: &[f32],
    b: usize,
    t: usize,
    token: u32,
    scale: f32,
) {
    for bi in 0..b {
        let mut c = 0.0f32;
        for ti in 0..t.saturating_sub(1) {
            if mask[bi * t + ti] > 0.0 && tokens[bi * t + ti + 1] == token {
                c += 1.0;
            }
        }
        scores[bi] = scale * c;
    }
}

/// scores[b] = src[b, last response position + offset] (0 without response positions).
pub fn score_gather(scores: &mut [f32], src: &[f32], mask: &[f32], b: usize, t: usize, offset: usize) {
    for bi in 0..b {
        let mut last = t;
        for ti in 0..t {
            if mask[bi * t + ti] > 0.0 {
                last = ti;
            }
        }
        scores[bi] = if last < t && last + offset < t { src[bi * t + last + offset] } else { 0.0 };
    }
}

/// The optimum of the KL-regularised bandit objective E_{y~pi}[r(x,y)] - beta KL(pi(.|x) || pi0(.|x)) for each
/// prompt: pi*(y|x) = pi0(y|x) exp(r(x,y) / beta) / Z(x). pi0 and r are (P, R) row-major; computed in f64.
pub fn rlhf_optimum(pi0: &[f32], reward: &[f32], beta: f32, r: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; pi0.len()];
    for (row_out, (row_p, row_r)) in out.chunks_mut(r).zip(pi0.chunks(r).zip(reward.chunks(r))) {
        let logits: Vec<f64> =
            row_p.iter().zip(row_r).map(|(&q, &rw)| (q as f64).ln() + rw as f64 / beta as f64).collect();
        let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logits.iter().map(|l| (l - mx).exp()).sum();
        for (o, l) in row_out.iter_mut().zip(&logits) {
            *o = ((l - mx).exp() / z) as f32;
        }
    }
    out
}

/// Total variation distance 0.5 * sum |a - b| of each row of R probabilities.
pub fn total_variation(a: &[f32], b: &[f32], r: usize) -> Vec<f32> {
    a.chunks(r).zip(b.chunks(r)).map(|(x, y)| 0.5 * x.iter().zip(y).map(|(p, q)| (p - q).abs()).sum::<f32>()).collect()
}
