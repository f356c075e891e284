// LayerNorm op family (GPT-2's, eps 1e-5): the forward, and the backward in two race-free passes.
// out = (x - mean) * rstd * weight + bias over the last dimension C of an (N, C) input; the forward also saves the
// per-row mean and rstd = 1 / sqrt(var + eps) for the backward (llm.c's layernorm_forward / layernorm_backward).
// residual_layernorm_forward also does the residual add before a GPT block's LayerNorm (res = a + b, then LN of res).
// Backward kernels ACCUMULATE into their d-outputs (+=).
//
// Determinism: every output element is written by exactly one invocation and every reduction runs in a fixed order
// (per-thread strided partial sums, then a fixed tree in workgroup memory), so results are identical run to run.
// Row kernels use one workgroup of 256 per row (C up to a few thousand: thread lid loops over channels lid, lid + 256,
// ...); the row is wid.x + wid.y * nwg.x, so N may exceed 65535 (grid from `grid_1d(N, 1)`). Their `_rows` variants
// give each row to one invocation (sequential sums, no workgroup memory, no barriers): on CPU adapters a workgroup's
// barriers cost more than the row's arithmetic. The tuner picks per adapter and shape (`ops::layernorm`).

struct Params {
    n: u32,     // N rows
    c: u32,     // C channels
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 256u;
const EPS: f32 = 1e-5;

// Reduction scratch, 2 x 256 f32 = 2 KiB of workgroup storage.
var<workgroup> red_a: array<f32, 256>;
var<workgroup> red_b: array<f32, 256>;

// Sum red_a[0..256) into red_a[0] with a fixed tree. Call from uniform control flow once every thread has written
// its slot; on return every thread may read red_a[0].
fn reduce_a(lid: u32) {
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            red_a[lid] += red_a[lid + stride];
        }
        workgroupBarrier();
    }
}

// Same as reduce_a, on red_b.
fn reduce_b(lid: u32) {
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            red_b[lid] += red_b[lid + stride];
        }
        workgroupBarrier();
    }
}

// Same as reduce_a, on red_a and red_b together.
fn reduce_ab(lid: u32) {
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            red_a[lid] += red_a[lid + stride];
            red_b[lid] += red_b[lid + stride];
        }
        workgroupBarrier();
    }
}

// layernorm_forward: mean[n] = sum_c x / C; rstd[n] = 1 / sqrt(sum_c (x - mean)^2 / C + eps);
//                    out[n, c] = (x - mean) * rstd * weight[c] + bias[c]   (two-pass mean and variance, as llm.c)
// bindings: 1 inp (N, C) read, 2 weight (C) read, 3 bias (C) read, 4 out (N, C) write, 5 mean (N) write,
//           6 rstd (N) write.
// grid: one workgroup of 256 per row, `grid_1d(N, 1)`.
@group(0) @binding(1) var<storage, read> lnf_inp: array<f32>;
@group(0) @binding(2) var<storage, read> lnf_weight: array<f32>;
@group(0) @binding(3) var<storage, read> lnf_bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> lnf_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> lnf_mean: array<f32>;
@group(0) @binding(6) var<storage, read_write> lnf_rstd: array<f32>;

@compute @workgroup_size(256)
fn layernorm_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.n) { return; } // uniform: the whole workgroup leaves together
    let base = row * p.c;

    var s = 0.0;
    for (var i = lid; i < p.c; i += WG) {
        s += lnf_inp[base + i];
    }
    red_a[lid] = s;
    reduce_a(lid);
    let m = red_a[0] / f32(p.c);

    // The variance goes through red_b: red_a[0] must stay readable until every thread has taken the mean.
    var v = 0.0;
    for (var i = lid; i < p.c; i += WG) {
        let d = lnf_inp[base + i] - m;
        v += d * d;
    }
    red_b[lid] = v;
    reduce_b(lid);
    let r = 1.0 / sqrt(red_b[0] / f32(p.c) + EPS);

    for (var i = lid; i < p.c; i += WG) {
        let norm = (lnf_inp[base + i] - m) * r;
        lnf_out[base + i] = norm * lnf_weight[i] + lnf_bias[i];
    }
    if (lid == 0u) {
        lnf_mean[row] = m;
        lnf_rstd[row] = r;
    }
}

// The `_rows` kernels read and write the (N, C) arrays through vec4 views (bindings 41-54: the same tensors as the
// workgroup kernels' scalar bindings; every binding spans whole vec4s, `Tensor::binding_bytes`). Where C is a multiple
// of 4 a row is C / 4 vec4s, which on lavapipe is a quarter of the per-lane load and store loops of scalar access;
// otherwise element e is x[e / 4][e % 4]. Either way the sums run in channel order, so both give the same bits.
@group(0) @binding(41) var<storage, read> lr_inp: array<vec4<f32>>;
@group(0) @binding(42) var<storage, read> lr_weight: array<vec4<f32>>;
@group(0) @binding(43) var<storage, read> lr_bias: array<vec4<f32>>;
@group(0) @binding(44) var<storage, read_write> lr_out: array<vec4<f32>>;
@group(0) @binding(59) var<storage, read> lr_b: array<vec4<f32>>;
@group(0) @binding(60) var<storage, read_write> lr_res: array<vec4<f32>>;

fn sum4(s: f32, x: vec4<f32>) -> f32 {
    return s + x.x + x.y + x.z + x.w; // left to right: ((s + x.x) + x.y) + ...
}

// layernorm_forward_rows: layernorm_forward with one invocation per row, sums in channel order.
// bindings: 41 inp, 42 weight, 43 bias, 44 out (vec4 views), 5 mean, 6 rstd.
// grid: `grid_1d(N, 64)` workgroups of 64; row = (wid.x + wid.y * nwg.x) * 64 + lid.
@compute @workgroup_size(64)
fn layernorm_forward_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (row >= p.n) { return; }
    let base = row * p.c;
    var s = 0.0;
    var v = 0.0;
    if (p.c % 4u == 0u) {
        let b4 = base / 4u;
        let c4 = p.c / 4u;
        for (var i = 0u; i < c4; i++) { s = sum4(s, lr_inp[b4 + i]); }
        let m = s / f32(p.c);
        for (var i = 0u; i < c4; i++) { let d = lr_inp[b4 + i] - m; v = sum4(v, d * d); }
        let r = 1.0 / sqrt(v / f32(p.c) + EPS);
        for (var i = 0u; i < c4; i++) { lr_out[b4 + i] = (lr_inp[b4 + i] - m) * r * lr_weight[i] + lr_bias[i]; }
        lnf_mean[row] = m;
        lnf_rstd[row] = r;
        return;
    }
    for (var i = 0u; i < p.c; i++) {
        let e = base + i;
        s += lr_inp[e / 4u][e % 4u];
    }
    let m = s / f32(p.c);
    for (var i = 0u; i < p.c; i++) {
        let e = base + i;
        let d = lr_inp[e / 4u][e % 4u] - m;
        v += d * d;
    }
    let r = 1.0 / sqrt(v / f32(p.c) + EPS);
    for (var i = 0u; i < p.c; i++) {
        let e = base + i;
        lr_out[e / 4u][e % 4u] = (lr_inp[e / 4u][e % 4u] - m) * r * lr_weight[i / 4u][i % 4u] + lr_bias[i / 4u][i % 4u];
    }
    lnf_mean[row] = m;
    lnf_rstd[row] = r;
}

// residual_layernorm_forward: the residual add that precedes every LayerNorm of a GPT block, fused into it:
//   res[n, c] = a[n, c] + b[n, c]; then layernorm_forward of res (res written, LN output, mean and rstd saved).
// The same arithmetic in the same order as residual_forward followed by layernorm_forward (bit for bit in each row
// form), in one dispatch and one read of the inputs fewer. Each thread reads back only the res elements it wrote.
// bindings: 1 a (N, C) read, 19 b (N, C) read, 20 res (N, C) write, 2 weight, 3 bias, 4 out, 5 mean, 6 rstd as
// layernorm_forward. grid: one workgroup of 256 per row, `grid_1d(N, 1)`.
@group(0) @binding(19) var<storage, read> rlf_b: array<f32>;
@group(0) @binding(20) var<storage, read_write> rlf_res: array<f32>;

@compute @workgroup_size(256)
fn residual_layernorm_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.n) { return; } // uniform: the whole workgroup leaves together
    let base = row * p.c;

    var s = 0.0;
    for (var i = lid; i < p.c; i += WG) {
        let x = lnf_inp[base + i] + rlf_b[base + i];
        rlf_res[base + i] = x;
        s += x;
    }
    red_a[lid] = s;
    reduce_a(lid);
    let m = red_a[0] / f32(p.c);

    var v = 0.0;
    for (var i = lid; i < p.c; i += WG) {
        let d = rlf_res[base + i] - m;
        v += d * d;
    }
    red_b[lid] = v;
    reduce_b(lid);
    let r = 1.0 / sqrt(red_b[0] / f32(p.c) + EPS);

    for (var i = lid; i < p.c; i += WG) {
        let norm = (rlf_res[base + i] - m) * r;
        lnf_out[base + i] = norm * lnf_weight[i] + lnf_bias[i];
    }
    if (lid == 0u) {
        lnf_mean[row] = m;
        lnf_rstd[row] = r;
    }
}

// residual_layernorm_forward_rows: residual_layernorm_forward with one invocation per row (as layernorm_forward_rows).
// bindings: 41 a, 59 b, 60 res, 42 weight, 43 bias, 44 out (vec4 views), 5 mean, 6 rstd. grid: `grid_1d(N, 64)`
// workgroups of 64.
@compute @workgroup_size(64)
fn residual_layernorm_forward_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (row >= p.n) { return; }
    let base = row * p.c;
    var s = 0.0;
    var v = 0.0;
    if (p.c % 4u == 0u) {
        let b4 = base / 4u;
        let c4 = p.c / 4u;
        for (var i = 0u; i < c4; i++) {
            let x = lr_inp[b4 + i] + lr_b[b4 + i];
            lr_res[b4 + i] = x;
            s = sum4(s, x);
        }
        let m = s / f32(p.c);
        for (var i = 0u; i < c4; i++) { let d = lr_res[b4 + i] - m; v = sum4(v, d * d); }
        let r = 1.0 / sqrt(v / f32(p.c) + EPS);
        for (var i = 0u; i < c4; i++) { lr_out[b4 + i] = (lr_res[b4 + i] - m) * r * lr_weight[i] + lr_bias[i]; }
        lnf_mean[row] = m;
        lnf_rstd[row] = r;
        return;
    }
    for (var i = 0u; i < p.c; i++) {
        let e = base + i;
        let x = lr_inp[e / 4u][e % 4u] + lr_b[e / 4u][e % 4u];
        lr_res[e / 4u][e % 4u] = x;
        s += x;
    }
    let m = s / f32(p.c);
    for (var i = 0u; i < p.c; i++) {
        let e = base + i;
        let d = lr_res[e / 4u][e % 4u] - m;
        v += d * d;
    }
    let r = 1.0 / sqrt(v / f32(p.c) + EPS);
    for (var i = 0u; i < p.c; i++) {
        let e = base + i;
        lr_out[e / 4u][e % 4u] = (lr_res[e / 4u][e % 4u] - m) * r * lr_weight[i / 4u][i % 4u] + lr_bias[i / 4u][i % 4u];
    }
    lnf_mean[row] = m;
    lnf_rstd[row] = r;
}

// layernorm_backward_dinp: per row, with norm = (x - mean) * rstd and dnorm = weight * dout,
//   dinp[n, c] += (dnorm - mean_c(dnorm) - norm * mean_c(dnorm * norm)) * rstd
// bindings: 7 inp (N, C) read, 8 dout (N, C) read, 9 weight (C) read, 10 mean (N) read, 11 rstd (N) read,
//           12 dinp (N, C) read_write.
// grid: one workgroup of 256 per row, `grid_1d(N, 1)`.
@group(0) @binding(7) var<storage, read> lnd_inp: array<f32>;
@group(0) @binding(8) var<storage, read> lnd_dout: array<f32>;
@group(0) @binding(9) var<storage, read> lnd_weight: array<f32>;
@group(0) @binding(10) var<storage, read> lnd_mean: array<f32>;
@group(0) @binding(11) var<storage, read> lnd_rstd: array<f32>;
@group(0) @binding(12) var<storage, read_write> lnd_dinp: array<f32>;

@compute @workgroup_size(256)
fn layernorm_backward_dinp(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.n) { return; } // uniform: the whole workgroup leaves together
    let base = row * p.c;
    let m = lnd_mean[row];
    let r = lnd_rstd[row];

    var dnorm_sum = 0.0;
    var dnorm_norm_sum = 0.0;
    for (var i = lid; i < p.c; i += WG) {
        let norm = (lnd_inp[base + i] - m) * r;
        let dnorm = lnd_weight[i] * lnd_dout[base + i];
        dnorm_sum += dnorm;
        dnorm_norm_sum += dnorm * norm;
    }
    red_a[lid] = dnorm_sum;
    red_b[lid] = dnorm_norm_sum;
    reduce_ab(lid);
    let dnorm_mean = red_a[0] / f32(p.c);
    let dnorm_norm_mean = red_b[0] / f32(p.c);

    for (var i = lid; i < p.c; i += WG) {
        let norm = (lnd_inp[base + i] - m) * r;
        let dnorm = lnd_weight[i] * lnd_dout[base + i];
        lnd_dinp[base + i] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * r;
    }
}

// layernorm_backward_dinp_rows: layernorm_backward_dinp with one invocation per row, sums in channel order.
// bindings: 47 inp, 48 dout, 49 weight, 52 dinp (vec4 views, as the forward's `_rows` kernel), 10 mean, 11 rstd.
// grid: `grid_1d(N, 64)` workgroups of 64, as layernorm_forward_rows.
@group(0) @binding(47) var<storage, read> ldr_inp: array<vec4<f32>>;
@group(0) @binding(48) var<storage, read> ldr_dout: array<vec4<f32>>;
@group(0) @binding(49) var<storage, read> ldr_weight: array<vec4<f32>>;
@group(0) @binding(52) var<storage, read_write> ldr_dinp: array<vec4<f32>>;

@compute @workgroup_size(64)
fn layernorm_backward_dinp_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (row >= p.n) { return; }
    let base = row * p.c;
    let m = lnd_mean[row];
    let r = lnd_rstd[row];
    var dnorm_sum = 0.0;
    var dnorm_norm_sum = 0.0;
    if (p.c % 4u == 0u) {
        let b4 = base / 4u;
        let c4 = p.c / 4u;
        for (var i = 0u; i < c4; i++) {
            let norm = (ldr_inp[b4 + i] - m) * r;
            let dnorm = ldr_weight[i] * ldr_dout[b4 + i];
            dnorm_sum = sum4(dnorm_sum, dnorm);
            dnorm_norm_sum = sum4(dnorm_norm_sum, dnorm * norm);
        }
        let dnorm_mean = dnorm_sum / f32(p.c);
        let dnorm_norm_mean = dnorm_norm_sum / f32(p.c);
        for (var i = 0u; i < c4; i++) {
            let norm = (ldr_inp[b4 + i] - m) * r;
            let dnorm = ldr_weight[i] * ldr_dout[b4 + i];
            ldr_dinp[b4 + i] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * r;
        }
        return;
    }
    for (var i = 0u; i < p.c; i++) {
        let e = base + i;
        let norm = (ldr_inp[e / 4u][e % 4u] - m) * r;
        let dnorm = ldr_weight[i / 4u][i % 4u] * ldr_dout[e / 4u][e % 4u];
        dnorm_sum += dnorm;
        dnorm_norm_sum += dnorm * norm;
    }
    let dnorm_mean = dnorm_sum / f32(p.c);
    let dnorm_norm_mean = dnorm_norm_sum / f32(p.c);
    for (var i = 0u; i < p.c; i++) {
        let e = base + i;
        let norm = (ldr_inp[e / 4u][e % 4u] - m) * r;
        let dnorm = ldr_weight[i / 4u][i % 4u] * ldr_dout[e / 4u][e % 4u];
        ldr_dinp[e / 4u][e % 4u] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * r;
    }
}

// layernorm_backward_params: dweight[c] += sum_n norm[n, c] * dout[n, c]; dbias[c] += sum_n dout[n, c].
// Each channel is owned by one workgroup column: a workgroup is 32 channels x 8 row lanes; lane ly sums rows
// ly, ly + 8, ..., then a fixed tree over the 8 lanes, and lane 0 adds the total into dweight/dbias.
// bindings: 13 inp (N, C) read, 14 dout (N, C) read, 15 mean (N) read, 16 rstd (N) read, 17 dweight (C) read_write,
//           18 dbias (C) read_write.
// grid: `grid_1d(C, 32)` workgroups of (32, 8); channel = (wid.x + wid.y * nwg.x) * 32 + lid.x.
@group(0) @binding(13) var<storage, read> lnp_inp: array<f32>;
@group(0) @binding(14) var<storage, read> lnp_dout: array<f32>;
@group(0) @binding(15) var<storage, read> lnp_mean: array<f32>;
@group(0) @binding(16) var<storage, read> lnp_rstd: array<f32>;
@group(0) @binding(17) var<storage, read_write> lnp_dweight: array<f32>;
@group(0) @binding(18) var<storage, read_write> lnp_dbias: array<f32>;

const PARAM_COLS: u32 = 32u; // channels per workgroup
const PARAM_LANES: u32 = 8u; // row lanes per channel

@compute @workgroup_size(32, 8)
fn layernorm_backward_params(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let col = wid.x + wid.y * nwg.x;
    let ch = col * PARAM_COLS + lid.x;
    let slot = lid.y * PARAM_COLS + lid.x;

    var dw = 0.0;
    var db = 0.0;
    if (ch < p.c) { // no early return: every thread takes part in the barriers below
        for (var row = lid.y; row < p.n; row += PARAM_LANES) {
            let d = lnp_dout[row * p.c + ch];
            let norm = (lnp_inp[row * p.c + ch] - lnp_mean[row]) * lnp_rstd[row];
            dw += norm * d;
            db += d;
        }
    }
    red_a[slot] = dw;
    red_b[slot] = db;
    workgroupBarrier();
    for (var stride = PARAM_LANES / 2u; stride > 0u; stride = stride / 2u) {
        if (lid.y < stride) {
            red_a[slot] += red_a[slot + stride * PARAM_COLS];
            red_b[slot] += red_b[slot + stride * PARAM_COLS];
        }
        workgroupBarrier();
    }
    if (lid.y == 0u && ch < p.c) {
        lnp_dweight[ch] += red_a[lid.x];
        lnp_dbias[ch] += red_b[lid.x];
    }
}

// layernorm_backward_params_cols4: layernorm_backward_params for CPU adapters, without workgroup memory or barriers:
// one invocation per 4 channels keeps the 8 row lanes' partial sums (rows y, y + 8, ... for y = 0..7) as vec4s and
// adds them by the workgroup kernel's tree, so the results are bit for bit its own; inp and dout are read a vec4 (4
// channels of a row) at a time. Requires C to be a multiple of 4 (checked on the host).
// bindings: 55 inp, 56 dout (vec4 views) read, 15 mean, 16 rstd read, 57 dweight, 58 dbias (vec4 views) read_write.
// grid: `grid_1d(C / 4, 8)` workgroups of 8; channel group = (wid.x + wid.y * nwg.x) * 8 + lid.x.
@group(0) @binding(55) var<storage, read> lnp4_inp: array<vec4<f32>>;
@group(0) @binding(56) var<storage, read> lnp4_dout: array<vec4<f32>>;
@group(0) @binding(57) var<storage, read_write> lnp4_dweight: array<vec4<f32>>;
@group(0) @binding(58) var<storage, read_write> lnp4_dbias: array<vec4<f32>>;

// Row `row`'s terms for channels 4 c4 .. 4 c4 + 3: norm * dout (dweight's) and dout (dbias's).
struct Lnp4 { dw: vec4<f32>, db: vec4<f32> }

fn lnp4_row(row: u32, n4: u32, c4: u32) -> Lnp4 {
    let d = lnp4_dout[row * n4 + c4];
    let norm = (lnp4_inp[row * n4 + c4] - lnp_mean[row]) * lnp_rstd[row];
    return Lnp4(norm * d, d);
}

@compute @workgroup_size(8)
fn layernorm_backward_params_cols4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let n4 = p.c / 4u;
    let c4 = (wid.x + wid.y * nwg.x) * 8u + lid;
    if (c4 >= n4) { return; }
    var w0 = vec4<f32>(0.0); var w1 = vec4<f32>(0.0); var w2 = vec4<f32>(0.0); var w3 = vec4<f32>(0.0);
    var w4 = vec4<f32>(0.0); var w5 = vec4<f32>(0.0); var w6 = vec4<f32>(0.0); var w7 = vec4<f32>(0.0);
    var b0 = vec4<f32>(0.0); var b1 = vec4<f32>(0.0); var b2 = vec4<f32>(0.0); var b3 = vec4<f32>(0.0);
    var b4 = vec4<f32>(0.0); var b5 = vec4<f32>(0.0); var b6 = vec4<f32>(0.0); var b7 = vec4<f32>(0.0);
    for (var r = 0u; r < p.n; r += PARAM_LANES) {
        { let x = lnp4_row(r, n4, c4); w0 += x.dw; b0 += x.db; }
        if (r + 1u < p.n) { let x = lnp4_row(r + 1u, n4, c4); w1 += x.dw; b1 += x.db; }
        if (r + 2u < p.n) { let x = lnp4_row(r + 2u, n4, c4); w2 += x.dw; b2 += x.db; }
        if (r + 3u < p.n) { let x = lnp4_row(r + 3u, n4, c4); w3 += x.dw; b3 += x.db; }
        if (r + 4u < p.n) { let x = lnp4_row(r + 4u, n4, c4); w4 += x.dw; b4 += x.db; }
        if (r + 5u < p.n) { let x = lnp4_row(r + 5u, n4, c4); w5 += x.dw; b5 += x.db; }
        if (r + 6u < p.n) { let x = lnp4_row(r + 6u, n4, c4); w6 += x.dw; b6 += x.db; }
        if (r + 7u < p.n) { let x = lnp4_row(r + 7u, n4, c4); w7 += x.dw; b7 += x.db; }
    }
    // layernorm_backward_params's tree over its 8 row lanes: strides 4, 2, 1.
    w0 += w4; w1 += w5; w2 += w6; w3 += w7; b0 += b4; b1 += b5; b2 += b6; b3 += b7;
    w0 += w2; w1 += w3; b0 += b2; b1 += b3;
    w0 += w1; b0 += b1;
    lnp4_dweight[c4] += w0;
    lnp4_dbias[c4] += b0;
}
