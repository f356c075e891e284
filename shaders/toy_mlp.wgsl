// Toy-MLP op family: the paper's toy policy (one-hot prompt -> H -> H -> R logits, ReLU between, softmax over
// responses) with its forward, backward and optimizer update fused for its shape, in 6 dispatches instead of ~20.
// The generic path (`model::Mlp`: matmuls, activations, log-softmax, `train::Optimizer`) computes the same numbers
// and stays the reference the tests compare this family with.
//
// What the fusion exploits:
// - the input is one-hot over P <= 4 prompts, so the whole forward is a (P, R) table of log-probabilities: every
//   row the objective scores is a (prompt, response) lookup in it, and the hidden activations of all P prompts fit in
//   one vec4 per hidden unit (component u = prompt u; components past P are kept at 0);
// - fc2.weight's gradient is the rank-P product sum_u h1[u]^T dh2pre[u]. It is never stored: the backward keeps the
//   two factors (h1t, dt) and the update recomputes each element where it reads the parameter, so the largest
//   gradient costs no memory pass at all. (`toy_w2_grad` materialises it, for tests and inspection.)
// - the gradient norm's sums of squares come out of the backward kernels as per-workgroup partials, in a fixed
//   order, so no separate norm pass reads the gradients; `grad_norm_final` (adamw.wgsl) turns them into the norm,
//   the clip scale and Adam's step state exactly as for the generic optimizer.
//
// On CPU adapters (lavapipe) a workgroup runs on one thread with its invocations in SIMD lanes, and every load
// inside a loop or branch is a per-lane gather, whatever its address (measured with Mesa 25.0.7). The kernels are
// therefore laid out for multiply-adds per load: loops over the reduction index with 4 hidden units per invocation,
// no branches inside the loops (units past H are clamped, not skipped), constants instead of runtime flags.
//
// Layout, per replica g (N replicas trained by the same dispatches, each bit for bit what it would be alone):
//   params, grads: arenas of `stride` floats per replica: fc1.weight (H, P) at o_w1, fc1.bias (H) at o_b1 (or NONE),
//   fc2.weight (H, H) at o_w2 (out, in), fc2.bias (H) at o_b2, fc3.weight (R, H) at o_w3, fc3.bias (R) at o_b3;
//   h1t, h2t, dt: (N, H) vec4 = hidden unit k's value for prompts 0..3 (h1 = relu(fc1), h2 = relu(fc2),
//   dt = d loss / d fc2 pre-activation);
//   table: (N, P, R) log-softmax; rows: (N, B) (prompt, response) u32 pairs; logps, dlogps: (N, B);
//   partials: (N, depth nblk) sums of squares of the gradients, nblk per backward dispatch.
//   params4 (binding 25), up4_* (21..24): vec4 views of the same buffers, read by the kernels' vec4 forms (H a
//   multiple of 4; each part of the arena starts on a multiple of 64 floats).
//
// Deeper models (depth hidden layers, fc2 .. fc{depth} H -> H): each extra layer adds a toy_hidden_forward, a
// toy_mid_backward and a toy_w2_grad (its gradient is materialised; only fc2's stays factored). Each dispatch gets
// its own parameter block, whose o_w2 / o_b2 / o_b1 name the layer it works on.

struct Toy {
    h: u32,          // H hidden units
    p: u32,          // P prompts (1..=4)
    r: u32,          // R responses (P * R <= 64, R <= 16)
    b: u32,          // B rows per replica (<= 64)
    stride: u32,     // floats per replica in the parameter, gradient and moment arenas
    o_w1: u32,
    o_b1: u32,       // NONE without a first-layer bias
    o_w2: u32,
    o_b2: u32,
    o_w3: u32,
    o_b3: u32,
    nblk: u32,       // ceil(H / 64): workgroups per replica of the per-unit kernels
    kind: u32,       // toy_update: 0 Adam(W), 1 SGD
    replicas: u32,   // N
    np: u32,         // partial sums of squares per replica (depth x nblk)
    slot: u32,       // the first partial this dispatch writes (its workgroup x adds to it)
}

const NONE: u32 = 0xffffffffu;
const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> t: Toy;

// Read-only views shared by several entry points (each pipeline binds only what its entry point uses).
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(4) var<storage, read> h2t: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> rows: array<u32>;
@group(0) @binding(11) var<storage, read_write> grads_out: array<f32>;
@group(0) @binding(12) var<storage, read_write> partials: array<f32>;
@group(0) @binding(13) var<storage, read> h1t: array<vec4<f32>>;
@group(0) @binding(14) var<storage, read> dt: array<vec4<f32>>;
@group(0) @binding(25) var<storage, read> params4: array<vec4<f32>>;

var<workgroup> red: array<f32, 64>;

// Sum red[0..64] into red[0] (fixed tree; every invocation must call it).
fn tree_sum(lid: u32) {
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
    }
    workgroupBarrier();
}

// 1 for the components that are prompts (u < P), 0 past them.
fn prompt_mask() -> vec4<f32> {
    return vec4<f32>(vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(t.p));
}

// toy_forward, hidden units n0..n0+3 of replica g (4 per invocation, 16 invocations: 64 per workgroup):
//   h1t[g, n] = relu(fc1_pre(n));  h2t[g, n] = relu(fc2.bias[n] + sum_k fc2.weight[n, k] h1[k])  (per prompt)
// On lavapipe every load inside a loop is a gather, whatever its address, so the loop body is laid out for
// multiply-adds per load: per k, 4 loads of fc1 (h1[:, k]) and 4 of fc2.weight feed 16 multiply-adds. Units past H
// are clamped to the last one (loaded, never stored), so the loop has no branches.
// bindings: 1 params read, 2 h1t (N, H) vec4 write, 3 h2t (N, H) vec4 write.
// grid: (ceil(H / 64), N), workgroup 16.
@group(0) @binding(2) var<storage, read_write> h1t_out: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> h2t_out: array<vec4<f32>>;

// relu(fc1) of unit k for every prompt without branches: the P columns loaded (clamped), masked past P; the bias
// read only when `bias` (a constant at each call site, so the compiler drops the other case).
fn h1_of(base: u32, k: u32, bias: bool) -> vec4<f32> {
    let row = base + t.o_w1 + k * t.p;
    let last = t.p - 1u;
    var x = vec4<f32>(params[row], params[row + min(1u, last)], params[row + min(2u, last)], params[row + min(3u, last)]);
    if (bias) {
        x = x + params[base + t.o_b1 + k];
    }
    return max(x, vec4<f32>(0.0)) * prompt_mask();
}

// h1_of for P = 4 (fc1.weight's row k is one vec4 of the vec4 view).
fn h1_of4(base: u32, k: u32, bias: bool) -> vec4<f32> {
    var x = params4[(base + t.o_w1) / 4u + k];
    if (bias) {
        x = x + params[base + t.o_b1 + k];
    }
    return max(x, vec4<f32>(0.0));
}

fn forward_units(wid: vec3<u32>, lid: u32, bias: bool, from_input: bool, v4: bool) {
    let g = wid.y;
    let base = g * t.stride;
    let n0 = (wid.x * 16u + lid) * 4u;
    let last = t.h - 1u;
    let w0 = base + t.o_w2 + min(n0, last) * t.h;
    let w1 = base + t.o_w2 + min(n0 + 1u, last) * t.h;
    let w2 = base + t.o_w2 + min(n0 + 2u, last) * t.h;
    let w3 = base + t.o_w2 + min(n0 + 3u, last) * t.h;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    if (v4) {
        // H a multiple of 4: the 4 rows' weights at k..k+3 as one vec4 each (rows start on a vec4), the same sums in
        // the same order.
        for (var k = 0u; k < t.h; k = k + 4u) {
            var x0: vec4<f32>;
            var x1: vec4<f32>;
            var x2: vec4<f32>;
            var x3: vec4<f32>;
            if (from_input) {
                x0 = h2t[g * t.h + k];
                x1 = h2t[g * t.h + k + 1u];
                x2 = h2t[g * t.h + k + 2u];
                x3 = h2t[g * t.h + k + 3u];
            } else if (t.p == 4u) {
                x0 = h1_of4(base, k, bias);
                x1 = h1_of4(base, k + 1u, bias);
                x2 = h1_of4(base, k + 2u, bias);
                x3 = h1_of4(base, k + 3u, bias);
            } else {
                x0 = h1_of(base, k, bias);
                x1 = h1_of(base, k + 1u, bias);
                x2 = h1_of(base, k + 2u, bias);
                x3 = h1_of(base, k + 3u, bias);
            }
            let q0 = params4[(w0 + k) / 4u];
            let q1 = params4[(w1 + k) / 4u];
            let q2 = params4[(w2 + k) / 4u];
            let q3 = params4[(w3 + k) / 4u];
            a0 = a0 + x0 * q0.x + x1 * q0.y + x2 * q0.z + x3 * q0.w;
            a1 = a1 + x0 * q1.x + x1 * q1.y + x2 * q1.z + x3 * q1.w;
            a2 = a2 + x0 * q2.x + x1 * q2.y + x2 * q2.z + x3 * q2.w;
            a3 = a3 + x0 * q3.x + x1 * q3.y + x2 * q3.z + x3 * q3.w;
        }
    } else {
        for (var k = 0u; k < t.h; k = k + 1u) {
            var x: vec4<f32>;
            if (from_input) {
                x = h2t[g * t.h + k];
            } else {
                x = h1_of(base, k, bias);
            }
            a0 = a0 + x * params[w0 + k];
            a1 = a1 + x * params[w1 + k];
            a2 = a2 + x * params[w2 + k];
            a3 = a3 + x * params[w3 + k];
        }
    }
    let acc = array<vec4<f32>, 4>(a0, a1, a2, a3);
    for (var j = 0u; j < 4u; j = j + 1u) {
        let n = n0 + j;
        if (n < t.h) {
            if (!from_input) {
                h1t_out[g * t.h + n] = h1_of(base, n, bias);
            }
            h2t_out[g * t.h + n] = max(acc[j] + params[base + t.o_b2 + n], vec4<f32>(0.0)) * prompt_mask();
        }
    }
}

@compute @workgroup_size(16)
fn toy_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    forward_units(wid, lid, false, false, false);
}

// The `4` entry points (toy_forward4, toy_forward4_bias, toy_hidden_forward4, toy_hidden_backward4,
// toy_mid_backward4): the same kernels for H a multiple of 4, reading fc2.weight's rows as vec4s through binding
// 25 (a vec4 view of params; every part of a replica's arena starts on a vec4, `TensorArena` aligns parts to 64
// floats). On lavapipe, where each load in a loop is a per-lane gather, one vec4 load replaces four scalar ones.
@compute @workgroup_size(16)
fn toy_forward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    forward_units(wid, lid, false, false, true);
}

@compute @workgroup_size(16)
fn toy_forward4_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    forward_units(wid, lid, true, false, true);
}

@compute @workgroup_size(16)
fn toy_hidden_forward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    forward_units(wid, lid, false, true, true);
}

// toy_forward with a first-layer bias (fc1.bias at o_b1).
@compute @workgroup_size(16)
fn toy_forward_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    forward_units(wid, lid, true, false, false);
}

// toy_hidden_forward: a further H -> H layer (weight at o_w2, bias at o_b2) from the layer below:
//   out[g, n] = relu(bias[n] + sum_k weight[n, k] in[g, k]) (per prompt).
// bindings: 1 params read, 4 in (N, H) vec4 read, 3 out (N, H) vec4 write.
// grid: (nblk, N), workgroup 16.
@compute @workgroup_size(16)
fn toy_hidden_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    forward_units(wid, lid, false, true, false);
}

// toy_head, replica g: logits[u, r] = fc3.bias[r] + sum_n fc3.weight[r, n] h2[u, n]; table[g, u, :] = log_softmax
// over r; logps[g, i] = table[g, prompt_i, response_i] for the B rows.
// bindings: 1 params read, 4 h2t read, 5 rows (N, B, 2) read, 6 table (N, P, R) write, 7 logps (N, B) write.
// grid: (N), workgroup 64 (invocation l < P R computes logit (l / R, l % R)).
@group(0) @binding(6) var<storage, read_write> table_out: array<f32>;
@group(0) @binding(7) var<storage, read_write> logps_out: array<f32>;

var<workgroup> lg: array<f32, 64>;

@compute @workgroup_size(64)
fn toy_head(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x;
    let base = g * t.stride;
    let pr = t.p * t.r;
    let u = lid / t.r;
    let r = lid % t.r;
    if (lid < pr) {
        let e = vec4<f32>(vec4<u32>(0u, 1u, 2u, 3u) == vec4<u32>(u));
        var acc = params[base + t.o_b3 + r];
        let w = base + t.o_w3 + r * t.h;
        for (var n = 0u; n < t.h; n = n + 1u) {
            acc = acc + dot(h2t[g * t.h + n], e) * params[w + n];
        }
        lg[lid] = acc;
    }
    workgroupBarrier();
    var lp = 0.0;
    if (lid < pr) {
        var m = lg[u * t.r];
        for (var j = 1u; j < t.r; j = j + 1u) {
            m = max(m, lg[u * t.r + j]);
        }
        var s = 0.0;
        for (var j = 0u; j < t.r; j = j + 1u) {
            s = s + exp(lg[u * t.r + j] - m);
        }
        lp = lg[lid] - (m + log(s));
        table_out[g * pr + lid] = lp;
    }
    workgroupBarrier();
    if (lid < pr) {
        lg[lid] = lp;
    }
    workgroupBarrier();
    if (lid < t.b) {
        let i = g * t.b + lid;
        logps_out[i] = lg[rows[2u * i] * t.r + rows[2u * i + 1u]];
    }
}

// toy_head_backward, replica g. First d loss / d logits from the rows' d loss / d logp (invocation r < R sums
// column r for every prompt at once):  dl[u, r] = sum over rows i with prompt u of
// dlogps[i] ([r == response_i] - exp(table[u, r])). Then hidden unit n:
//   fc3.weight grad [r, n] = sum_u dl[u, r] h2[u, n];  dt[g, n] = (sum_r dl[:, r] fc3.weight[r, n]) * (h2[n] > 0);
//   fc2.bias grad [n] = sum_u dt[u, n];  workgroup 0 also fc3.bias grad [r] = sum_u dl[u, r].
// The workgroup's sum of squares of the gradients it wrote goes to partials[g, wid.x].
// bindings: 1 params read, 4 h2t read, 5 rows read, 8 table read, 9 dlogps (N, B) read, 10 dt (N, H) vec4 write,
//   11 grads write, 12 partials write.
// grid: (nblk, N), workgroup 64.
@group(0) @binding(8) var<storage, read> table: array<f32>;
@group(0) @binding(9) var<storage, read> dlogps: array<f32>;
@group(0) @binding(10) var<storage, read_write> dt_out: array<vec4<f32>>;

var<workgroup> dls: array<vec4<f32>, 16>;

@compute @workgroup_size(64)
fn toy_head_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.y;
    let base = g * t.stride;
    if (lid < t.r) {
        var d = vec4<f32>(0.0);
        for (var i = 0u; i < t.b; i = i + 1u) {
            let row = g * t.b + i;
            let u = rows[2u * row];
            let y = rows[2u * row + 1u];
            let e = vec4<f32>(vec4<u32>(0u, 1u, 2u, 3u) == vec4<u32>(u));
            let p = exp(table[(g * t.p + u) * t.r + lid]);
            d = d + e * (dlogps[row] * (select(0.0, 1.0, lid == y) - p));
        }
        dls[lid] = d;
    }
    workgroupBarrier();
    let n = wid.x * WG + lid;
    var ss = 0.0;
    if (n < t.h) {
        let h2 = h2t[g * t.h + n];
        var dh2 = vec4<f32>(0.0);
        for (var r = 0u; r < t.r; r = r + 1u) {
            let d = dls[r];
            let i = base + t.o_w3 + r * t.h + n;
            dh2 = dh2 + d * params[i];
            let gw = dot(d, h2);
            grads_out[i] = gw;
            ss = ss + gw * gw;
        }
        let d = select(vec4<f32>(0.0), dh2, h2 > vec4<f32>(0.0));
        dt_out[g * t.h + n] = d;
        let db = d.x + d.y + d.z + d.w;
        grads_out[base + t.o_b2 + n] = db;
        ss = ss + db * db;
    }
    if (wid.x == 0u && lid < t.r) {
        let d = dls[lid];
        let db = d.x + d.y + d.z + d.w;
        grads_out[base + t.o_b3 + lid] = db;
        ss = ss + db * db;
    }
    red[lid] = ss;
    tree_sum(lid);
    if (lid == 0u) {
        partials[g * t.np + t.slot + wid.x] = red[0];
    }
}

// toy_hidden_backward, hidden units k0..k0+3 of replica g (4 per invocation, 16 invocations):
//   dh1[u, k] = sum_n dt[u, n] fc2.weight[n, k];  fc1.weight grad [k, u] = dh1[u, k] (h1[u, k] > 0) (the input is
//   one-hot); fc1.bias grad [k] = sum_u of it. The sum of squares includes fc2.weight's gradient columns k,
//   sum_n (h1[:, k] . dt[:, n])^2, computed here without storing them. Per n: 4 loads of dt and 4 of fc2.weight
//   feed 16 multiply-adds (and the 4 gradient elements' squares). Units past H are clamped and weighted 0.
// bindings: 1 params read, 13 h1t read, 14 dt read, 11 grads write, 12 partials write.
// grid: (nblk, N), workgroup 16.
var<workgroup> red16: array<f32, 16>;

@compute @workgroup_size(16)
fn toy_hidden_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    backward_units(wid, lid, true, false);
}

@compute @workgroup_size(16)
fn toy_hidden_backward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    backward_units(wid, lid, true, true);
}

// toy_mid_backward: the same through a further H -> H layer (weight at o_w2, its input h at binding 13, its
// d loss / d pre-activation at binding 14), writing the layer below's d loss / d pre-activation and its bias
// gradient (bias at o_b1):  dt_out[g, k] = (sum_n dt[:, n] weight[n, k]) (h[:, k] > 0);  bias grad [k] = sum_u.
// bindings: 1 params read, 13 h read, 14 dt read, 10 dt_out write, 11 grads write, 12 partials write.
// grid: (nblk, N), workgroup 16.
@compute @workgroup_size(16)
fn toy_mid_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    backward_units(wid, lid, false, false);
}

@compute @workgroup_size(16)
fn toy_mid_backward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    backward_units(wid, lid, false, true);
}

fn backward_units(wid: vec3<u32>, lid: u32, first: bool, v4: bool) {
    let g = wid.y;
    let base = g * t.stride;
    let k0 = (wid.x * 16u + lid) * 4u;
    let last = t.h - 1u;
    let kk = min(vec4<u32>(k0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(last));
    let valid = vec4<f32>(vec4<u32>(k0) + vec4<u32>(0u, 1u, 2u, 3u) <= vec4<u32>(last));
    let h0 = h1t[g * t.h + kk.x];
    let h1 = h1t[g * t.h + kk.y];
    let h2 = h1t[g * t.h + kk.z];
    let h3 = h1t[g * t.h + kk.w];
    var d0 = vec4<f32>(0.0);
    var d1 = vec4<f32>(0.0);
    var d2 = vec4<f32>(0.0);
    var d3 = vec4<f32>(0.0);
    var sq = vec4<f32>(0.0);
    if (v4) {
        // H a multiple of 4: columns k0..k0+3 of a row as one vec4 (past H: the row's last vec4, never stored).
        let kc = min(k0, t.h - 4u);
        for (var n = 0u; n < t.h; n = n + 1u) {
            let d = dt[g * t.h + n];
            let w = params4[(base + t.o_w2 + n * t.h + kc) / 4u];
            d0 = d0 + d * w.x;
            d1 = d1 + d * w.y;
            d2 = d2 + d * w.z;
            d3 = d3 + d * w.w;
            let gw = vec4<f32>(dot(h0, d), dot(h1, d), dot(h2, d), dot(h3, d));
            sq = sq + gw * gw;
        }
    } else {
        for (var n = 0u; n < t.h; n = n + 1u) {
            let d = dt[g * t.h + n];
            let row = base + t.o_w2 + n * t.h;
            d0 = d0 + d * params[row + kk.x];
            d1 = d1 + d * params[row + kk.y];
            d2 = d2 + d * params[row + kk.z];
            d3 = d3 + d * params[row + kk.w];
            let gw = vec4<f32>(dot(h0, d), dot(h1, d), dot(h2, d), dot(h3, d));
            sq = sq + gw * gw;
        }
    }
    var ss = dot(sq, valid);
    let dh = array<vec4<f32>, 4>(
        select(vec4<f32>(0.0), d0, h0 > vec4<f32>(0.0)),
        select(vec4<f32>(0.0), d1, h1 > vec4<f32>(0.0)),
        select(vec4<f32>(0.0), d2, h2 > vec4<f32>(0.0)),
        select(vec4<f32>(0.0), d3, h3 > vec4<f32>(0.0)),
    );
    for (var j = 0u; j < 4u; j = j + 1u) {
        let k = k0 + j;
        if (k < t.h && !first) {
            let v = dh[j];
            dt_out[g * t.h + k] = v;
            let db = v.x + v.y + v.z + v.w;
            grads_out[base + t.o_b1 + k] = db;
            ss = ss + db * db;
        }
        if (k < t.h && first) {
            let v = dh[j];
            let row = base + t.o_w1 + k * t.p;
            grads_out[row] = v.x;
            if (t.p > 1u) { grads_out[row + 1u] = v.y; }
            if (t.p > 2u) { grads_out[row + 2u] = v.z; }
            if (t.p > 3u) { grads_out[row + 3u] = v.w; }
            ss = ss + dot(v, v);
            if (t.o_b1 != NONE) {
                let db = v.x + v.y + v.z + v.w;
                grads_out[base + t.o_b1 + k] = db;
                ss = ss + db * db;
            }
        }
    }
    red16[lid] = ss;
    for (var s = 8u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (lid < s) {
            red16[lid] = red16[lid] + red16[lid + s];
        }
    }
    workgroupBarrier();
    if (lid == 0u) {
        partials[g * t.np + t.slot + wid.x] = red16[0];
    }
}

// toy_w2_grad: fc2.weight's gradient materialised, grads[g, o_w2 + n H + k] = h1[:, k] . dt[:, n] (the generic
// optimizer's input; the fused update recomputes it instead).
// bindings: 13 h1t read, 14 dt read, 11 grads write.
// grid: (nblk, H, N), workgroup 64.
@compute @workgroup_size(64)
fn toy_w2_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.z;
    let n = wid.y;
    let k = wid.x * WG + lid;
    if (k >= t.h) { return; }
    grads_out[g * t.stride + t.o_w2 + n * t.h + k] = dot(h1t[g * t.h + k], dt[g * t.h + n]);
}

// toy_update: one optimizer step of replica g, the same arithmetic per element as adamw.wgsl's adamw_update
// (clip scale, Adam moments, bias corrections from the step state, decoupled weight decay) or
// sgd_momentum_update; skipped
// when the replica's gradient norm is not finite. Workgroups x < nblk^2 update fc2.weight's 64 x 64 block
// (columns k of block x % nblk, rows n of block x / nblk), its gradient recomputed from the factors; the rest go
// through the replica's other elements (every index outside fc2.weight) with their gradients from `grads`.
// bindings: 15 params read_write, 16 grads read, 17 m read_write, 18 v read_write, 19 hyper (AdamHyper) uniform,
//   20 norm (grad_norm_final's: [norm, scale] per replica, then the step states) read, 13 h1t read, 14 dt read.
// grid: (nblk^2 + ceil((stride - H^2) / 64), N), workgroup 16 (4 elements per invocation).
struct AdamHyper {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    momentum: f32,
    _pad1: f32,
    _pad2: f32,
}

@group(0) @binding(15) var<storage, read_write> up_params: array<f32>;
@group(0) @binding(16) var<storage, read> up_grads: array<f32>;
@group(0) @binding(17) var<storage, read_write> up_m: array<f32>;
@group(0) @binding(18) var<storage, read_write> up_v: array<f32>;
@group(0) @binding(19) var<uniform> hyper: AdamHyper;
@group(0) @binding(20) var<storage, read> norm: array<f32>;

fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// The element update; `grad` already carries the clip scale. `sgd` is a constant at every call site (one entry
// point per optimizer), so no branch on it remains in the loops.
fn update(i: u32, grad: f32, bias_correction1: f32, bias_correction2: f32, sgd: bool) {
    let param = up_params[i];
    if (sgd) {
        // SGD with momentum (adamw.wgsl's sgd_momentum_update; momentum 0 is plain SGD), the buffer in m.
        let buf = hyper.momentum * up_m[i] + grad;
        up_m[i] = buf;
        up_params[i] = param - hyper.lr * (buf + hyper.weight_decay * param);
        return;
    }
    let m = hyper.beta1 * up_m[i] + (1.0 - hyper.beta1) * grad;
    let v = hyper.beta2 * up_v[i] + (1.0 - hyper.beta2) * grad * grad;
    up_m[i] = m;
    up_v[i] = v;
    let mhat = m / bias_correction1;
    let vhat = v / bias_correction2;
    up_params[i] = param - hyper.lr * (mhat / (sqrt(vhat) + hyper.eps) + hyper.weight_decay * param);
}

@compute @workgroup_size(16)
fn toy_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    update_all(wid, lid, false);
}

// toy_update with SGD (momentum from the hyperparameters; the buffer in m).
@compute @workgroup_size(16)
fn toy_update_sgd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    update_all(wid, lid, true);
}

fn update_all(wid: vec3<u32>, lid: u32, sgd: bool) {
    let g = wid.y;
    if (!is_finite(norm[2u * g])) { return; }
    let scale = norm[2u * g + 1u];
    let st = 2u * t.replicas + 4u * g;
    let bias_correction1 = 1.0 - norm[st + 1u];
    let bias_correction2 = 1.0 - norm[st + 2u];
    let base = g * t.stride;
    let nw = t.nblk * t.nblk;
    if (wid.x < nw) {
        // fc2.weight: columns k0..k0+3 (clamped past H, never stored there), rows of block wid.x / nblk.
        let k0 = ((wid.x % t.nblk) * 16u + lid) * 4u;
        let last = t.h - 1u;
        let kk = min(vec4<u32>(k0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(last));
        let h0 = h1t[g * t.h + kk.x] * scale;
        let h1 = h1t[g * t.h + kk.y] * scale;
        let h2 = h1t[g * t.h + kk.z] * scale;
        let h3 = h1t[g * t.h + kk.w] * scale;
        let n0 = (wid.x / t.nblk) * 64u;
        let n1 = min(n0 + 64u, t.h);
        let width = min(t.h - min(k0, t.h), 4u);
        if (width == 4u) {
            for (var n = n0; n < n1; n = n + 1u) {
                let d = dt[g * t.h + n];
                let row = base + t.o_w2 + n * t.h + k0;
                update(row, dot(h0, d), bias_correction1, bias_correction2, sgd);
                update(row + 1u, dot(h1, d), bias_correction1, bias_correction2, sgd);
                update(row + 2u, dot(h2, d), bias_correction1, bias_correction2, sgd);
                update(row + 3u, dot(h3, d), bias_correction1, bias_correction2, sgd);
            }
        } else {
            let gs = array<vec4<f32>, 4>(h0, h1, h2, h3);
            for (var n = n0; n < n1; n = n + 1u) {
                let d = dt[g * t.h + n];
                let row = base + t.o_w2 + n * t.h + k0;
                for (var j = 0u; j < width; j = j + 1u) {
                    update(row + j, dot(gs[j], d), bias_correction1, bias_correction2, sgd);
                }
            }
        }
        return;
    }
    // The other parameters: 64 consecutive elements of the replica's arena outside fc2.weight per workgroup, 4 per
    // invocation.
    for (var q = 0u; q < 4u; q = q + 1u) {
        var j = (wid.x - nw) * 64u + q * 16u + lid;
        if (j >= t.o_w2) {
            j = j + t.h * t.h;
        }
        if (j < t.stride) {
            update(base + j, up_grads[base + j] * scale, bias_correction1, bias_correction2, sgd);
        }
    }
}

// toy_update4 / toy_update4_sgd: toy_update with the parameters, gradients and moments read and written as vec4s,
// for H a multiple of 4 (every part of a replica's arena then starts on a vec4: `TensorArena` aligns parts to 64
// floats). The same arithmetic per element as `update`; on lavapipe, where each load in a loop is a per-lane gather,
// one vec4 load replaces four scalar ones. Same grid and bindings 19, 20, 13, 14 as toy_update; 21 params, 22 grads,
// 23 m, 24 v (vec4 views of 15..18).
@group(0) @binding(21) var<storage, read_write> up4_params: array<vec4<f32>>;
@group(0) @binding(22) var<storage, read> up4_grads: array<vec4<f32>>;
@group(0) @binding(23) var<storage, read_write> up4_m: array<vec4<f32>>;
@group(0) @binding(24) var<storage, read_write> up4_v: array<vec4<f32>>;

fn update4(i: u32, grad: vec4<f32>, bias_correction1: f32, bias_correction2: f32, sgd: bool) {
    let param = up4_params[i];
    if (sgd) {
        let buf = hyper.momentum * up4_m[i] + grad;
        up4_m[i] = buf;
        up4_params[i] = param - hyper.lr * (buf + hyper.weight_decay * param);
        return;
    }
    let m = hyper.beta1 * up4_m[i] + (1.0 - hyper.beta1) * grad;
    let v = hyper.beta2 * up4_v[i] + (1.0 - hyper.beta2) * grad * grad;
    up4_m[i] = m;
    up4_v[i] = v;
    let mhat = m / bias_correction1;
    let vhat = v / bias_correction2;
    up4_params[i] = param - hyper.lr * (mhat / (sqrt(vhat) + hyper.eps) + hyper.weight_decay * param);
}

@compute @workgroup_size(16)
fn toy_update4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    update_all4(wid, lid, false);
}

@compute @workgroup_size(16)
fn toy_update4_sgd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    update_all4(wid, lid, true);
}

fn update_all4(wid: vec3<u32>, lid: u32, sgd: bool) {
    let g = wid.y;
    if (!is_finite(norm[2u * g])) { return; }
    let scale = norm[2u * g + 1u];
    let st = 2u * t.replicas + 4u * g;
    let bias_correction1 = 1.0 - norm[st + 1u];
    let bias_correction2 = 1.0 - norm[st + 2u];
    let base = g * t.stride;
    let nw = t.nblk * t.nblk;
    if (wid.x < nw) {
        // fc2.weight: columns k0..k0+3 (one vec4 of each row), rows of block wid.x / nblk.
        let k0 = ((wid.x % t.nblk) * 16u + lid) * 4u;
        if (k0 >= t.h) { return; }
        let h0 = h1t[g * t.h + k0] * scale;
        let h1 = h1t[g * t.h + k0 + 1u] * scale;
        let h2 = h1t[g * t.h + k0 + 2u] * scale;
        let h3 = h1t[g * t.h + k0 + 3u] * scale;
        let n0 = (wid.x / t.nblk) * 64u;
        let n1 = min(n0 + 64u, t.h);
        for (var n = n0; n < n1; n = n + 1u) {
            let d = dt[g * t.h + n];
            let row = (base + t.o_w2 + n * t.h + k0) / 4u;
            update4(row, vec4<f32>(dot(h0, d), dot(h1, d), dot(h2, d), dot(h3, d)), bias_correction1,
                    bias_correction2, sgd);
        }
        return;
    }
    // The other parameters: 64 consecutive elements of the replica's arena outside fc2.weight per workgroup, a
    // vec4 per invocation (a vec4 lies wholly inside or outside fc2.weight: both ends are multiples of 4).
    var j = (wid.x - nw) * 64u + lid * 4u;
    if (j >= t.o_w2) {
        j = j + t.h * t.h;
    }
    if (j < t.stride) {
        let i = (base + j) / 4u;
        update4(i, up4_grads[i] * scale, bias_correction1, bias_correction2, sgd);
    }
}
