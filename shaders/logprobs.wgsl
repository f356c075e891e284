// Log-probability op family: per-token log-probabilities of target tokens (log-softmax + gather), its backward, the
// full log-softmax over the vocabulary, the masked SFT (cross-entropy) loss and per-sequence sums of log-probs.
// Everything stays in log space: logsumexp subtracts the row max first, so a target 200 nats below the max gets
// logp ~ -200 (finite), never log(0) = -inf. The logsumexp is "online" (Milakov and Gimelshein 2018, the softmax of
// flash attention): one pass keeps a running max m and s = sum exp(x - m), rescaling s when m grows, so each logit is
// read once instead of twice (once for the max, once for the sum).
//
// Reductions are deterministic: each thread reduces a fixed strided slice, then a fixed tree over workgroup memory;
// no atomics, no accumulation from several invocations into one address.

struct Params {
    n: u32,     // rows (N) or sequences (S)
    v: u32,     // vocabulary (V) or tokens per sequence (T)
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 256u;

var<workgroup> red_a: array<f32, 256>;
var<workgroup> red_b: array<f32, 256>;

// A tree reduction over red_a and red_b in a fixed order. Must be called by every thread of the workgroup.
fn tree_sum_ab(lid: u32) {
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red_a[lid] = red_a[lid] + red_a[lid + s];
            red_b[lid] = red_b[lid] + red_b[lid + s];
        }
        workgroupBarrier();
    }
}

// One step of the online logsumexp: ms = (m, s) with s = sum exp(x - m) over the values pushed so far; starts at
// (-FLT_MAX, 0). Rescales only when the max grows, so one exp per value in the common case.
fn lse_push(ms: vec2<f32>, x: f32) -> vec2<f32> {
    if (x > ms.x) {
        return vec2<f32>(x, ms.y * exp(ms.x - x) + 1.0);
    }
    return vec2<f32>(ms.x, ms.y + exp(x - ms.x));
}

// Two partial (m, s) pairs merged: the larger max, each sum rescaled to it. Two empty pairs give (-FLT_MAX, 0).
fn lse_merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let m = max(a.x, b.x);
    return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

// The row's logsumexp by a workgroup of 256: thread lid pushes j = lid, lid + 256, ... in order, then a fixed tree of
// merges over red_a (max) and red_b (sum). Must be called by every thread; every thread gets the result.
fn row_lse(ms_thread: vec2<f32>, lid: u32) -> f32 {
    red_a[lid] = ms_thread.x;
    red_b[lid] = ms_thread.y;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k = k / 2u) {
        if (lid < k) {
            let merged = lse_merge(vec2<f32>(red_a[lid], red_b[lid]), vec2<f32>(red_a[lid + k], red_b[lid + k]));
            red_a[lid] = merged.x;
            red_b[lid] = merged.y;
        }
        workgroupBarrier();
    }
    let lse = red_a[0] + log(red_b[0]);
    workgroupBarrier();
    return lse;
}

// logprobs_forward: lse[i] = logsumexp(logits[i, :]); logps[i] = logits[i, targets[i]] - lse[i]
// bindings: 1 logits (N, V) read, 2 targets (N) u32 read, 3 logps (N) write, 4 lse (N) write.
// grid: one workgroup of 256 per row, rows folded into (x, y) by grid_1d(N, 1); row = wid.x + wid.y * nwg.x.
// targets[i] must be < V.
@group(0) @binding(1) var<storage, read> lpf_logits: array<f32>;
@group(0) @binding(2) var<storage, read> lpf_targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> lpf_logps: array<f32>;
@group(0) @binding(4) var<storage, read_write> lpf_lse: array<f32>;

@compute @workgroup_size(256)
fn logprobs_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.n) { return; }
    let base = row * p.v;
    var ms = vec2<f32>(-3.4028234e38, 0.0);
    for (var j = lid; j < p.v; j = j + WG) {
        ms = lse_push(ms, lpf_logits[base + j]);
    }
    let lse = row_lse(ms, lid);
    if (lid == 0u) {
        lpf_lse[row] = lse;
        lpf_logps[row] = lpf_logits[base + lpf_targets[row]] - lse;
    }
}

// logprobs_backward, in place: logits[i, j] <- dlogps[i] * (1[j == targets[i]] - exp(logits[i, j] - lse[i])).
// The logits' gradient overwrites the logits (as llm.c's fused classifier does): the backward is their last reader,
// and one (N, V) buffer fewer is a model's largest saving at a real vocabulary (GPT-2's 50257).
// bindings: 5 logits (N, V) read, then the gradient written; 6 lse (N) read, 7 targets (N) u32 read, 8 dlogps (N)
//   read.
// grid: one thread per element of (N, V), workgroup 256, grid_1d(N*V, 256); element = gid.x + gid.y * nwg.x * 256.
@group(0) @binding(5) var<storage, read_write> lpb_logits: array<f32>;
@group(0) @binding(6) var<storage, read> lpb_lse: array<f32>;
@group(0) @binding(7) var<storage, read> lpb_targets: array<u32>;
@group(0) @binding(8) var<storage, read> lpb_dlogps: array<f32>;

@compute @workgroup_size(256)
fn logprobs_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * WG;
    if (idx >= p.n * p.v) { return; }
    let row = idx / p.v;
    let j = idx - row * p.v;
    let prob = exp(lpb_logits[idx] - lpb_lse[row]);
    let indicator = select(0.0, 1.0, j == lpb_targets[row]);
    lpb_logits[idx] = lpb_dlogps[row] * (indicator - prob);
}

// logprobs_backward_rows: the same update, laid out by rows: a workgroup of 64 covers 256 columns of one row, each
// invocation 4 of them 64 apart (j = 256 wid.x + 64 k + lid), so the row's lse, target and dlogps are read once per 4
// logits and no invocation divides by V. Same bindings as logprobs_backward.
// grid: (ceil(V / 256), rows folded into (y, z)); row = wid.y + wid.z * nwg.y.
@compute @workgroup_size(64)
fn logprobs_backward_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let row = wid.y + wid.z * nwg.y;
    if (row >= p.n) { return; }
    let base = row * p.v;
    let lse = lpb_lse[row];
    let tgt = lpb_targets[row];
    let g = lpb_dlogps[row];
    let j0 = wid.x * 256u + lid;
    for (var k = 0u; k < 4u; k++) {
        let j = j0 + k * 64u;
        if (j < p.v) {
            let prob = exp(lpb_logits[base + j] - lse);
            let indicator = select(0.0, 1.0, j == tgt);
            lpb_logits[base + j] = g * (indicator - prob);
        }
    }
}

// log_softmax: out[i, j] = logits[i, j] - logsumexp(logits[i, :])
// bindings: 10 logits (N, V) read, 11 out (N, V) write.
// grid: one workgroup of 256 per row, rows folded into (x, y) by grid_1d(N, 1); row = wid.x + wid.y * nwg.x.
@group(0) @binding(10) var<storage, read> lsm_logits: array<f32>;
@group(0) @binding(11) var<storage, read_write> lsm_out: array<f32>;

@compute @workgroup_size(256)
fn log_softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.n) { return; }
    let base = row * p.v;
    var ms = vec2<f32>(-3.4028234e38, 0.0);
    for (var j = lid; j < p.v; j = j + WG) {
        ms = lse_push(ms, lsm_logits[base + j]);
    }
    let lse = row_lse(ms, lid);
    for (var j = lid; j < p.v; j = j + WG) {
        lsm_out[base + j] = lsm_logits[base + j] - lse;
    }
}

// sft_loss: masked mean negative log-likelihood, per group of n consecutive positions (the replicas of a replicated
// model each have their own loss; one group for a lone model):
//   denom = max(sum(mask), 1); loss[g] = -sum(mask * logps) / denom; dlogps[i] = -mask[i] / denom (overwrites),
// sums over group g's positions i in [g n, g n + n).
// Positions with mask == 0 contribute nothing, even if their logp is -inf.
// bindings: 12 logps (G n) read, 13 mask (G n) read, 14 loss (G) write, 15 dlogps (G n) write.
// grid: (G): one workgroup of 256 per group (any n); thread k reduces i = k, k + 256, ... in order, then a fixed tree.
@group(0) @binding(12) var<storage, read> sft_logps: array<f32>;
@group(0) @binding(13) var<storage, read> sft_mask: array<f32>;
@group(0) @binding(14) var<storage, read_write> sft_loss_out: array<f32>;
@group(0) @binding(15) var<storage, read_write> sft_dlogps: array<f32>;

@compute @workgroup_size(256)
fn sft_loss(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let base = wid.x * p.n;
    var s = 0.0;
    var c = 0.0;
    for (var i = lid; i < p.n; i = i + WG) {
        let m = sft_mask[base + i];
        if (m != 0.0) {
            s = s + m * sft_logps[base + i];
            c = c + m;
        }
    }
    red_a[lid] = s;
    red_b[lid] = c;
    workgroupBarrier();
    tree_sum_ab(lid);
    let denom = max(red_b[0], 1.0);
    if (lid == 0u) {
        sft_loss_out[wid.x] = -red_a[0] / denom;
    }
    for (var i = lid; i < p.n; i = i + WG) {
        sft_dlogps[base + i] = -sft_mask[base + i] / denom;
    }
}

// sequence_logps: per sequence s of S, over its T tokens:
//   seq_sum[s] = sum_t mask[s, t] * logps[s, t]; seq_mean[s] = seq_sum[s] / max(sum_t mask[s, t], 1)
// bindings: 16 logps (S, T) read, 17 mask (S, T) read, 18 seq_sum (S) write, 19 seq_mean (S) write.
// grid: one thread per sequence (sums t = 0..T in order), workgroup 256, grid_1d(S, 256).
@group(0) @binding(16) var<storage, read> seq_logps_in: array<f32>;
@group(0) @binding(17) var<storage, read> seq_mask: array<f32>;
@group(0) @binding(18) var<storage, read_write> seq_sum: array<f32>;
@group(0) @binding(19) var<storage, read_write> seq_mean: array<f32>;

@compute @workgroup_size(256)
fn sequence_logps(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let s = gid.x + gid.y * nwg.x * WG;
    if (s >= p.n) { return; }
    let base = s * p.v;
    var total = 0.0;
    var count = 0.0;
    for (var t = 0u; t < p.v; t = t + 1u) {
        let m = seq_mask[base + t];
        if (m != 0.0) {
            total = total + m * seq_logps_in[base + t];
            count = count + m;
        }
    }
    seq_sum[s] = total;
    seq_mean[s] = total / max(count, 1.0);
}

// ---- Small-vocabulary variants (V <= SMALL_V): one invocation per row, sequential over V. A 256-thread workgroup
// per row idles almost every thread when V is the toy's 10 responses, and its barriers dominate on CPU adapters.
// Same math as logprobs_forward / log_softmax (the online logsumexp, sequential over the row).

// logprobs_forward_small: bindings 19 logits (N, V) read, 20 targets (N) u32 read, 21 logps (N) write,
// 22 lse (N) write. grid: grid_1d(N, 64).
@group(0) @binding(19) var<storage, read> lps_logits: array<f32>;
@group(0) @binding(20) var<storage, read> lps_targets: array<u32>;
@group(0) @binding(21) var<storage, read_write> lps_logps: array<f32>;
@group(0) @binding(22) var<storage, read_write> lps_lse: array<f32>;

@compute @workgroup_size(64)
fn logprobs_forward_small(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if (row >= p.n) { return; }
    let base = row * p.v;
    var ms = vec2<f32>(-3.4028234e38, 0.0);
    for (var j = 0u; j < p.v; j++) {
        ms = lse_push(ms, lps_logits[base + j]);
    }
    let lse = ms.x + log(ms.y);
    lps_lse[row] = lse;
    lps_logps[row] = lps_logits[base + lps_targets[row]] - lse;
}

// log_softmax_small: bindings 23 logits (N, V) read, 24 out (N, V) write. grid: grid_1d(N, 64).
@group(0) @binding(23) var<storage, read> lss_logits: array<f32>;
@group(0) @binding(24) var<storage, read_write> lss_out: array<f32>;

@compute @workgroup_size(64)
fn log_softmax_small(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if (row >= p.n) { return; }
    let base = row * p.v;
    var ms = vec2<f32>(-3.4028234e38, 0.0);
    for (var j = 0u; j < p.v; j++) {
        ms = lse_push(ms, lss_logits[base + j]);
    }
    let lse = ms.x + log(ms.y);
    for (var j = 0u; j < p.v; j++) {
        lss_out[base + j] = lss_logits[base + j] - lse;
    }
}
