// Preference-loss family: the DPO family (DPO, cDPO, robust DPO, Flex-DPO, SFT-DPO, DPOP), IPO, SLiC, hinge and
// SimPO-style length-normalised sigmoid. Forward (per-pair loss, metrics and the coefficient d loss / d sequence
// log-prob), a deterministic reduction of the per-pair metrics, and the backward that spreads each sequence's
// coefficient over its response tokens (d loss / d token log-prob), side by side.
//
// Batch layout (TRL's concatenated forward): S = 2N sequences of T tokens; rows [0, N) are the chosen responses,
// rows [N, 2N) the rejected ones; pair i = (row i, row N + i).
// Groups: a replicated policy (several independent models in one batch) packs G such batches one after another, each
// of n = N / G pairs: pair i = g n + j is (row 2 g n + j, row 2 g n + n + j). Each group is its own loss (its mean over
// its n pairs) and its own metrics row; G = 1 is the plain layout.
//
// Everything is in log space. The paper's gradient magnitudes |dl/dpi| = |dl/dlog pi| / pi are reported as
// log10|dl/dpi| = (log|dl/dlog pi| - log pi) / ln 10, with log|dl/dlog pi| computed analytically (log-sigmoid) for the
// sigmoid losses, so they stay finite when pi is far below f32's smallest normal number (1e-38).

struct Params {
    loss_type: u32,      // see LOSS_* below
    n_pairs: u32,        // N
    t: u32,              // T
    use_mean: u32,       // 1: the loss reads per-token mean log-probs (IPO as in TRL, SimPO); 0: sequence sums
    beta: f32,           // beta (beta_pos for Flex-DPO)
    beta_neg: f32,       // Flex-DPO's beta on the rejected log-ratio
    gamma: f32,          // SFT-DPO's NLL weight
    eta: f32,            // IPO's eta (target margin 1/(2 eta)); SLiC's NLL weight
    delta: f32,          // SLiC's margin
    label_smoothing: f32,// cDPO / robust DPO
    lambda: f32,         // DPOP's penalty
    margin: f32,         // SimPO's gamma (target reward margin)
    groups: u32,         // G (N is a multiple of G)
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

const LOSS_DPO: u32 = 0u;
const LOSS_CDPO: u32 = 1u;
const LOSS_ROBUST: u32 = 2u;
const LOSS_FLEX_DPO: u32 = 3u;
const LOSS_SFT_DPO: u32 = 4u;
const LOSS_IPO: u32 = 5u;
const LOSS_SLIC: u32 = 6u;
const LOSS_HINGE: u32 = 7u;
const LOSS_DPOP: u32 = 8u;
const LOSS_SIMPO: u32 = 9u;

// Per-pair statistics, one row of STATS floats per pair; reduced to the mean over pairs.
const STATS: u32 = 12u;
// 0 loss, 1 rewards/chosen, 2 rewards/rejected, 3 rewards/margins, 4 rewards/accuracies, 5 logps/chosen (sum),
// 6 logps/rejected (sum), 7 grad/log10_chosen, 8 grad/log10_rejected, 9 per-token mean logp chosen,
// 10 per-token mean logp rejected, 11 nll/chosen (sum).

const LN10: f32 = 2.302585092994046;

@group(0) @binding(0) var<uniform> p: Params;

// log sigmoid(x), stable for any x.
fn log_sigmoid(x: f32) -> f32 {
    return min(x, 0.0) - log(1.0 + exp(-abs(x)));
}

fn sigmoid(x: f32) -> f32 {
    return exp(log_sigmoid(x));
}

// Pairs per group.
fn group_pairs() -> u32 {
    return p.n_pairs / max(p.groups, 1u);
}

// (chosen row, rejected row) of pair i.
fn pair_rows(i: u32) -> vec2<u32> {
    let n = group_pairs();
    let c = (i / n) * 2u * n + i % n;
    return vec2<u32>(c, c + n);
}

// log |x| with a floor instead of -inf.
fn log_abs(x: f32) -> f32 {
    return log(max(abs(x), 1e-37));
}

// preference_forward: one invocation per pair i.
// bindings: 1 logps (2N, T) read, 2 mask (2N, T) read, 3 ref_sum (2N) read, 4 ref_mean (2N) read,
//           5 stats (N, STATS) write, 6 coef (2N) write = d loss / d (sequence sum or mean) log-prob, already
//           divided by N (the loss is the mean over pairs).
// grid: grid_1d(N, 64)
@group(0) @binding(1) var<storage, read> f_logps: array<f32>;
@group(0) @binding(2) var<storage, read> f_mask: array<f32>;
@group(0) @binding(3) var<storage, read> f_ref_sum: array<f32>;
@group(0) @binding(4) var<storage, read> f_ref_mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> f_stats: array<f32>;
@group(0) @binding(6) var<storage, read_write> f_coef: array<f32>;

// (sum, mean, count) of a sequence's masked token log-probs.
fn seq_logp(s: u32) -> vec3<f32> {
    var sum = 0.0;
    var count = 0.0;
    for (var t = 0u; t < p.t; t++) {
        let m = f_mask[s * p.t + t];
        sum += m * f_logps[s * p.t + t];
        count += m;
    }
    return vec3<f32>(sum, sum / max(count, 1.0), count);
}

@compute @workgroup_size(64)
fn preference_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.n_pairs) { return; }
    let rows = pair_rows(i);
    let c = seq_logp(rows.x);
    let r = seq_logp(rows.y);
    // The log-probs the loss reads: sequence sums, or per-token means for the length-normalised losses.
    var pc = c.x;
    var pr = r.x;
    var rc = f_ref_sum[rows.x];
    var rr = f_ref_sum[rows.y];
    if (p.use_mean == 1u) {
        pc = c.y;
        pr = r.y;
        rc = f_ref_mean[rows.x];
        rr = f_ref_mean[rows.y];
    }
    let lc = pc - rc; // chosen log-ratio
    let lr = pr - rr; // rejected log-ratio
    let beta = p.beta;

    var loss = 0.0;
    var dpc = 0.0;        // d loss / d pc
    var dpr = 0.0;        // d loss / d pr
    var logmag_c = 0.0;   // log |dpc|
    var logmag_r = 0.0;   // log |dpr|
    var reward_c = beta * lc;
    var reward_r = beta * lr;
    switch p.loss_type {
        case LOSS_DPO, LOSS_SFT_DPO: {
            let m = beta * (lc - lr);
            loss = -log_sigmoid(m);
            let g = sigmoid(-m); // -d loss / d m
            dpc = -beta * g;
            dpr = beta * g;
            logmag_c = log(beta) + log_sigmoid(-m);
            logmag_r = logmag_c;
            if (p.loss_type == LOSS_SFT_DPO) {
                // + gamma * NLL of the chosen response
                loss -= p.gamma * c.x;
                dpc -= p.gamma;
                logmag_c = log(beta * g + p.gamma);
            }
        }
        case LOSS_CDPO: {
            let m = beta * (lc - lr);
            let e = p.label_smoothing;
            loss = -(1.0 - e) * log_sigmoid(m) - e * log_sigmoid(-m);
            let dm = -(1.0 - e) * sigmoid(-m) + e * sigmoid(m);
            dpc = beta * dm;
            dpr = -beta * dm;
            logmag_c = log_abs(dpc);
            logmag_r = logmag_c;
        }
        case LOSS_ROBUST: {
            let m = beta * (lc - lr);
            let e = p.label_smoothing;
            loss = (-(1.0 - e) * log_sigmoid(m) + e * log_sigmoid(-m)) / (1.0 - 2.0 * e);
            let dm = (-(1.0 - e) * sigmoid(-m) - e * sigmoid(m)) / (1.0 - 2.0 * e);
            dpc = beta * dm;
            dpr = -beta * dm;
            logmag_c = log_abs(dpc);
            logmag_r = logmag_c;
        }
        case LOSS_FLEX_DPO: {
            let m = beta * lc - p.beta_neg * lr;
            loss = -log_sigmoid(m);
            let g = sigmoid(-m);
            dpc = -beta * g;
            dpr = p.beta_neg * g;
            logmag_c = log(beta) + log_sigmoid(-m);
            logmag_r = log(p.beta_neg) + log_sigmoid(-m);
            reward_r = p.beta_neg * lr;
        }
        case LOSS_IPO: {
            let h = lc - lr;
            let d = h - 1.0 / (2.0 * p.eta);
            loss = d * d;
            dpc = 2.0 * d;
            dpr = -2.0 * d;
            logmag_c = log_abs(dpc);
            logmag_r = logmag_c;
        }
        case LOSS_SLIC: {
            // reference-free: max(0, delta - pc + pr) - eta * pc
            let h = p.delta - pc + pr;
            loss = max(h, 0.0) - p.eta * pc;
            var on = 0.0;
            if (h > 0.0) { on = 1.0; }
            dpc = -on - p.eta;
            dpr = on;
            logmag_c = log_abs(dpc);
            logmag_r = log_abs(dpr);
            reward_c = beta * pc;
            reward_r = beta * pr;
        }
        case LOSS_HINGE: {
            let m = beta * (lc - lr);
            loss = max(1.0 - m, 0.0);
            var on = 0.0;
            if (1.0 - m > 0.0) { on = 1.0; }
            dpc = -beta * on;
            dpr = beta * on;
            logmag_c = log_abs(dpc);
            logmag_r = logmag_c;
        }
        case LOSS_DPOP: {
            // DPO-Positive (Pal et al. 2024): penalise the chosen log-prob falling below the reference's.
            let penalty = max(rc - pc, 0.0);
            let m = beta * (lc - lr - p.lambda * penalty);
            loss = -log_sigmoid(m);
            let g = sigmoid(-m);
            var slope = 1.0;
            if (rc - pc > 0.0) { slope = 1.0 + p.lambda; }
            dpc = -beta * slope * g;
            dpr = beta * g;
            logmag_c = log(beta * slope) + log_sigmoid(-m);
            logmag_r = log(beta) + log_sigmoid(-m);
        }
        case LOSS_SIMPO: {
            // reference-free, per-token means (use_mean = 1): -log sigmoid(beta (pc - pr) - margin)
            let m = beta * (pc - pr) - p.margin;
            loss = -log_sigmoid(m);
            let g = sigmoid(-m);
            dpc = -beta * g;
            dpr = beta * g;
            logmag_c = log(beta) + log_sigmoid(-m);
            logmag_r = logmag_c;
            reward_c = beta * pc;
            reward_r = beta * pr;
        }
        default: {}
    }

    // Gradient magnitudes w.r.t. the sequence probability pi = exp(sequence log-prob): a mean-based loss sees
    // d mean / d sum = 1 / count.
    var log_count_c = 0.0;
    var log_count_r = 0.0;
    if (p.use_mean == 1u) {
        log_count_c = log(max(c.z, 1.0));
        log_count_r = log(max(r.z, 1.0));
    }
    let row = i * STATS;
    f_stats[row + 0u] = loss;
    f_stats[row + 1u] = reward_c;
    f_stats[row + 2u] = reward_r;
    f_stats[row + 3u] = reward_c - reward_r;
    f_stats[row + 4u] = select(0.0, 1.0, reward_c > reward_r);
    f_stats[row + 5u] = c.x;
    f_stats[row + 6u] = r.x;
    f_stats[row + 7u] = (logmag_c - log_count_c - c.x) / LN10;
    f_stats[row + 8u] = (logmag_r - log_count_r - r.x) / LN10;
    f_stats[row + 9u] = c.y;
    f_stats[row + 10u] = r.y;
    f_stats[row + 11u] = -c.x;
    let inv_n = 1.0 / f32(group_pairs());
    f_coef[rows.x] = dpc * inv_n;
    f_coef[rows.y] = dpr * inv_n;
}

// preference_reduce: mean over each group's pairs of each statistic. One invocation per (group, statistic) sums its
// column in pair order: deterministic, and free of workgroup barriers (a 256-wide tree reduction per statistic cost
// ~240 us per step on lavapipe for the toy's 4 pairs, as much as a 65k-parameter AdamW update).
// bindings: 7 stats (N, STATS) read, 8 metrics (G, STATS) write.
// grid: grid_1d(G * STATS, 64)
@group(0) @binding(7) var<storage, read> r_stats: array<f32>;
@group(0) @binding(8) var<storage, read_write> r_metrics: array<f32>;

@compute @workgroup_size(64)
fn preference_reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= max(p.groups, 1u) * STATS) { return; }
    let g = idx / STATS;
    let k = idx % STATS;
    let n = group_pairs();
    var acc = 0.0;
    for (var i = g * n; i < (g + 1u) * n; i++) {
        acc += r_stats[i * STATS + k];
    }
    r_metrics[idx] = acc / f32(max(n, 1u));
}

// preference_backward: d loss / d token log-prob = coef[s] * mask (divided by the token count when use_mean).
// Overwrites dlogps. One invocation per sequence s (loops over its T tokens).
// bindings: 9 coef (2N) read, 10 mask (2N, T) read, 11 dlogps (2N, T) write.
// grid: grid_1d(2N, 64)
@group(0) @binding(9) var<storage, read> b_coef: array<f32>;
@group(0) @binding(10) var<storage, read> b_mask: array<f32>;
@group(0) @binding(11) var<storage, read_write> b_dlogps: array<f32>;

@compute @workgroup_size(64)
fn preference_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let s = gid.x + gid.y * nwg.x * 64u;
    if (s >= 2u * p.n_pairs) { return; }
    var scale = b_coef[s];
    if (p.use_mean == 1u) {
        var count = 0.0;
        for (var t = 0u; t < p.t; t++) {
            count += b_mask[s * p.t + t];
        }
        scale = scale / max(count, 1.0);
    }
    for (var t = 0u; t < p.t; t++) {
        b_dlogps[s * p.t + t] = scale * b_mask[s * p.t + t];
    }
}

// ---- Bradley-Terry reward-model loss (the same pairwise family): -log sigmoid(r(x, a+) - r(x, a-)) ----
// The reward of a sequence is the scalar head's output at its last response token, `last[s]`.

// bt_forward: one invocation per pair i. Stats use the same STATS layout: 0 loss, 1 rewards/chosen,
// 2 rewards/rejected, 3 rewards/margins, 4 rewards/accuracies; the rest are 0.
// bindings: 12 scalar (2N, T) read, 13 last (2N) u32 read, 14 stats (N, STATS) write, 15 coef (2N) write.
// grid: grid_1d(N, 64)
@group(0) @binding(12) var<storage, read> bt_scalar: array<f32>;
@group(0) @binding(13) var<storage, read> bt_last: array<u32>;
@group(0) @binding(14) var<storage, read_write> bt_stats: array<f32>;
@group(0) @binding(15) var<storage, read_write> bt_coef: array<f32>;

@compute @workgroup_size(64)
fn bt_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.n_pairs) { return; }
    let rows = pair_rows(i);
    let rc = bt_scalar[rows.x * p.t + bt_last[rows.x]];
    let rr = bt_scalar[rows.y * p.t + bt_last[rows.y]];
    let m = rc - rr;
    let g = sigmoid(-m);
    let row = i * STATS;
    bt_stats[row + 0u] = -log_sigmoid(m);
    bt_stats[row + 1u] = rc;
    bt_stats[row + 2u] = rr;
    bt_stats[row + 3u] = m;
    bt_stats[row + 4u] = select(0.0, 1.0, m > 0.0);
    for (var k = 5u; k < STATS; k++) {
        bt_stats[row + k] = 0.0;
    }
    let inv_n = 1.0 / f32(group_pairs());
    bt_coef[rows.x] = -g * inv_n;
    bt_coef[rows.y] = g * inv_n;
}

// bt_backward: dscalar[s, t] = coef[s] at t = last[s], 0 elsewhere (overwrites). One invocation per sequence.
// bindings: 16 coef (2N) read, 17 last (2N) u32 read, 18 dscalar (2N, T) write.
// grid: grid_1d(2N, 64)
@group(0) @binding(16) var<storage, read> btb_coef: array<f32>;
@group(0) @binding(17) var<storage, read> btb_last: array<u32>;
@group(0) @binding(18) var<storage, read_write> btb_dscalar: array<f32>;

@compute @workgroup_size(64)
fn bt_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let s = gid.x + gid.y * nwg.x * 64u;
    if (s >= 2u * p.n_pairs) { return; }
    for (var t = 0u; t < p.t; t++) {
        btb_dscalar[s * p.t + t] = select(0.0, btb_coef[s], t == btb_last[s]);
    }
}
