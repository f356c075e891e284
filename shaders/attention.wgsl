// Attention op family: causal multi-head self-attention (llm.c's attention_forward / attention_backward), forward and
// backward side by side. Every kernel is a gather: each output element is written by exactly one invocation (or one
// workgroup), so results are deterministic and race-free. The backward ACCUMULATES into dinp (+=); its datt and
// dpreatt are scratch it overwrites.
//
// Layouts: inp (B, T, 3C) = q | k | v per position (q channels [0, C), k [C, 2C), v [2C, 3C)); head h owns channels
// h*HS..(h+1)*HS of each, HS = C / NH. preatt, att, datt, dpreatt (B, NH, T, T); entries t2 > t are written as 0.
//
// Dispatch order. Forward: attention_scores, attention_softmax, attention_values; or, fused, attention_fused alone
// (T <= DECODE_MAX_T; preatt is not written). Backward: attention_datt, attention_softmax_backward, attention_dqkv;
// or, fused, attention_softmax_backward_fused, attention_dqkv (datt is not written). A third form computes the products
// (scores, weighted values, datt, dq, dk, dv) as batched GEMMs over the (sequence, head) pairs (matmul.wgsl, from
// src/ops/attention.rs) around this file's softmax kernels. The tuner picks per adapter.
// Generation with a KV cache: attention_decode (or its _x4 / _rows forms), one dispatch per step (one new position
// per row).
// Element-wise entry points: workgroup 256, 1-D grid folded into (x, y) by `grid_1d`; i = gid.x + gid.y * nwg.x * 256.
// Per-row entry points (softmax, softmax backward): one workgroup of 64 per (b, h, t) row; row = wid.x + wid.y * nwg.x.

struct Params {
    b: u32,       // batch
    t: u32,       // sequence length
    c: u32,       // channels
    nh: u32,      // heads
    hs: u32,      // head size C / NH
    n: u32,       // number of work items of this dispatch (elements or rows)
    scale: f32,   // 1 / sqrt(HS)
    tp: u32,      // attention_cache_fill only: the prefill's positions T_p
}

@group(0) @binding(0) var<uniform> p: Params;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

const ROW_WG: u32 = 64u;
var<workgroup> red: array<f32, 64>;

// Tree reduction of red[0..64) within one workgroup (max if is_max, else sum); every invocation gets the result.
fn reduce_row(lid: u32, is_max: bool) -> f32 {
    for (var s = ROW_WG / 2u; s > 0u; s = s >> 1u) {
        workgroupBarrier();
        if (lid < s) {
            if (is_max) {
                red[lid] = max(red[lid], red[lid + s]);
            } else {
                red[lid] = red[lid] + red[lid + s];
            }
        }
    }
    workgroupBarrier();
    let r = red[0];
    workgroupBarrier();
    return r;
}

// attention_scores: preatt[b, h, t, t2] = q[b, t, h] . k[b, t2, h] * scale for t2 <= t, else 0.
// bindings: 1 inp (B, T, 3C) read, 2 preatt (B, NH, T, T) write. grid: grid_1d(B*NH*T*T, 256).
@group(0) @binding(1) var<storage, read> sc_inp: array<f32>;
@group(0) @binding(2) var<storage, read_write> sc_preatt: array<f32>;

@compute @workgroup_size(256)
fn attention_scores(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let t2 = i % p.t;
    let t = (i / p.t) % p.t;
    let h = (i / (p.t * p.t)) % p.nh;
    let b = i / (p.t * p.t * p.nh);
    var val = 0.0;
    if (t2 <= t) {
        let c3 = 3u * p.c;
        let q = b * p.t * c3 + t * c3 + h * p.hs;
        let k = b * p.t * c3 + t2 * c3 + h * p.hs + p.c;
        for (var j = 0u; j < p.hs; j++) {
            val += sc_inp[q + j] * sc_inp[k + j];
        }
        val *= p.scale;
    }
    sc_preatt[i] = val;
}

// The "_x4" variants below compute 4 neighbouring outputs per invocation (4 key positions t2, or 4 channels), so one
// load of the shared operand feeds 4 multiply-adds: on CPU adapters, where every load in a loop is a gather, that
// halves the loads. The tuner picks per adapter and shape (`ops::attention`); both forms give the same sums in the
// same order.
//
// The cell of invocation i of an _x4 scores or datt kernel: row (b, h, t) of a (B, NH, T, T) matrix and its columns
// t20 .. t20 + 3; out = the index of column t20.
struct X4Cell {
    t20: u32,
    t: u32,
    h: u32,
    b: u32,
    out: u32,
}

fn x4_cell(i: u32) -> X4Cell {
    let t4 = (p.t + 3u) / 4u;
    let row = i / t4; // (b, h, t)
    let t20 = (i % t4) * 4u;
    return X4Cell(t20, row % p.t, (row / p.t) % p.nh, row / (p.t * p.nh), row * p.t + t20);
}

// A cell's 4 values as columns t20 .. t20 + 3 (0 in the future, t2 > t; columns past T are not written).
fn store_preatt_x4(c: X4Cell, v0: f32, v1: f32, v2: f32, v3: f32) {
    sc_preatt[c.out] = select(0.0, v0, c.t20 <= c.t);
    if (c.t20 + 1u < p.t) { sc_preatt[c.out + 1u] = select(0.0, v1, c.t20 + 1u <= c.t); }
    if (c.t20 + 2u < p.t) { sc_preatt[c.out + 2u] = select(0.0, v2, c.t20 + 2u <= c.t); }
    if (c.t20 + 3u < p.t) { sc_preatt[c.out + 3u] = select(0.0, v3, c.t20 + 3u <= c.t); }
}

// attention_scores_x4: preatt[b, h, t, t2 .. t2 + 3] as attention_scores. One invocation per (b, h, t, t2 / 4).
// bindings: as attention_scores. grid: grid_1d(B*NH*T*ceil(T/4), 256); p.n = that count.
@compute @workgroup_size(256)
fn attention_scores_x4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let cell = x4_cell(i);
    let t20 = cell.t20;
    let t = cell.t;
    let h = cell.h;
    let b = cell.b;
    var v0 = 0.0;
    var v1 = 0.0;
    var v2 = 0.0;
    var v3 = 0.0;
    if (t20 <= t) {
        let c3 = 3u * p.c;
        let q = b * p.t * c3 + t * c3 + h * p.hs;
        let kb = b * p.t * c3 + h * p.hs + p.c;
        // Key rows past t are clamped to t (computed, then written as 0).
        let k0 = kb + t20 * c3;
        let k1 = kb + min(t20 + 1u, t) * c3;
        let k2 = kb + min(t20 + 2u, t) * c3;
        let k3 = kb + min(t20 + 3u, t) * c3;
        for (var j = 0u; j < p.hs; j++) {
            let x = sc_inp[q + j];
            v0 += x * sc_inp[k0 + j];
            v1 += x * sc_inp[k1 + j];
            v2 += x * sc_inp[k2 + j];
            v3 += x * sc_inp[k3 + j];
        }
    }
    store_preatt_x4(cell, v0 * p.scale, v1 * p.scale, v2 * p.scale, v3 * p.scale);
}

// attention_scores_x4v: attention_scores_x4 with q and k as vec4s (requires HS % 4 == 0): a quarter of the load
// instructions, the same products summed in the same order (j ascending), so the same results.
// bindings: 42 inp (B, T, 3C/4) vec4 read, 2 preatt write. grid: as attention_scores_x4.
@group(0) @binding(42) var<storage, read> sc4_inp: array<vec4<f32>>;

// v + the dot product of x and k summed in j order (x.x k.x first), as the scalar loops do.
fn dot_in_order(v: f32, x: vec4<f32>, k: vec4<f32>) -> f32 {
    return v + x.x * k.x + x.y * k.y + x.z * k.z + x.w * k.w;
}

@compute @workgroup_size(256)
fn attention_scores_x4v(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let cell = x4_cell(i);
    let t20 = cell.t20;
    let t = cell.t;
    let h = cell.h;
    let b = cell.b;
    var v0 = 0.0;
    var v1 = 0.0;
    var v2 = 0.0;
    var v3 = 0.0;
    if (t20 <= t) {
        let c34 = 3u * p.c / 4u;
        let hs4 = p.hs / 4u;
        let q = b * p.t * c34 + t * c34 + h * hs4;
        let kb = b * p.t * c34 + h * hs4 + p.c / 4u;
        let k0 = kb + t20 * c34;
        let k1 = kb + min(t20 + 1u, t) * c34;
        let k2 = kb + min(t20 + 2u, t) * c34;
        let k3 = kb + min(t20 + 3u, t) * c34;
        for (var j = 0u; j < hs4; j++) {
            let x = sc4_inp[q + j];
            v0 = dot_in_order(v0, x, sc4_inp[k0 + j]);
            v1 = dot_in_order(v1, x, sc4_inp[k1 + j]);
            v2 = dot_in_order(v2, x, sc4_inp[k2 + j]);
            v3 = dot_in_order(v3, x, sc4_inp[k3 + j]);
        }
    }
    store_preatt_x4(cell, v0 * p.scale, v1 * p.scale, v2 * p.scale, v3 * p.scale);
}

// attention_softmax: att[row, t2] = exp(preatt[row, t2] - max) / sum over t2 <= t, else 0; row = (b, h, t).
// bindings: 3 preatt (B, NH, T, T) read, 4 att (B, NH, T, T) write. grid: grid_1d(B*NH*T, 1), workgroup 64 per row.
@group(0) @binding(3) var<storage, read> sm_preatt: array<f32>;
@group(0) @binding(4) var<storage, read_write> sm_att: array<f32>;

@compute @workgroup_size(64)
fn attention_softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.n) { return; } // uniform per workgroup, so the barriers below stay uniform
    let t = r % p.t;
    let row = r * p.t;
    var m = sm_preatt[row];
    for (var t2 = lid; t2 <= t; t2 += ROW_WG) {
        m = max(m, sm_preatt[row + t2]);
    }
    red[lid] = m;
    let maxval = reduce_row(lid, true);
    var s = 0.0;
    for (var t2 = lid; t2 <= t; t2 += ROW_WG) {
        s += exp(sm_preatt[row + t2] - maxval);
    }
    red[lid] = s;
    let expsum_inv = 1.0 / reduce_row(lid, false);
    for (var t2 = lid; t2 < p.t; t2 += ROW_WG) {
        var a = 0.0;
        if (t2 <= t) {
            a = exp(sm_preatt[row + t2] - maxval) * expsum_inv;
        }
        sm_att[row + t2] = a;
    }
}

// attention_softmax_rows: attention_softmax with one invocation per row (sequential max and sum, no barriers): for
// CPU adapters, where a workgroup's barriers cost more than a row's arithmetic. The tuner picks per adapter and shape.
// It reads and writes through vec4 views (every binding spans whole vec4s): where T is a multiple of 4, a row is T / 4
// vec4s (on lavapipe a quarter of the per-lane loads and stores); otherwise element e is x[e / 4][e % 4]. The sum runs
// over t2 = 0..t in order either way, so both give the same bits.
// bindings: 51 preatt, 52 att (vec4 views of attention_softmax's). grid: grid_1d(B*NH*T, 64), workgroup 64;
// row = (wid.x + wid.y * nwg.x) * 64 + lid.
@group(0) @binding(51) var<storage, read> smr_preatt: array<vec4<f32>>;
@group(0) @binding(52) var<storage, read_write> smr_att: array<vec4<f32>>;

@compute @workgroup_size(64)
fn attention_softmax_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                          @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (r >= p.n) { return; }
    let t = r % p.t;
    let row = r * p.t;
    if (p.t % 4u == 0u) {
        let r4 = row / 4u;
        // vec4s wholly inside 0..=t; the next one (if t + 1 is not a multiple of 4) is partial
        let full = (t + 1u) / 4u;
        var m = smr_preatt[r4].x;
        for (var g = 0u; g <= t / 4u; g++) {
            let x = smr_preatt[r4 + g];
            let t0 = 4u * g;
            m = max(m, x.x);
            if (t0 + 1u <= t) { m = max(m, x.y); }
            if (t0 + 2u <= t) { m = max(m, x.z); }
            if (t0 + 3u <= t) { m = max(m, x.w); }
        }
        var s = 0.0;
        for (var g = 0u; g < full; g++) {
            let e = exp(smr_preatt[r4 + g] - m);
            s += e.x; s += e.y; s += e.z; s += e.w;
        }
        if (4u * full <= t) {
            let e = exp(smr_preatt[r4 + full] - m);
            let t0 = 4u * full;
            s += e.x;
            if (t0 + 1u <= t) { s += e.y; }
            if (t0 + 2u <= t) { s += e.z; }
        }
        let expsum_inv = 1.0 / s;
        for (var g = 0u; g < p.t / 4u; g++) {
            let t0 = 4u * g;
            let a = exp(smr_preatt[r4 + g] - m) * expsum_inv;
            let keep = vec4<u32>(t0, t0 + 1u, t0 + 2u, t0 + 3u) <= vec4<u32>(t);
            smr_att[r4 + g] = select(vec4<f32>(0.0), a, keep);
        }
        return;
    }
    var m = smr_preatt[row / 4u][row % 4u];
    for (var t2 = 1u; t2 <= t; t2++) {
        let e = row + t2;
        m = max(m, smr_preatt[e / 4u][e % 4u]);
    }
    var s = 0.0;
    for (var t2 = 0u; t2 <= t; t2++) {
        let e = row + t2;
        s += exp(smr_preatt[e / 4u][e % 4u] - m);
    }
    let expsum_inv = 1.0 / s;
    for (var t2 = 0u; t2 < p.t; t2++) {
        let e = row + t2;
        var a = 0.0;
        if (t2 <= t) {
            a = exp(smr_preatt[e / 4u][e % 4u] - m) * expsum_inv;
        }
        smr_att[e / 4u][e % 4u] = a;
    }
}

// attention_values: out[b, t, h*HS + j] = sum over t2 <= t of att[b, h, t, t2] * v[b, t2, h*HS + j].
// bindings: 5 inp (B, T, 3C) read, 6 att (B, NH, T, T) read, 7 out (B, T, C) write. grid: grid_1d(B*T*C, 256).
@group(0) @binding(5) var<storage, read> va_inp: array<f32>;
@group(0) @binding(6) var<storage, read> va_att: array<f32>;
@group(0) @binding(7) var<storage, read_write> va_out: array<f32>;

@compute @workgroup_size(256)
fn attention_values(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let ch = i % p.c;
    let t = (i / p.c) % p.t;
    let b = i / (p.c * p.t);
    let h = ch / p.hs;
    let c3 = 3u * p.c;
    let row = b * p.nh * p.t * p.t + h * p.t * p.t + t * p.t;
    var acc = 0.0;
    for (var t2 = 0u; t2 <= t; t2++) {
        acc += va_att[row + t2] * va_inp[b * p.t * c3 + t2 * c3 + 2u * p.c + ch];
    }
    va_out[i] = acc;
}

// attention_values_x4: attention_values for channels ch .. ch + 3 (of one head: requires HS % 4 == 0), v and out as
// vec4s; the same arithmetic per channel in the same order. One invocation per (b, t, ch / 4).
// bindings: 40 inp (B, T, 3C/4) vec4 read, 6 att read, 41 out (B, T, C/4) vec4 write. grid: grid_1d(B*T*C/4, 256);
// p.n = that count.
@group(0) @binding(40) var<storage, read> va4_inp: array<vec4<f32>>;
@group(0) @binding(41) var<storage, read_write> va4_out: array<vec4<f32>>;

@compute @workgroup_size(256)
fn attention_values_x4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let c4 = p.c / 4u;
    let ch4 = i % c4;
    let t = (i / c4) % p.t;
    let b = i / (c4 * p.t);
    let h = (ch4 * 4u) / p.hs;
    let c34 = 3u * c4;
    let row = b * p.nh * p.t * p.t + h * p.t * p.t + t * p.t;
    let vb = b * p.t * c34 + 2u * c4 + ch4;
    var acc = vec4<f32>(0.0);
    for (var t2 = 0u; t2 <= t; t2++) {
        acc += va_att[row + t2] * va4_inp[vb + t2 * c34];
    }
    va4_out[i] = acc;
}

// attention_datt: datt[b, h, t, t2] = dout[b, t, h] . v[b, t2, h] for t2 <= t, else 0 (overwrites).
// bindings: 8 inp (B, T, 3C) read, 9 dout (B, T, C) read, 10 datt (B, NH, T, T) write. grid: grid_1d(B*NH*T*T, 256).
@group(0) @binding(8) var<storage, read> da_inp: array<f32>;
@group(0) @binding(9) var<storage, read> da_dout: array<f32>;
@group(0) @binding(10) var<storage, read_write> da_datt: array<f32>;

@compute @workgroup_size(256)
fn attention_datt(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let t2 = i % p.t;
    let t = (i / p.t) % p.t;
    let h = (i / (p.t * p.t)) % p.nh;
    let b = i / (p.t * p.t * p.nh);
    var val = 0.0;
    if (t2 <= t) {
        let c3 = 3u * p.c;
        let o = b * p.t * p.c + t * p.c + h * p.hs;
        let v = b * p.t * c3 + t2 * c3 + h * p.hs + 2u * p.c;
        for (var j = 0u; j < p.hs; j++) {
            val += da_dout[o + j] * da_inp[v + j];
        }
    }
    da_datt[i] = val;
}

// store_preatt_x4 for datt.
fn store_datt_x4(c: X4Cell, v0: f32, v1: f32, v2: f32, v3: f32) {
    da_datt[c.out] = select(0.0, v0, c.t20 <= c.t);
    if (c.t20 + 1u < p.t) { da_datt[c.out + 1u] = select(0.0, v1, c.t20 + 1u <= c.t); }
    if (c.t20 + 2u < p.t) { da_datt[c.out + 2u] = select(0.0, v2, c.t20 + 2u <= c.t); }
    if (c.t20 + 3u < p.t) { da_datt[c.out + 3u] = select(0.0, v3, c.t20 + 3u <= c.t); }
}

// attention_datt_x4: datt[b, h, t, t2 .. t2 + 3] as attention_datt (see attention_scores_x4).
// bindings: as attention_datt. grid: grid_1d(B*NH*T*ceil(T/4), 256); p.n = that count.
@compute @workgroup_size(256)
fn attention_datt_x4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let cell = x4_cell(i);
    let t20 = cell.t20;
    let t = cell.t;
    let h = cell.h;
    let b = cell.b;
    var v0 = 0.0;
    var v1 = 0.0;
    var v2 = 0.0;
    var v3 = 0.0;
    if (t20 <= t) {
        let c3 = 3u * p.c;
        let o = b * p.t * p.c + t * p.c + h * p.hs;
        let vb = b * p.t * c3 + h * p.hs + 2u * p.c;
        let k0 = vb + t20 * c3;
        let k1 = vb + min(t20 + 1u, t) * c3;
        let k2 = vb + min(t20 + 2u, t) * c3;
        let k3 = vb + min(t20 + 3u, t) * c3;
        for (var j = 0u; j < p.hs; j++) {
            let x = da_dout[o + j];
            v0 += x * da_inp[k0 + j];
            v1 += x * da_inp[k1 + j];
            v2 += x * da_inp[k2 + j];
            v3 += x * da_inp[k3 + j];
        }
    }
    store_datt_x4(cell, v0, v1, v2, v3);
}

// attention_datt_x4v: attention_datt_x4 with dout and v as vec4s (requires HS % 4 == 0), summed in the same order.
// bindings: 43 inp (B, T, 3C/4) vec4 read, 44 dout (B, T, C/4) vec4 read, 10 datt write. grid: as attention_datt_x4.
@group(0) @binding(43) var<storage, read> da4_inp: array<vec4<f32>>;
@group(0) @binding(44) var<storage, read> da4_dout: array<vec4<f32>>;

@compute @workgroup_size(256)
fn attention_datt_x4v(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let cell = x4_cell(i);
    let t20 = cell.t20;
    let t = cell.t;
    let h = cell.h;
    let b = cell.b;
    var v0 = 0.0;
    var v1 = 0.0;
    var v2 = 0.0;
    var v3 = 0.0;
    if (t20 <= t) {
        let c4 = p.c / 4u;
        let c34 = 3u * c4;
        let hs4 = p.hs / 4u;
        let o = (b * p.t + t) * c4 + h * hs4;
        let vb = b * p.t * c34 + h * hs4 + 2u * c4;
        let k0 = vb + t20 * c34;
        let k1 = vb + min(t20 + 1u, t) * c34;
        let k2 = vb + min(t20 + 2u, t) * c34;
        let k3 = vb + min(t20 + 3u, t) * c34;
        for (var j = 0u; j < hs4; j++) {
            let x = da4_dout[o + j];
            v0 = dot_in_order(v0, x, da4_inp[k0 + j]);
            v1 = dot_in_order(v1, x, da4_inp[k1 + j]);
            v2 = dot_in_order(v2, x, da4_inp[k2 + j]);
            v3 = dot_in_order(v3, x, da4_inp[k3 + j]);
        }
    }
    store_datt_x4(cell, v0, v1, v2, v3);
}

// attention_softmax_backward: dpreatt[row, t2] = att[row, t2] * (datt[row, t2] - sum_j att[row, j] datt[row, j])
// for t2 <= t, else 0 (overwrites); row = (b, h, t).
// bindings: 11 att (B, NH, T, T) read, 12 datt (B, NH, T, T) read, 13 dpreatt (B, NH, T, T) write.
// grid: grid_1d(B*NH*T, 1), workgroup 64 per row.
@group(0) @binding(11) var<storage, read> sb_att: array<f32>;
@group(0) @binding(12) var<storage, read> sb_datt: array<f32>;
@group(0) @binding(13) var<storage, read_write> sb_dpreatt: array<f32>;

@compute @workgroup_size(64)
fn attention_softmax_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                              @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.n) { return; } // uniform per workgroup
    let t = r % p.t;
    let row = r * p.t;
    var s = 0.0;
    for (var t2 = lid; t2 <= t; t2 += ROW_WG) {
        s += sb_att[row + t2] * sb_datt[row + t2];
    }
    red[lid] = s;
    let dot = reduce_row(lid, false);
    for (var t2 = lid; t2 < p.t; t2 += ROW_WG) {
        var d = 0.0;
        if (t2 <= t) {
            d = sb_att[row + t2] * (sb_datt[row + t2] - dot);
        }
        sb_dpreatt[row + t2] = d;
    }
}

// attention_softmax_backward_rows: attention_softmax_backward with one invocation per row (see
// attention_softmax_rows, whose vec4 views and order of additions it shares).
// bindings: 53 att, 54 datt, 55 dpreatt (vec4 views of attention_softmax_backward's). grid: grid_1d(B*NH*T, 64),
// workgroup 64.
@group(0) @binding(53) var<storage, read> sbr_att: array<vec4<f32>>;
@group(0) @binding(54) var<storage, read> sbr_datt: array<vec4<f32>>;
@group(0) @binding(55) var<storage, read_write> sbr_dpreatt: array<vec4<f32>>;

@compute @workgroup_size(64)
fn attention_softmax_backward_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (r >= p.n) { return; }
    let t = r % p.t;
    let row = r * p.t;
    if (p.t % 4u == 0u) {
        let r4 = row / 4u;
        let full = (t + 1u) / 4u;
        var s = 0.0;
        for (var g = 0u; g < full; g++) {
            let x = sbr_att[r4 + g] * sbr_datt[r4 + g];
            s += x.x; s += x.y; s += x.z; s += x.w;
        }
        if (4u * full <= t) {
            let x = sbr_att[r4 + full] * sbr_datt[r4 + full];
            let t0 = 4u * full;
            s += x.x;
            if (t0 + 1u <= t) { s += x.y; }
            if (t0 + 2u <= t) { s += x.z; }
        }
        for (var g = 0u; g < p.t / 4u; g++) {
            let t0 = 4u * g;
            let d = sbr_att[r4 + g] * (sbr_datt[r4 + g] - s);
            let keep = vec4<u32>(t0, t0 + 1u, t0 + 2u, t0 + 3u) <= vec4<u32>(t);
            sbr_dpreatt[r4 + g] = select(vec4<f32>(0.0), d, keep);
        }
        return;
    }
    var s = 0.0;
    for (var t2 = 0u; t2 <= t; t2++) {
        let e = row + t2;
        s += sbr_att[e / 4u][e % 4u] * sbr_datt[e / 4u][e % 4u];
    }
    for (var t2 = 0u; t2 < p.t; t2++) {
        let e = row + t2;
        var d = 0.0;
        if (t2 <= t) {
            d = sbr_att[e / 4u][e % 4u] * (sbr_datt[e / 4u][e % 4u] - s);
        }
        sbr_dpreatt[e / 4u][e % 4u] = d;
    }
}

// attention_dqkv: one invocation per (b, t, h, j) gathers and accumulates the three gradients of that position:
//   dq[b, t]  += scale * sum over t2 <= t of dpreatt[b, h, t, t2] * k[b, t2]
//   dk[b, t]  += scale * sum over t1 >= t of dpreatt[b, h, t1, t] * q[b, t1]
//   dv[b, t]  +=         sum over t1 >= t of att[b, h, t1, t] * dout[b, t1]
// bindings: 14 inp (B, T, 3C) read, 15 att (B, NH, T, T) read, 16 dpreatt (B, NH, T, T) read, 17 dout (B, T, C) read,
// 18 dinp (B, T, 3C) read_write. grid: grid_1d(B*T*C, 256).
@group(0) @binding(14) var<storage, read> dq_inp: array<f32>;
@group(0) @binding(15) var<storage, read> dq_att: array<f32>;
@group(0) @binding(16) var<storage, read> dq_dpreatt: array<f32>;
@group(0) @binding(17) var<storage, read> dq_dout: array<f32>;
@group(0) @binding(18) var<storage, read_write> dq_dinp: array<f32>;

@compute @workgroup_size(256)
fn attention_dqkv(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let ch = i % p.c;
    let t = (i / p.c) % p.t;
    let b = i / (p.c * p.t);
    let h = ch / p.hs;
    let c3 = 3u * p.c;
    let head = b * p.nh * p.t * p.t + h * p.t * p.t;
    var dq = 0.0;
    for (var t2 = 0u; t2 <= t; t2++) {
        dq += dq_dpreatt[head + t * p.t + t2] * dq_inp[b * p.t * c3 + t2 * c3 + p.c + ch];
    }
    var dk = 0.0;
    var dv = 0.0;
    for (var t1 = t; t1 < p.t; t1++) {
        dk += dq_dpreatt[head + t1 * p.t + t] * dq_inp[b * p.t * c3 + t1 * c3 + ch];
        dv += dq_att[head + t1 * p.t + t] * dq_dout[b * p.t * p.c + t1 * p.c + ch];
    }
    let d = b * p.t * c3 + t * c3 + ch;
    dq_dinp[d] += dq * p.scale;
    dq_dinp[d + p.c] += dk * p.scale;
    dq_dinp[d + 2u * p.c] += dv;
}

// attention_dqkv_x4: attention_dqkv for channels ch .. ch + 3 of one head (requires HS % 4 == 0): the dpreatt and att
// loads are shared by the 4 channels, and q, k, v, dout and dinp move as vec4s (one load instead of four gathers on CPU
// adapters); the arithmetic per channel is attention_dqkv's, in the same order. One invocation per (b, t, ch / 4).
// bindings: 37 inp (B, T, 3C/4) vec4 read, 15 att read, 16 dpreatt read, 38 dout (B, T, C/4) vec4 read,
// 39 dinp (B, T, 3C/4) vec4 read_write. grid: grid_1d(B*T*C/4, 256); p.n = that count.
@group(0) @binding(37) var<storage, read> dq4_inp: array<vec4<f32>>;
@group(0) @binding(38) var<storage, read> dq4_dout: array<vec4<f32>>;
@group(0) @binding(39) var<storage, read_write> dq4_dinp: array<vec4<f32>>;

@compute @workgroup_size(256)
fn attention_dqkv_x4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let c4 = p.c / 4u;
    let ch4 = i % c4;
    let t = (i / c4) % p.t;
    let b = i / (c4 * p.t);
    let h = (ch4 * 4u) / p.hs;
    let c34 = 3u * c4;
    let head = b * p.nh * p.t * p.t + h * p.t * p.t;
    let base = b * p.t * c34; // vec4 units
    var dq = vec4<f32>(0.0);
    for (var t2 = 0u; t2 <= t; t2++) {
        dq += dq_dpreatt[head + t * p.t + t2] * dq4_inp[base + t2 * c34 + c4 + ch4];
    }
    var dk = vec4<f32>(0.0);
    var dv = vec4<f32>(0.0);
    for (var t1 = t; t1 < p.t; t1++) {
        let w = dq_dpreatt[head + t1 * p.t + t];
        let a = dq_att[head + t1 * p.t + t];
        dk += w * dq4_inp[base + t1 * c34 + ch4];
        dv += a * dq4_dout[(b * p.t + t1) * c4 + ch4];
    }
    let d = base + t * c34 + ch4;
    dq4_dinp[d] += dq * p.scale;
    dq4_dinp[d + c4] += dk * p.scale;
    dq4_dinp[d + 2u * c4] += dv;
}

// attention_decode: one new position per row with a KV cache (generation, `model::Decoder`). Row b's query, key and
// value at its newest position pos_b (`encoder_decode` wrote pos) are this step's qkv (B, 3C), computed from that one
// token; the keys and values of positions < pos_b are in cache (B, T, 3C), the qkv activation of the prefill's forward
// and of the earlier decode steps. For head h:
//   out[b, h*HS + j] = sum over t2 <= pos_b of softmax_t2(q . k_t2 * scale) * v_t2[j]
// (the same arithmetic, in the same order, as attention_softmax + attention_values at row (b, h, pos_b)); then the new
// key and value are written into the cache at pos_b for the steps after this one (the q slot there is left as it is).
// No invocation reads what another writes: the scores read cache positions < pos_b only.
// bindings: 19 qkv (B, 3C) read, 20 cache (B, T, 3C) read_write, 21 out (B, C) write, 22 pos (B) u32 read (< T).
// grid: one workgroup of 64 per (b, h): grid_1d(B * NH, 1); p.n = B * NH. T <= DECODE_MAX_T (checked by the host).
const DECODE_MAX_T: u32 = 2048u;
var<workgroup> dec_w: array<f32, DECODE_MAX_T>; // scores, then exp(score - max)
// The softmax of a decode step's scores in dec_w[0..=pos] (each lane's own entries; m = the max of them): replaces
// them by exp(score - max) and returns 1 / their sum. Called by every lane of the workgroup (it has barriers, which
// also publish dec_w to every lane).
fn decode_softmax(lid: u32, pos: u32, m: f32) -> f32 {
    red[lid] = m;
    let maxval = reduce_row(lid, true);
    var sum = 0.0;
    for (var t2 = lid; t2 <= pos; t2 += ROW_WG) {
        let e = exp(dec_w[t2] - maxval);
        dec_w[t2] = e;
        sum += e;
    }
    red[lid] = sum;
    return 1.0 / reduce_row(lid, false);
}

@group(0) @binding(19) var<storage, read> dec_qkv: array<f32>;
@group(0) @binding(20) var<storage, read_write> dec_cache: array<f32>;
@group(0) @binding(21) var<storage, read_write> dec_out: array<f32>;
@group(0) @binding(22) var<storage, read> dec_pos: array<u32>;

@compute @workgroup_size(64)
fn attention_decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.n) { return; } // uniform per workgroup, so the barriers below stay uniform
    let b = r / p.nh;
    let h = r % p.nh;
    let c3 = 3u * p.c;
    let pos = min(dec_pos[b], min(p.t, DECODE_MAX_T) - 1u);
    let q = b * c3 + h * p.hs;       // this step's q, k, v at q, q + C, q + 2C
    let kv = b * p.t * c3 + h * p.hs; // cache row b, head h: position t2's k at kv + t2 * 3C + C
    var m = -3.0e38;
    for (var t2 = lid; t2 <= pos; t2 += ROW_WG) {
        var s = 0.0;
        if (t2 == pos) {
            for (var j = 0u; j < p.hs; j++) {
                s += dec_qkv[q + j] * dec_qkv[q + p.c + j];
            }
        } else {
            let k = kv + t2 * c3 + p.c;
            for (var j = 0u; j < p.hs; j++) {
                s += dec_qkv[q + j] * dec_cache[k + j];
            }
        }
        s *= p.scale;
        dec_w[t2] = s;
        m = max(m, s);
    }
    let expsum_inv = decode_softmax(lid, pos, m);
    for (var j = lid; j < p.hs; j += ROW_WG) {
        var acc = 0.0;
        for (var t2 = 0u; t2 < pos; t2++) {
            acc += dec_w[t2] * expsum_inv * dec_cache[kv + t2 * c3 + 2u * p.c + j];
        }
        acc += dec_w[pos] * expsum_inv * dec_qkv[q + 2u * p.c + j];
        dec_out[b * p.c + h * p.hs + j] = acc;
        let at = kv + pos * c3 + j;
        dec_cache[at + p.c] = dec_qkv[q + p.c + j];
        dec_cache[at + 2u * p.c] = dec_qkv[q + 2u * p.c + j];
    }
}

// attention_decode_x4: attention_decode with vec4 loads and stores (requires HS % 4 == 0): a quarter of the load
// instructions, which CPU adapters need (each load is a per-lane gather there). Same arithmetic but for the order of
// the sum inside each 4-channel dot product. The tuner picks per adapter and shape (`ops::attention`).
// bindings: 23 qkv (B, 3C/4) vec4 read, 24 cache (B, T, 3C/4) vec4 read_write, 25 out (B, C/4) vec4 write,
//           22 pos (B) u32 read. grid: as attention_decode.
@group(0) @binding(23) var<storage, read> dec4_qkv: array<vec4<f32>>;
@group(0) @binding(24) var<storage, read_write> dec4_cache: array<vec4<f32>>;
@group(0) @binding(25) var<storage, read_write> dec4_out: array<vec4<f32>>;

@compute @workgroup_size(64)
fn attention_decode_x4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                       @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.n) { return; } // uniform per workgroup, so the barriers below stay uniform
    let b = r / p.nh;
    let h = r % p.nh;
    let c4 = p.c / 4u;
    let hs4 = p.hs / 4u;
    let c34 = 3u * c4;
    let pos = min(dec_pos[b], min(p.t, DECODE_MAX_T) - 1u);
    let q = b * c34 + h * hs4;        // this step's q, k, v at q, q + C/4, q + C/2 (vec4 units)
    let kv = b * p.t * c34 + h * hs4; // cache row b, head h
    var m = -3.0e38;
    for (var t2 = lid; t2 <= pos; t2 += ROW_WG) {
        var s = 0.0;
        if (t2 == pos) {
            for (var j = 0u; j < hs4; j++) {
                s += dot(dec4_qkv[q + j], dec4_qkv[q + c4 + j]);
            }
        } else {
            let k = kv + t2 * c34 + c4;
            for (var j = 0u; j < hs4; j++) {
                s += dot(dec4_qkv[q + j], dec4_cache[k + j]);
            }
        }
        s *= p.scale;
        dec_w[t2] = s;
        m = max(m, s);
    }
    let expsum_inv = decode_softmax(lid, pos, m);
    for (var j = lid; j < hs4; j += ROW_WG) {
        var acc = vec4<f32>(0.0);
        for (var t2 = 0u; t2 < pos; t2++) {
            acc += dec_w[t2] * expsum_inv * dec4_cache[kv + t2 * c34 + 2u * c4 + j];
        }
        acc += dec_w[pos] * expsum_inv * dec4_qkv[q + 2u * c4 + j];
        dec4_out[b * c4 + h * hs4 + j] = acc;
        decode4_keep(kv + pos * c34 + j, q + j, c4);
    }
}

// The vec4 decode forms' last write: this step's key and value (at qkv + C/4, + C/2 from q_j) into the cache at
// `at` + C/4, + C/2 (the q slot stays as it is).
fn decode4_keep(at: u32, q_j: u32, c4: u32) {
    dec4_cache[at + c4] = dec4_qkv[q_j + c4];
    dec4_cache[at + 2u * c4] = dec4_qkv[q_j + 2u * c4];
}

// ---------------------------------------------------------------------------------------------------------------
// The fused forms (chosen per adapter and shape by the tuner, `ops::attention`): fewer dispatches and no (B, NH, T, T)
// scratch traffic, for T <= DECODE_MAX_T (a row's scores live in workgroup memory, dec_w).
//
// attention_fused: attention_scores + attention_softmax + attention_values in one dispatch, one workgroup of 64 per
// (b, h, t) row: attention_decode's arithmetic at every position, with the keys and values read from inp itself. The
// scores stay in workgroup memory; att is written (the backward needs it); preatt is not written.
// bindings: 26 inp (B, T, 3C) read, 27 att (B, NH, T, T) write, 28 out (B, T, C) write.
// grid: grid_1d(B*NH*T, 1); p.n = B*NH*T; row r = (b, h, t) as att's rows.
@group(0) @binding(26) var<storage, read> fu_inp: array<f32>;
@group(0) @binding(27) var<storage, read_write> fu_att: array<f32>;
@group(0) @binding(28) var<storage, read_write> fu_out: array<f32>;

// Writes att's row r (t2 <= t: dec_w[t2] * expsum_inv, the rest 0), lanes striding over t2.
fn fused_store_att(lid: u32, r: u32, t: u32, expsum_inv: f32) {
    let row = r * p.t;
    for (var t2 = lid; t2 < p.t; t2 += ROW_WG) {
        var a = 0.0;
        if (t2 <= t) {
            a = dec_w[t2] * expsum_inv;
        }
        fu_att[row + t2] = a;
    }
}

@compute @workgroup_size(64)
fn attention_fused(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.n) { return; } // uniform per workgroup, so the barriers below stay uniform
    let t = r % p.t;
    let h = (r / p.t) % p.nh;
    let b = r / (p.t * p.nh);
    let c3 = 3u * p.c;
    let base = b * p.t * c3 + h * p.hs; // position t2's q, k, v of head h at base + t2 * 3C (+ C, + 2C)
    let q = base + t * c3;
    var m = -3.0e38;
    for (var t2 = lid; t2 <= t; t2 += ROW_WG) {
        let k = base + t2 * c3 + p.c;
        var s = 0.0;
        for (var j = 0u; j < p.hs; j++) {
            s += fu_inp[q + j] * fu_inp[k + j];
        }
        s *= p.scale;
        dec_w[t2] = s;
        m = max(m, s);
    }
    let expsum_inv = decode_softmax(lid, t, m);
    fused_store_att(lid, r, t, expsum_inv);
    for (var j = lid; j < p.hs; j += ROW_WG) {
        var acc = 0.0;
        for (var t2 = 0u; t2 <= t; t2++) {
            acc += dec_w[t2] * expsum_inv * fu_inp[base + t2 * c3 + 2u * p.c + j];
        }
        fu_out[(b * p.t + t) * p.c + h * p.hs + j] = acc;
    }
}

// attention_fused_x4: attention_fused with vec4 loads (requires HS % 4 == 0), as attention_decode_x4.
// bindings: 29 inp (B, T, 3C/4) vec4 read, 27 att write, 30 out (B, T, C/4) vec4 write. grid: as attention_fused.
@group(0) @binding(29) var<storage, read> fu4_inp: array<vec4<f32>>;
@group(0) @binding(30) var<storage, read_write> fu4_out: array<vec4<f32>>;

@compute @workgroup_size(64)
fn attention_fused_x4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.n) { return; } // uniform per workgroup
    let t = r % p.t;
    let h = (r / p.t) % p.nh;
    let b = r / (p.t * p.nh);
    let c4 = p.c / 4u;
    let hs4 = p.hs / 4u;
    let c34 = 3u * c4;
    let base = b * p.t * c34 + h * hs4; // vec4 units
    let q = base + t * c34;
    var m = -3.0e38;
    for (var t2 = lid; t2 <= t; t2 += ROW_WG) {
        let k = base + t2 * c34 + c4;
        var s = 0.0;
        for (var j = 0u; j < hs4; j++) {
            s += dot(fu4_inp[q + j], fu4_inp[k + j]);
        }
        s *= p.scale;
        dec_w[t2] = s;
        m = max(m, s);
    }
    let expsum_inv = decode_softmax(lid, t, m);
    fused_store_att(lid, r, t, expsum_inv);
    for (var j = lid; j < hs4; j += ROW_WG) {
        var acc = vec4<f32>(0.0);
        for (var t2 = 0u; t2 <= t; t2++) {
            acc += dec_w[t2] * expsum_inv * fu4_inp[base + t2 * c34 + 2u * c4 + j];
        }
        fu4_out[(b * p.t + t) * c4 + h * hs4 + j] = acc;
    }
}

// attention_softmax_backward_fused: attention_datt + attention_softmax_backward in one dispatch, one workgroup of 64
// per (b, h, t) row. datt[t2] = dout[b, t, h] . v[b, t2, h] stays in workgroup memory (the datt scratch is not
// written); then dpreatt[row, t2] = att[row, t2] * (datt[t2] - sum_j att[row, j] datt[j]) for t2 <= t, else 0
// (overwrites). Each lane reads back only the dec_w entries it wrote. attention_dqkv follows, as in the unfused form.
// bindings: 31 inp (B, T, 3C) read, 32 dout (B, T, C) read, 33 att (B, NH, T, T) read, 34 dpreatt write.
// grid: grid_1d(B*NH*T, 1); p.n = B*NH*T.
@group(0) @binding(31) var<storage, read> fb_inp: array<f32>;
@group(0) @binding(32) var<storage, read> fb_dout: array<f32>;
@group(0) @binding(33) var<storage, read> fb_att: array<f32>;
@group(0) @binding(34) var<storage, read_write> fb_dpreatt: array<f32>;

// The softmax backward of row r once dec_w[t2] (t2 <= t, each lane's own) holds datt and s each lane's share of
// sum att * datt.
fn fused_softmax_backward(lid: u32, r: u32, t: u32, s: f32) {
    red[lid] = s;
    let dot = reduce_row(lid, false);
    let row = r * p.t;
    for (var t2 = lid; t2 < p.t; t2 += ROW_WG) {
        var d = 0.0;
        if (t2 <= t) {
            d = fb_att[row + t2] * (dec_w[t2] - dot);
        }
        fb_dpreatt[row + t2] = d;
    }
}

@compute @workgroup_size(64)
fn attention_softmax_backward_fused(@builtin(workgroup_id) wid: vec3<u32>,
                                    @builtin(local_invocation_index) lid: u32,
                                    @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.n) { return; } // uniform per workgroup
    let t = r % p.t;
    let h = (r / p.t) % p.nh;
    let b = r / (p.t * p.nh);
    let c3 = 3u * p.c;
    let o = (b * p.t + t) * p.c + h * p.hs;
    let vb = b * p.t * c3 + h * p.hs + 2u * p.c;
    var s = 0.0;
    for (var t2 = lid; t2 <= t; t2 += ROW_WG) {
        let v = vb + t2 * c3;
        var d = 0.0;
        for (var j = 0u; j < p.hs; j++) {
            d += fb_dout[o + j] * fb_inp[v + j];
        }
        dec_w[t2] = d;
        s += fb_att[r * p.t + t2] * d;
    }
    fused_softmax_backward(lid, r, t, s);
}

// attention_softmax_backward_fused_x4: the same with vec4 loads of dout and v (requires HS % 4 == 0).
// bindings: 35 inp (B, T, 3C/4) vec4 read, 36 dout (B, T, C/4) vec4 read, 33 att read, 34 dpreatt write.
@group(0) @binding(35) var<storage, read> fb4_inp: array<vec4<f32>>;
@group(0) @binding(36) var<storage, read> fb4_dout: array<vec4<f32>>;

@compute @workgroup_size(64)
fn attention_softmax_backward_fused_x4(@builtin(workgroup_id) wid: vec3<u32>,
                                       @builtin(local_invocation_index) lid: u32,
                                       @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.n) { return; } // uniform per workgroup
    let t = r % p.t;
    let h = (r / p.t) % p.nh;
    let b = r / (p.t * p.nh);
    let c4 = p.c / 4u;
    let hs4 = p.hs / 4u;
    let c34 = 3u * c4;
    let o = (b * p.t + t) * c4 + h * hs4;
    let vb = b * p.t * c34 + h * hs4 + 2u * c4;
    var s = 0.0;
    for (var t2 = lid; t2 <= t; t2 += ROW_WG) {
        let v = vb + t2 * c34;
        var d = 0.0;
        for (var j = 0u; j < hs4; j++) {
            d += dot(fb4_dout[o + j], fb4_inp[v + j]);
        }
        dec_w[t2] = d;
        s += fb_att[r * p.t + t2] * d;
    }
    fused_softmax_backward(lid, r, t, s);
}

// attention_decode_rows: attention_decode with one invocation per (b, h) and no barriers, for CPU adapters (on
// lavapipe a workgroup's barriers cost more than a short row's arithmetic: 3.2x at 256 rows x 96 positions). The
// scores go to a scratch row in storage; the softmax's sums are sequential (as attention_softmax_rows); q, k, v and out
// move as vec4s (requires HS % 4 == 0). The tuner picks among the decode forms per adapter and shape.
// bindings: attention_decode_x4's (23 qkv, 24 cache, 25 out, 22 pos) and 48 scores (B * NH, T) scratch read_write.
// grid: grid_1d(B * NH, 64), workgroup 64; p.n = B * NH.
@group(0) @binding(48) var<storage, read_write> der_w: array<f32>;

// Where the per-invocation decode forms (attention_decode_rows, _rows16) find row r = (b, h): the vec4 strides, the
// row's position, this step's q (its k and v at q + C/4, q + C/2), the cache row's head h, the scores' scratch row.
struct DecodeRow { b: u32, h: u32, c4: u32, hs4: u32, c34: u32, pos: u32, q: u32, kv: u32, w: u32 }

fn decode_row(r: u32) -> DecodeRow {
    let b = r / p.nh;
    let h = r % p.nh;
    let c4 = p.c / 4u;
    let hs4 = p.hs / 4u;
    let c34 = 3u * c4;
    let pos = min(dec_pos[b], p.t - 1u);
    return DecodeRow(b, h, c4, hs4, c34, pos, b * c34 + h * hs4, b * p.t * c34 + h * hs4, r * p.t);
}

@compute @workgroup_size(64)
fn attention_decode_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                         @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (r >= p.n) { return; }
    let d = decode_row(r);
    let b = d.b;
    let h = d.h;
    let c4 = d.c4;
    let hs4 = d.hs4;
    let c34 = d.c34;
    let pos = d.pos;
    let q = d.q;
    let kv = d.kv;
    let w = d.w;
    // Scores: the cached positions, then the newest one, whose key is this step's.
    var m = -3.0e38;
    for (var t2 = 0u; t2 < pos; t2++) {
        let k = kv + t2 * c34 + c4;
        var s = 0.0;
        for (var j = 0u; j < hs4; j++) {
            s += dot(dec4_qkv[q + j], dec4_cache[k + j]);
        }
        s *= p.scale;
        der_w[w + t2] = s;
        m = max(m, s);
    }
    var s_new = 0.0;
    for (var j = 0u; j < hs4; j++) {
        s_new += dot(dec4_qkv[q + j], dec4_qkv[q + c4 + j]);
    }
    s_new *= p.scale;
    der_w[w + pos] = s_new;
    m = max(m, s_new);
    var sum = 0.0;
    for (var t2 = 0u; t2 <= pos; t2++) {
        let e = exp(der_w[w + t2] - m);
        der_w[w + t2] = e;
        sum += e;
    }
    let expsum_inv = 1.0 / sum;
    for (var j = 0u; j < hs4; j++) {
        var acc = vec4<f32>(0.0);
        for (var t2 = 0u; t2 < pos; t2++) {
            acc += der_w[w + t2] * expsum_inv * dec4_cache[kv + t2 * c34 + 2u * c4 + j];
        }
        acc += der_w[w + pos] * expsum_inv * dec4_qkv[q + 2u * c4 + j];
        dec4_out[b * c4 + h * hs4 + j] = acc;
        decode4_keep(kv + pos * c34 + j, q + j, c4);
    }
}

// attention_decode_rows16: attention_decode_rows for head sizes that are multiples of 16, taking the head 16 channels
// (4 vec4s) at a time with them held in variables: q's 4 vec4s are read once per chunk instead of once per position,
// and the weighted values read each position's weight once per 4 vec4s instead of once per vec4. On lavapipe every
// storage load is a loop over the SIMD lanes, so loads are what a decode step's attention costs there. Same sums as
// attention_decode_rows but for their grouping: a score adds its 16-channel chunks' dot products, chunk by chunk.
// bindings and grid: attention_decode_rows's.
@compute @workgroup_size(64)
fn attention_decode_rows16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                           @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (r >= p.n) { return; }
    let d = decode_row(r);
    let b = d.b;
    let h = d.h;
    let c4 = d.c4;
    let hs4 = d.hs4;
    let c34 = d.c34;
    let pos = d.pos;
    let q = d.q;
    let kv = d.kv;
    let w = d.w;
    // Scores, 16 channels at a time: the first chunk writes each position's score, the later ones add to it.
    for (var j = 0u; j < hs4; j += 4u) {
        let q0 = dec4_qkv[q + j];
        let q1 = dec4_qkv[q + j + 1u];
        let q2 = dec4_qkv[q + j + 2u];
        let q3 = dec4_qkv[q + j + 3u];
        for (var t2 = 0u; t2 < pos; t2++) {
            let k = kv + t2 * c34 + c4 + j;
            let s = ((dot(q0, dec4_cache[k]) + dot(q1, dec4_cache[k + 1u])) + dot(q2, dec4_cache[k + 2u]))
                + dot(q3, dec4_cache[k + 3u]);
            if (j == 0u) {
                der_w[w + t2] = s;
            } else {
                der_w[w + t2] += s;
            }
        }
        // The newest position's key is this step's.
        let k = q + c4 + j;
        let s = ((dot(q0, dec4_qkv[k]) + dot(q1, dec4_qkv[k + 1u])) + dot(q2, dec4_qkv[k + 2u]))
            + dot(q3, dec4_qkv[k + 3u]);
        if (j == 0u) {
            der_w[w + pos] = s;
        } else {
            der_w[w + pos] += s;
        }
    }
    var m = -3.0e38;
    for (var t2 = 0u; t2 <= pos; t2++) {
        let s = der_w[w + t2] * p.scale;
        der_w[w + t2] = s;
        m = max(m, s);
    }
    var sum = 0.0;
    for (var t2 = 0u; t2 <= pos; t2++) {
        let e = exp(der_w[w + t2] - m);
        der_w[w + t2] = e;
        sum += e;
    }
    let expsum_inv = 1.0 / sum;
    for (var j = 0u; j < hs4; j += 4u) {
        var a0 = vec4<f32>(0.0);
        var a1 = vec4<f32>(0.0);
        var a2 = vec4<f32>(0.0);
        var a3 = vec4<f32>(0.0);
        for (var t2 = 0u; t2 < pos; t2++) {
            let pw = der_w[w + t2] * expsum_inv;
            let v = kv + t2 * c34 + 2u * c4 + j;
            a0 += pw * dec4_cache[v];
            a1 += pw * dec4_cache[v + 1u];
            a2 += pw * dec4_cache[v + 2u];
            a3 += pw * dec4_cache[v + 3u];
        }
        let pw = der_w[w + pos] * expsum_inv;
        let v = q + 2u * c4 + j;
        let o = b * c4 + h * hs4 + j;
        dec4_out[o] = a0 + pw * dec4_qkv[v];
        dec4_out[o + 1u] = a1 + pw * dec4_qkv[v + 1u];
        dec4_out[o + 2u] = a2 + pw * dec4_qkv[v + 2u];
        dec4_out[o + 3u] = a3 + pw * dec4_qkv[v + 3u];
    }
    for (var j = 0u; j < hs4; j++) {
        decode4_keep(kv + pos * c34 + j, q + j, c4);
    }
}

// attention_cache_fill: cache[b, t, :] = qkv[b, t, :] for t < T_p: a KV cache of T positions (B, T, 3C) takes the
// qkv activation of a prefill over the first T_p positions (B, T_p, 3C); positions from T_p on are left as they are
// (the decode steps write them before reading them). One invocation per element copied.
// bindings: 49 qkv (B, T_p, 3C) read, 50 cache (B, T, 3C) read_write. grid: grid_1d(B*T_p*3C, 256); p.n = that count.
@group(0) @binding(49) var<storage, read> cf_qkv: array<f32>;
@group(0) @binding(50) var<storage, read_write> cf_cache: array<f32>;

@compute @workgroup_size(256)
fn attention_cache_fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let row = p.tp * 3u * p.c;
    cf_cache[(i / row) * p.t * 3u * p.c + i % row] = cf_qkv[i];
}
