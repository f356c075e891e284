//! CPU mirror of `shaders/preference.wgsl`: per-pair losses, metrics and coefficients, the reduction, and the
//! per-token backward. Same formulas, same order, same log-space gradient magnitudes.

/// Statistics per pair (and metrics after the reduction), in the shader's order: loss, rewards/chosen,
/// rewards/rejected, rewards/margins, rewards/accuracies, logps/chosen, logps/rejected, grad/log10_chosen,
/// grad/log10_rejected, logps/chosen_token_mean, logps/rejected_token_mean, nll/chosen.
pub const STATS: usize = 12;

/// The shader's `Params` block as the mirror reads it (declared here, field for field, as the WGSL declares it).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
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
    /// Independent groups (replicas) in the batch; 0 or 1: one.
    pub groups: u32,
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

    /// (chosen row, rejected row) of pair i. The batch is `groups` blocks of 2n rows (n = pairs per group): a
    /// block's first n rows are its chosen responses, the next n its rejected ones, pair j of the block on row j and
    /// row n + j.
    pub fn pair_rows(&self, i: usize) -> (usize, usize) {
        let n = self.group_pairs();
        let (g, j) = (i / n, i % n);
        (2 * n * g + j, 2 * n * g + n + j)
    }
}

const LN10: f32 = std::f32::consts::LN_10;

pub fn log_sigmoid(x: f32) -> f32 {
    x.min(0.0) - (1.0 + (-x.abs()).exp()).ln()
}

pub fn sigmoid(x: f32) -> f32 {
    log_sigmoid(x).exp()
}

fn log_abs(x: f32) -> f32 {
    x.abs().max(1e-37).ln()
}

fn seq_logp(logps: &[f32], mask: &[f32], s: usize, t: usize) -> (f32, f32, f32) {
    let mut sum = 0.0;
    let mut count = 0.0;
    for i in 0..t {
        let m = mask[s * t + i];
        sum += m * logps[s * t + i];
        count += m;
    }
    (sum, sum / count.max(1.0), count)
}

/// stats (N, STATS) and coef (2N); see the shader for the meaning of each.
pub fn preference_forward(
    stats: &mut [f32],
    coef: &mut [f32],
    logps: &[f32],
    mask: &[f32],
    ref_sum: &[f32],
    ref_mean: &[f32],
    p: &PrefParams,
) {
    let n = p.n_pairs as usize;
    let t = p.t as usize;
    for i in 0..n {
        let (ci, ri) = p.pair_rows(i);
        let c = seq_logp(logps, mask, ci, t);
        let r = seq_logp(logps, mask, ri, t);
        let (mut pc, mut pr, mut rc, mut rr) = (c.0, r.0, ref_sum[ci], ref_sum[ri]);
        if p.use_mean == 1 {
            pc = c.1;
            pr = r.1;
            rc = ref_mean[ci];
            rr = ref_mean[ri];
        }
        let (lc, lr) = (pc - rc, pr - rr);
        let beta = p.beta;
        let (mut loss, mut dpc, mut dpr, mut lmc, mut lmr) = (0.0f32, 0.0f32, 0.0f32, 0.0f32, 0.0f32);
        let (mut reward_c, mut reward_r) = (beta * lc, beta * lr);
        match p.loss_type {
            0 | 4 => {
                let m = beta * (lc - lr);
                loss = -log_sigmoid(m);
                let g = sigmoid(-m);
                dpc = -beta * g;
                dpr = beta * g;
                lmc = beta.ln() + log_sigmoid(-m);
                lmr = lmc;
                if p.loss_type == 4 {
                    loss -= p.gamma * c.0;
                    dpc -= p.gamma;
                    lmc = (beta * g + p.gamma).ln();
                }
            }
            1 => {
                let m = beta * (lc - lr);
                let e = p.label_smoothing;
                loss = -(1.0 - e) * log_sigmoid(m) - e * log_sigmoid(-m);
                let dm = -(1.0 - e) * sigmoid(-m) + e * sigmoid(m);
                dpc = beta * dm;
                dpr = -beta * dm;
                lmc = log_abs(dpc);
                lmr = lmc;
            }
            2 => {
                let m = beta * (lc - lr);
                let e = p.label_smoothing;
                loss = (-(1.0 - e) * log_sigmoid(m) + e * log_sigmoid(-m)) / (1.0 - 2.0 * e);
                let dm = (-(1.0 - e) * sigmoid(-m) - e * sigmoid(m)) / (1.0 - 2.0 * e);
                dpc = beta * dm;
                dpr = -beta * dm;
                lmc = log_abs(dpc);
                lmr = lmc;
            }
            3 => {
                let m = beta * lc - p.beta_neg * lr;
                loss = -log_sigmoid(m);
                let g = sigmoid(-m);
                dpc = -beta * g;
                dpr = p.beta_neg * g;
                lmc = beta.ln() + log_sigmoid(-m);
                lmr = p.beta_neg.ln() + log_sigmoid(-m);
                reward_r = p.beta_neg * lr;
            }
            5 => {
                let h = lc - lr;
                let d = h - 1.0 / (2.0 * p.eta);
                loss = d * d;
                dpc = 2.0 * d;
                dpr = -2.0 * d;
                lmc = log_abs(dpc);
                lmr = lmc;
            }
            6 => {
                let h = p.delta - pc + pr;
                loss = h.max(0.0) - p.eta * pc;
                let active = if h > 0.0 { 1.0 } else { 0.0 };
                dpc = -active - p.eta;
                dpr = active;
                lmc = log_abs(dpc);
                lmr = log_abs(dpr);
                reward_c = beta * pc;
                reward_r = beta * pr;
            }
            7 => {
                let m = beta * (lc - lr);
                loss = (1.0 - m).max(0.0);
                let active = if 1.0 - m > 0.0 { 1.0 } else { 0.0 };
                dpc = -beta * active;
                dpr = beta * active;
                lmc = log_abs(dpc);
                lmr = lmc;
            }
            8 => {
                let penalty = (rc - pc).max(0.0);
                let m = beta * (lc - lr - p.lambda * penalty);
                loss = -log_sigmoid(m);
                let g = sigmoid(-m);
                let slope = if rc - pc > 0.0 { 1.0 + p.lambda } else { 1.0 };
                dpc = -beta * slope * g;
                dpr = beta * g;
                lmc = (beta * slope).ln() + log_sigmoid(-m);
                lmr = beta.ln() + log_sigmoid(-m);
            }
            9 => {
                let m = beta * (pc - pr) - p.margin;
                loss = -log_sigmoid(m);
                let g = sigmoid(-m);
                dpc = -beta * g;
                dpr = beta * g;
                lmc = beta.ln() + log_sigmoid(-m);
                lmr = lmc;
                reward_c = beta * pc;
                reward_r = beta * pr;
            }
            _ => {}
        }
        let (lcc, lcr) = if p.use_mean == 1 { (c.2.max(1.0).ln(), r.2.max(1.0).ln()) } else { (0.0, 0.0) };
        let row = &mut stats[i * STATS..(i + 1) * STATS];
        row[0] = loss;
        row[1] = reward_c;
        row[2] = reward_r;
        row[3] = reward_c - reward_r;
        row[4] = if reward_c > reward_r { 1.0 } else { 0.0 };
        row[5] = c.0;
        row[6] = r.0;
        row[7] = (lmc - lcc - c.0) / LN10;
        row[8] = (lmr - lcr - r.0) / LN10;
        row[9] = c.1;
        row[10] = r.1;
        row[11] = -c.0;
        let inv_n = 1.0 / p.group_pairs() as f32;
        coef[ci] = dpc * inv_n;
        coef[ri] = dpr * inv_n;
    }
}

/// metrics (STATS) = means over the n pairs of stats (n, STATS).
pub fn preference_reduce(metrics: &mut [f32], stats: &[f32], n: usize) {
    for k in 0..STATS {
        let s: f64 = (0..n).map(|i| stats[i * STATS + k] as f64).sum();
        metrics[k] = (s / n.max(1) as f64) as f32;
    }
}

/// metrics (G, STATS): `preference_reduce` over each group's pairs.
pub fn preference_reduce_groups(metrics: &mut [f32], stats: &[f32], p: &PrefParams) {
    let n = p.group_pairs();
    for g in 0..p.groups() {
        preference_reduce(&mut metrics[g * STATS..(g + 1) * STATS], &stats[g * n * STATS..], n);
    }
}

pub fn preference_backward(dlogps: &mut [f32], coef: &[f32], mask: &[f32], p: &PrefParams) {
    let t = p.t as usize;
    for s in 0..2 * p.n_pairs as usize {
        let mut scale = coef[s];
        if p.use_mean == 1 {
            let count: f32 = mask[s * t..(s + 1) * t].iter().sum();
            scale /= count.max(1.0);
        }
        for i in 0..t {
            dlogps[s * t + i] = scale * mask[s * t + i];
        }
    }
}

/// CPU mirror of `bt_forward`.
pub fn bt_forward(stats: &mut [f32], coef: &mut [f32], scalar: &[f32], last: &[u32], p: &PrefParams) {
    let (n, t) = (p.n_pairs as usize, p.t as usize);
    let per_group = p.group_pairs() as f32;
    for i in 0..n {
        let (ci, ri) = p.pair_rows(i);
        let rc = scalar[ci * t + last[ci] as usize];
        let rr = scalar[ri * t + last[ri] as usize];
        let m = rc - rr;
        let g = sigmoid(-m);
        let row = &mut stats[i * STATS..(i + 1) * STATS];
        row.fill(0.0);
        row[0] = -log_sigmoid(m);
        row[1] = rc;
        row[2] = rr;
        row[3] = m;
        row[4] = if m > 0.0 { 1.0 } else { 0.0 };
        coef[ci] = -g / per_group;
        coef[ri] = g / per_group;
    }
}

/// CPU mirror of `bt_backward`.
pub fn bt_backward(dscalar: &mut [f32], coef: &[f32], last: &[u32], p: &PrefParams) {
    let t = p.t as usize;
    for s in 0..2 * p.n_pairs as usize {
        for i in 0..t {
            dscalar[s * t + i] = if i == last[s] as usize { coef[s] } else { 0.0 };
        }
    }
}
