// RLHF-PPO op family (TRL's PPOTrainer, in WGSL): rewards with a per-token KL penalty, reward and advantage
// whitening, GAE, rollout metrics, the clipped policy and value losses with their gradients, the per-step metric
// reduction, the policy's per-token entropy, and the reward sources (a fixed table, a one-hot (prompt, response)
// input for a toy reward model, a rule-based token count, the reward model's score at the last token).
//
// Rollout layout: a packed (B, T, RO) f32 tensor, one record per token position (field indices RO_* below). A
// position is a response token when its mask field is 1; position t holds log pi(targets[t] | tokens[..=t]), as in
// the models' `logps`. The toy bandit is the special case T = 1.
//
// Every reduction runs in one workgroup in a fixed order (deterministic run to run); B*T is small in RLHF.

struct Params {
    b: u32,              // B: rows (sequences)
    t: u32,              // T: positions per row
    n: u32,              // elements: rows of token_entropy, one-hot width for pair_onehot
    v: u32,              // V: logits per row (token_entropy)
    kl_estimator: u32,   // 0: k1 = log pi - log pi_ref; 1: k3 = (r - 1) - log r, r = pi_ref / pi
    field: u32,          // masked_whiten: which rollout field
    shift_mean: u32,     // masked_whiten: 1 subtract the mean (advantages), 0 keep it (rewards)
    stats_row: u32,      // ppo_loss: which row of stats it writes; ppo_reduce: number of rows
    epoch: u32,          // ppo_loss: which epoch's ranks select the minibatch
    mb: u32,             // ppo_loss: minibatch index m (rows with rank in [m S, (m+1) S))
    mb_size: u32,        // ppo_loss: S = B / minibatches
    token: u32,          // count_token_reward: the counted token id
    kl_coef: f32,        // beta
    gamma: f32,
    lam: f32,
    cliprange: f32,
    cliprange_value: f32,
    vf_coef: f32,
    entropy_coef: f32,
    scale: f32,          // count_token_reward: score per counted token
    offset: u32,         // score_gather: position offset of the scored token after the last masked position
    responses: u32,      // R (table_reward, pair_onehot)
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// Rollout record fields.
const RO: u32 = 8u;
const RO_LOGP: u32 = 0u;     // log pi_old(token)   (policy at rollout time)
const RO_REF_LOGP: u32 = 1u; // log pi_ref(token)
const RO_VALUE: u32 = 2u;    // V_old(position)
const RO_KL: u32 = 3u;       // per-token KL estimate (k1 or k3)
const RO_REWARD: u32 = 4u;   // -beta * kl, plus the score at the last response token
const RO_ADV: u32 = 5u;      // GAE advantage
const RO_RET: u32 = 6u;      // return = advantage + value (before advantage whitening)
const RO_MASK: u32 = 7u;     // 1.0 on response tokens

// Rollout metrics (ROLLOUT_STATS floats), TRL names.
// 0 objective/kl, 1 objective/entropy, 2 objective/non_score_reward, 3 objective/rlhf_reward, 4 objective/scores
const ROLLOUT_STATS: u32 = 5u;
// Per-minibatch statistics (MB_STATS floats per row of `stats`):
// 0 loss/policy, 1 loss/value, 2 policy/clipfrac, 3 val/clipfrac, 4 policy/approxkl, 5 policy/entropy, 6 val/ratio
const MB_STATS: u32 = 7u;
// Train metrics = the MB_STATS means over minibatches, then 7 val/ratio_var (unbiased variance of val/ratio).
const TRAIN_STATS: u32 = 8u;

var<workgroup> red: array<f32, 256>;

// Sum of one value per invocation over the 256-wide workgroup, in a fixed tree order. Call from uniform control flow.
fn wg_sum(l: u32, x: f32) -> f32 {
    red[l] = x;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (l < s) { red[l] += red[l + s]; }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

// ppo_rewards: fill the rollout record of every position of row b (TRL: kl, non_score_reward, rewards):
//   kl = k1 or k3 of (logp, ref_logp); reward = -kl_coef * kl, plus scores[b] at the row's last response token.
// Non-response positions get an all-zero record. One invocation per row.
// bindings: 1 logps (B, T) read (policy), 2 ref_logps (B, T) read, 3 values (B, T) read, 4 scores (B) read,
//           5 mask (B, T) read, 6 rollout (B, T, RO) write.
// grid: grid_1d(B, 64)
@group(0) @binding(1) var<storage, read> rw_logps: array<f32>;
@group(0) @binding(2) var<storage, read> rw_ref: array<f32>;
@group(0) @binding(3) var<storage, read> rw_values: array<f32>;
@group(0) @binding(4) var<storage, read> rw_scores: array<f32>;
@group(0) @binding(5) var<storage, read> rw_mask: array<f32>;
@group(0) @binding(6) var<storage, read_write> rw_rollout: array<f32>;

@compute @workgroup_size(64)
fn ppo_rewards(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = gid.x + gid.y * nwg.x * 64u;
    if (b >= p.b) { return; }
    var last = p.t; // none
    for (var t = 0u; t < p.t; t++) {
        if (rw_mask[b * p.t + t] > 0.0) { last = t; }
    }
    for (var t = 0u; t < p.t; t++) {
        let i = b * p.t + t;
        let o = i * RO;
        let m = rw_mask[i];
        var rec = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        if (m > 0.0) {
            let logp = rw_logps[i];
            let ref_logp = rw_ref[i];
            let logr = ref_logp - logp;
            var kl = -logr;
            if (p.kl_estimator == 1u) {
                kl = (exp(logr) - 1.0) - logr;
            }
            var reward = -p.kl_coef * kl;
            if (t == last) { reward += rw_scores[b]; }
            rec[RO_LOGP] = logp;
            rec[RO_REF_LOGP] = ref_logp;
            rec[RO_VALUE] = rw_values[i];
            rec[RO_KL] = kl;
            rec[RO_REWARD] = reward;
            rec[RO_MASK] = 1.0;
        }
        for (var k = 0u; k < RO; k++) {
            rw_rollout[o + k] = rec[k];
        }
    }
}

// masked_whiten: TRL's masked_whiten on one rollout field over the response positions, in place:
//   x = (x - mean) * rsqrt(var + 1e-8) (+ mean again when shift_mean = 0), var unbiased (Bessel) when count > 1.
// Non-response positions are left as they are (zero). One workgroup.
// bindings: 7 rollout (B, T, RO) read_write.
// grid: (1, 1, 1)
@group(0) @binding(7) var<storage, read_write> wh_rollout: array<f32>;

@compute @workgroup_size(256)
fn masked_whiten(@builtin(local_invocation_id) lid: vec3<u32>) {
    let l = lid.x;
    let n = p.b * p.t;
    var s = 0.0;
    var c = 0.0;
    for (var i = l; i < n; i += 256u) {
        let m = wh_rollout[i * RO + RO_MASK];
        s += m * wh_rollout[i * RO + p.field];
        c += m;
    }
    let count = wg_sum(l, c);
    let mean = wg_sum(l, s) / max(count, 1.0);
    var q = 0.0;
    for (var i = l; i < n; i += 256u) {
        let m = wh_rollout[i * RO + RO_MASK];
        let d = wh_rollout[i * RO + p.field] - mean;
        q += m * d * d;
    }
    var variance = wg_sum(l, q) / max(count, 1.0);
    if (count > 1.0) {
        variance = variance * count / (count - 1.0);
    }
    let rs = inverseSqrt(variance + 1e-8);
    for (var i = l; i < n; i += 256u) {
        if (wh_rollout[i * RO + RO_MASK] > 0.0) {
            var w = (wh_rollout[i * RO + p.field] - mean) * rs;
            if (p.shift_mean == 0u) { w += mean; }
            wh_rollout[i * RO + p.field] = w;
        }
    }
}

// gae: generalised advantage estimation over each row's response positions, last to first, in place:
//   delta_t = r_t + gamma V_next - V_t; A_t = delta_t + gamma lam A_next; return_t = A_t + V_t,
// where "next" is the row's next response position (V_next = 0 and A_next = 0 after the last one).
// One invocation per row.
// bindings: 8 rollout (B, T, RO) read_write (reads reward, value, mask; writes advantage, return).
// grid: grid_1d(B, 64)
@group(0) @binding(8) var<storage, read_write> g_rollout: array<f32>;

@compute @workgroup_size(64)
fn gae(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = gid.x + gid.y * nwg.x * 64u;
    if (b >= p.b) { return; }
    var lastgaelam = 0.0;
    var nextvalue = 0.0;
    for (var k = 0u; k < p.t; k++) {
        let t = p.t - 1u - k;
        let o = (b * p.t + t) * RO;
        if (g_rollout[o + RO_MASK] > 0.0) {
            let v = g_rollout[o + RO_VALUE];
            let delta = g_rollout[o + RO_REWARD] + p.gamma * nextvalue - v;
            lastgaelam = delta + p.gamma * p.lam * lastgaelam;
            g_rollout[o + RO_ADV] = lastgaelam;
            g_rollout[o + RO_RET] = lastgaelam + v;
            nextvalue = v;
        } else {
            g_rollout[o + RO_ADV] = 0.0;
            g_rollout[o + RO_RET] = 0.0;
        }
    }
}

// rollout_stats: TRL's rollout metrics, means over rows of per-row sums over response tokens:
//   objective/kl = mean_b sum_t kl, objective/entropy = mean_b sum_t -logp, objective/non_score_reward =
//   -kl_coef * objective/kl, objective/scores = mean_b score, objective/rlhf_reward = non_score_reward + scores.
// Run before reward whitening (it reads the kl field, not the reward field). One workgroup.
// bindings: 9 rollout (B, T, RO) read, 10 scores (B) read, 11 metrics (ROLLOUT_STATS) write.
// grid: (1, 1, 1)
@group(0) @binding(9) var<storage, read> st_rollout: array<f32>;
@group(0) @binding(10) var<storage, read> st_scores: array<f32>;
@group(0) @binding(11) var<storage, read_write> st_metrics: array<f32>;

@compute @workgroup_size(256)
fn rollout_stats(@builtin(local_invocation_id) lid: vec3<u32>) {
    let l = lid.x;
    let n = p.b * p.t;
    var kl = 0.0;
    var ent = 0.0;
    for (var i = l; i < n; i += 256u) {
        let m = st_rollout[i * RO + RO_MASK];
        kl += m * st_rollout[i * RO + RO_KL];
        ent -= m * st_rollout[i * RO + RO_LOGP];
    }
    var sc = 0.0;
    for (var b = l; b < p.b; b += 256u) {
        sc += st_scores[b];
    }
    let inv_b = 1.0 / f32(max(p.b, 1u));
    let mean_kl = wg_sum(l, kl) * inv_b;
    let mean_ent = wg_sum(l, ent) * inv_b;
    let mean_score = wg_sum(l, sc) * inv_b;
    if (l == 0u) {
        let non_score = -p.kl_coef * mean_kl;
        st_metrics[0] = mean_kl;
        st_metrics[1] = mean_ent;
        st_metrics[2] = non_score;
        st_metrics[3] = non_score + mean_score;
        st_metrics[4] = mean_score;
    }
}

// token_entropy: out[i] = H(softmax(logits[i, :])) = logsumexp(x) - sum_j softmax(x)_j x_j. One invocation per
// row (rows are many and V small here; a workgroup per row costs more in barriers than it saves).
// bindings: 12 logits (N, V) read, 13 out (N) write.
// grid: grid_1d(N, 64)
@group(0) @binding(12) var<storage, read> e_logits: array<f32>;
@group(0) @binding(13) var<storage, read_write> e_out: array<f32>;

@compute @workgroup_size(64)
fn token_entropy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if (row >= p.n) { return; }
    let base = row * p.v;
    var m = -3.0e38;
    for (var j = 0u; j < p.v; j++) {
        m = max(m, e_logits[base + j]);
    }
    var z = 0.0;
    var zx = 0.0;
    for (var j = 0u; j < p.v; j++) {
        let x = e_logits[base + j] - m;
        let e = exp(x);
        z += e;
        zx += x * e;
    }
    // H = log Z - E[x - m]
    e_out[row] = log(z) - zx / z;
}

// ppo_loss: TRL's PPO loss on minibatch m of epoch e (the rows whose rank in that epoch's permutation lies in
// [m S, (m+1) S)), its gradients and its statistics. With n the minibatch's response-token count:
//   ratio = exp(logp - logp_old); pg = max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps)); loss/policy = sum pg / n;
//   vclip = clip(v, v_old - eps_v, v_old + eps_v); vf = max((v - R)^2, (vclip - R)^2); loss/value = 0.5 sum vf / n;
//   loss = loss/policy + vf_coef * loss/value - entropy_coef * entropy.
// dlogps = d loss / d logp: -A ratio / n unless the clipped branch is strictly larger (then 0), plus the entropy
// bonus's score-function term entropy_coef * ratio * (logp + 1) / n (an unbiased estimate of -d H / d logp under
// the rollout samples). dvalues = vf_coef (v - R) / n unless the clipped value loss is strictly larger (then 0).
// Both are overwritten for every position (0 outside the minibatch). One workgroup.
// bindings: 14 logps (B, T) read (policy, current), 15 values (B, T) read (value head, current),
//           16 rollout (B, T, RO) read, 17 ranks (E, B) u32 read, 18 entropy (B, T) read (token_entropy),
//           19 dlogps (B, T) write, 20 dvalues (B, T) write, 21 stats (rows, MB_STATS) read_write (row stats_row).
// grid: (1, 1, 1)
@group(0) @binding(14) var<storage, read> l_logps: array<f32>;
@group(0) @binding(15) var<storage, read> l_values: array<f32>;
@group(0) @binding(16) var<storage, read> l_rollout: array<f32>;
@group(0) @binding(17) var<storage, read> l_ranks: array<u32>;
@group(0) @binding(18) var<storage, read> l_entropy: array<f32>;
@group(0) @binding(19) var<storage, read_write> l_dlogps: array<f32>;
@group(0) @binding(20) var<storage, read_write> l_dvalues: array<f32>;
@group(0) @binding(21) var<storage, read_write> l_stats: array<f32>;

fn in_minibatch(row: u32) -> bool {
    let r = l_ranks[p.epoch * p.b + row];
    return r >= p.mb * p.mb_size && r < (p.mb + 1u) * p.mb_size;
}

@compute @workgroup_size(256)
fn ppo_loss(@builtin(local_invocation_id) lid: vec3<u32>) {
    let l = lid.x;
    let n = p.b * p.t;
    var c = 0.0;
    for (var i = l; i < n; i += 256u) {
        if (in_minibatch(i / p.t)) { c += l_rollout[i * RO + RO_MASK]; }
    }
    let count = wg_sum(l, c);
    let inv = 1.0 / max(count, 1.0);
    var s_pg = 0.0;
    var s_vf = 0.0;
    var s_pgc = 0.0;
    var s_vfc = 0.0;
    var s_akl = 0.0;
    var s_ent = 0.0;
    var s_ratio = 0.0;
    for (var i = l; i < n; i += 256u) {
        let o = i * RO;
        var m = 0.0;
        if (in_minibatch(i / p.t)) { m = l_rollout[o + RO_MASK]; }
        if (m == 0.0) {
            l_dlogps[i] = 0.0;
            l_dvalues[i] = 0.0;
            continue;
        }
        let logp = l_logps[i];
        let adv = l_rollout[o + RO_ADV];
        let diff = logp - l_rollout[o + RO_LOGP];
        let ratio = exp(diff);
        let pg1 = -adv * ratio;
        let pg2 = -adv * clamp(ratio, 1.0 - p.cliprange, 1.0 + p.cliprange);
        var dlogp = -adv * ratio;
        var pg_clipped = 0.0;
        if (pg2 > pg1) {
            dlogp = 0.0;
            pg_clipped = 1.0;
        }
        dlogp += p.entropy_coef * ratio * (logp + 1.0);
        l_dlogps[i] = dlogp * inv;

        let v = l_values[i];
        let v_old = l_rollout[o + RO_VALUE];
        let ret = l_rollout[o + RO_RET];
        let vclip = clamp(v, v_old - p.cliprange_value, v_old + p.cliprange_value);
        let vf1 = (v - ret) * (v - ret);
        let vf2 = (vclip - ret) * (vclip - ret);
        var dv = p.vf_coef * (v - ret);
        var vf_clipped = 0.0;
        if (vf2 > vf1) {
            dv = 0.0;
            vf_clipped = 1.0;
        }
        l_dvalues[i] = dv * inv;

        s_pg += max(pg1, pg2);
        s_vf += max(vf1, vf2);
        s_pgc += pg_clipped;
        s_vfc += vf_clipped;
        s_akl += 0.5 * diff * diff;
        s_ent += l_entropy[i];
        s_ratio += ratio;
    }
    let t_pg = wg_sum(l, s_pg);
    let t_vf = wg_sum(l, s_vf);
    let t_pgc = wg_sum(l, s_pgc);
    let t_vfc = wg_sum(l, s_vfc);
    let t_akl = wg_sum(l, s_akl);
    let t_ent = wg_sum(l, s_ent);
    let t_ratio = wg_sum(l, s_ratio);
    if (l == 0u) {
        let o = p.stats_row * MB_STATS;
        l_stats[o + 0u] = t_pg * inv;
        l_stats[o + 1u] = 0.5 * t_vf * inv;
        l_stats[o + 2u] = t_pgc * inv;
        l_stats[o + 3u] = t_vfc * inv;
        l_stats[o + 4u] = t_akl * inv;
        l_stats[o + 5u] = t_ent * inv;
        l_stats[o + 6u] = t_ratio * inv;
    }
}

// ppo_reduce: train metrics = means over the `stats_row` minibatch rows of each statistic, then the unbiased
// variance of val/ratio (TRL's val/ratio_var). Invocation k owns metric k.
// bindings: 22 stats (rows, MB_STATS) read, 23 metrics (TRAIN_STATS) write.
// grid: (1, 1, 1)
@group(0) @binding(22) var<storage, read> rd_stats: array<f32>;
@group(0) @binding(23) var<storage, read_write> rd_metrics: array<f32>;

@compute @workgroup_size(64)
fn ppo_reduce(@builtin(local_invocation_id) lid: vec3<u32>) {
    let k = lid.x;
    let rows = p.stats_row;
    let inv = 1.0 / f32(max(rows, 1u));
    if (k < MB_STATS) {
        var s = 0.0;
        for (var r = 0u; r < rows; r++) {
            s += rd_stats[r * MB_STATS + k];
        }
        rd_metrics[k] = s * inv;
    } else if (k == MB_STATS) {
        var s = 0.0;
        for (var r = 0u; r < rows; r++) {
            s += rd_stats[r * MB_STATS + 6u];
        }
        let mean = s * inv;
        var q = 0.0;
        for (var r = 0u; r < rows; r++) {
            let d = rd_stats[r * MB_STATS + 6u] - mean;
            q += d * d;
        }
        var variance = 0.0;
        if (rows > 1u) { variance = q / f32(rows - 1u); }
        rd_metrics[k] = variance;
    }
}

// table_reward: scores[b] = table[prompts[b], responses[b]], a known reward r(x, y) (P, R). One invocation per row.
// bindings: 24 table (P, R) read, 25 prompts (B) u32 read, 26 responses (B) u32 read, 27 scores (B) write.
// grid: grid_1d(B, 64)
@group(0) @binding(24) var<storage, read> tr_table: array<f32>;
@group(0) @binding(25) var<storage, read> tr_prompts: array<u32>;
@group(0) @binding(26) var<storage, read> tr_responses: array<u32>;
@group(0) @binding(27) var<storage, read_write> tr_scores: array<f32>;

@compute @workgroup_size(64)
fn table_reward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = gid.x + gid.y * nwg.x * 64u;
    if (b >= p.b) { return; }
    tr_scores[b] = tr_table[tr_prompts[b] * p.responses + tr_responses[b]];
}

// pair_onehot: x[b, :] = one-hot of prompts[b] * R + responses[b], width N = P * R: the input of a toy reward model
// that scores (prompt, response) pairs with its scalar head. One invocation per element.
// bindings: 28 prompts (B) u32 read, 29 responses (B) u32 read, 30 x (B, N) write.
// grid: grid_1d(B * N, 256)
@group(0) @binding(28) var<storage, read> po_prompts: array<u32>;
@group(0) @binding(29) var<storage, read> po_responses: array<u32>;
@group(0) @binding(30) var<storage, read_write> po_x: array<f32>;

@compute @workgroup_size(256)
fn pair_onehot(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.b * p.n) { return; }
    let b = i / p.n;
    let j = i % p.n;
    po_x[i] = select(0.0, 1.0, j == po_prompts[b] * p.responses + po_responses[b]);
}

// count_token_reward: a rule-based score, scores[b] = scale * (number of response tokens equal to `token`), the
// response token of position t being tokens[b, t + 1] where mask[b, t] = 1. One invocation per row.
// bindings: 31 tokens (B, T) u32 read, 32 mask (B, T) read, 33 scores (B) write.
// grid: grid_1d(B, 64)
@group(0) @binding(31) var<storage, read> ct_tokens: array<u32>;
@group(0) @binding(32) var<storage, read> ct_mask: array<f32>;
@group(0) @binding(33) var<storage, read_write> ct_scores: array<f32>;

@compute @workgroup_size(64)
fn count_token_reward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = gid.x + gid.y * nwg.x * 64u;
    if (b >= p.b) { return; }
    var c = 0.0;
    for (var t = 0u; t + 1u < p.t; t++) {
        if (ct_mask[b * p.t + t] > 0.0 && ct_tokens[b * p.t + t + 1u] == p.token) { c += 1.0; }
    }
    ct_scores[b] = p.scale * c;
}

// score_gather: scores[b] = src[b, last_b + offset], last_b the row's last response position: a reward model's
// scalar at the last response token (offset 1 for the GPT, whose position t+1 holds the token predicted at t;
// offset 0 for the toy MLP, T = 1). 0 for a row without response positions. One invocation per row.
// bindings: 34 src (B, T) read, 35 mask (B, T) read, 36 scores (B) write.
// grid: grid_1d(B, 64)
@group(0) @binding(34) var<storage, read> sg_src: array<f32>;
@group(0) @binding(35) var<storage, read> sg_mask: array<f32>;
@group(0) @binding(36) var<storage, read_write> sg_scores: array<f32>;

@compute @workgroup_size(64)
fn score_gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = gid.x + gid.y * nwg.x * 64u;
    if (b >= p.b) { return; }
    var last = p.t;
    for (var t = 0u; t < p.t; t++) {
        if (sg_mask[b * p.t + t] > 0.0) { last = t; }
    }
    var s = 0.0;
    if (last < p.t && last + p.offset < p.t) {
        s = sg_src[b * p.t + last + p.offset];
    }
    sg_scores[b] = s;
}
