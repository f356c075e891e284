// Optimizer op family: the global gradient L2 norm with its clip scale (a deterministic two-pass reduction), the
// AdamW update (decoupled weight decay) and plain SGD. The updates read their hyperparameters and the clip scale from
// buffers (AdamHyper as a uniform block), and Adam's step counter t lives on the GPU, so the recorded plan never
// changes between steps and several optimizer steps can be recorded into one submit.
//
// Non-finite gradients: grad_norm_final checks each group's norm (NaN or infinity in any gradient, or a sum of squares
// that overflows f32, makes it non-finite). A finite norm advances the group's step state; a non-finite one counts a
// skipped step instead, and the updates then leave that group's parameters and moments untouched, so they stay the
// last good ones. The host reads the skip count back with the norm.
//
// The norm buffer (6G f32): [L2 norm, clip scale] per group (2G), then the step state per group (4G):
// [t (applied steps), beta1^t, beta2^t, skipped steps], initialised to [0, 1, 1, 0]. The powers are kept as running
// products (one f32 multiply per applied step), so the bias corrections 1 - beta^t are exact f32 arithmetic the CPU
// reference repeats bit for bit.
//
// Determinism: pass 1 splits the n gradients into a fixed number of workgroups (a function of n only), each thread
// summing a fixed strided slice and each workgroup a fixed tree; pass 2 sums the partials in one workgroup, again
// in a fixed order. The same gradients give bit-identical norms run to run.

// Groups: the n elements may hold G independent models back to back (replicas trained in the same dispatches,
// group_len elements each). Each group gets its own norm and clip scale, norm[2g] and norm[2g + 1], computed in
// exactly the order a lone model of group_len elements would use. G = 1: group_len = n.
struct Params {
    n: u32,            // number of elements (grads / params), G * group_len
    num_partials: u32, // workgroups of grad_norm_partial per group = scratch length per group
    max_norm: f32,     // clip threshold (<= 0: no clipping)
    group_len: u32,    // elements per group
}

// The 8-float hyperparameter block the host writes (bias corrections come from the step state, not from here).
struct AdamHyper {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    momentum: f32, // SGD with momentum only
    _pad1: f32,
    _pad2: f32,
}

// true unless x is NaN or +-infinity (exponent bits all ones); a bit test, because WGSL lets a compiler assume
// floats are finite in arithmetic comparisons.
fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// Index of group g's step state [t, beta1^t, beta2^t, skipped] in the norm buffer.
fn state_index(g: u32) -> u32 {
    return 2u * (p.n / p.group_len) + 4u * g;
}

@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 256u;

var<workgroup> red: array<f32, 256>;

fn tree_sum(lid: u32) {
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
}

// grad_norm_partial (pass 1): scratch[g * P + w] = sum of grads[g * L + i]^2 over i = w*256 + k + r*(P*256) < L,
// k < 256, r >= 0 (L = group_len).
// bindings: 1 grads (n) read, 2 scratch (G * P) write.
// grid: (P = num_partials, G): workgroups of 256 (P <= 1024).
@group(0) @binding(1) var<storage, read> gn_grads: array<f32>;
@group(0) @binding(2) var<storage, read_write> gn_scratch: array<f32>;

@compute @workgroup_size(256)
fn grad_norm_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let stride = p.num_partials * WG;
    let base = wid.y * p.group_len;
    var s = 0.0;
    for (var i = wid.x * WG + lid; i < p.group_len; i = i + stride) {
        let g = gn_grads[base + i];
        s = s + g * g;
    }
    red[lid] = s;
    workgroupBarrier();
    tree_sum(lid);
    if (lid == 0u) {
        gn_scratch[wid.y * p.num_partials + wid.x] = red[0];
    }
}

// grad_norm_partial4: grad_norm_partial over vec4s (group_len a multiple of 4): scratch[g * P + w] = sum of |grads4|^2
// over vec4 index i = w*256 + k + r*(P*256) < L/4. Same partial count and tree; fewer, wider loads.
// bindings: 22 grads (n/4 vec4) read, 2 scratch (G * P) write.
// grid: (P = num_partials, G): workgroups of 256.
@group(0) @binding(22) var<storage, read> gn4_grads: array<vec4<f32>>;

@compute @workgroup_size(256)
fn grad_norm_partial4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let stride = p.num_partials * WG;
    let len4 = p.group_len / 4u;
    let base = wid.y * len4;
    var s = 0.0;
    for (var i = wid.x * WG + lid; i < len4; i = i + stride) {
        let g = gn4_grads[base + i];
        s = s + dot(g, g);
    }
    red[lid] = s;
    workgroupBarrier();
    tree_sum(lid);
    if (lid == 0u) {
        gn_scratch[wid.y * p.num_partials + wid.x] = red[0];
    }
}

// grad_norm_final (pass 2), per group g: norm[2g] = sqrt(sum of the group's scratch); norm[2g + 1] = clip scale:
//   max_norm <= 0: 1; else min(1, max_norm / (norm + 1e-6)). Then the step state s = state_index(g): a finite norm
//   applies the step (t += 1, beta1^t *= beta1, beta2^t *= beta2); a non-finite one skips it (skipped += 1).
// bindings: 3 scratch (G * P) read, 4 norm (6G) read_write, 15 hyper (AdamHyper: beta1, beta2) read.
// grid: (G): one workgroup of 256 per group.
@group(0) @binding(3) var<storage, read> gnf_scratch: array<f32>;
@group(0) @binding(4) var<storage, read_write> gnf_norm: array<f32>;
@group(0) @binding(15) var<uniform> gnf_hyper: AdamHyper;

@compute @workgroup_size(256)
fn grad_norm_final(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x;
    var s = 0.0;
    for (var i = lid; i < p.num_partials; i = i + WG) {
        s = s + gnf_scratch[g * p.num_partials + i];
    }
    red[lid] = s;
    workgroupBarrier();
    tree_sum(lid);
    if (lid == 0u) {
        let norm = sqrt(red[0]);
        var scale = 1.0;
        if (p.max_norm > 0.0) {
            scale = min(1.0, p.max_norm / (norm + 1e-6));
        }
        gnf_norm[2u * g] = norm;
        gnf_norm[2u * g + 1u] = scale;
        let st = state_index(g);
        if (is_finite(norm)) {
            gnf_norm[st] = gnf_norm[st] + 1.0;
            gnf_norm[st + 1u] = gnf_norm[st + 1u] * gnf_hyper.beta1;
            gnf_norm[st + 2u] = gnf_norm[st + 2u] * gnf_hyper.beta2;
        } else {
            gnf_norm[st + 3u] = gnf_norm[st + 3u] + 1.0;
        }
    }
}

// The updates' grid: (x, y = group, z) with element i = (z * nwg.x + x) * 256 + local of the group (z only for
// groups of more than 65535 workgroups). The group comes from the workgroup id, so its norm and step state are one
// load per workgroup (on CPU adapters a per-invocation index would make each of them a gather), and there is no
// per-element integer division.
fn update_index(lid: u32, wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.z * nwg.x + wid.x) * WG + lid;
}

// adamw_update, element j of group k (i = k * group_len + j), skipped when norm[2k] is not finite:
//   g = grads[i] * norm[2k + 1] (the group's clip scale); m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//   params -= lr * ((m / bc1) / (sqrt(v / bc2) + eps) + weight_decay * params), bc = 1 - beta^t from the step state
//   (grad_norm_final advanced t for this step).
// bindings: 5 params (n) read_write, 6 grads (n) read, 7 m (n) read_write, 8 v (n) read_write,
//   9 hyper (AdamHyper, 8 f32) read, 10 norm (6G: [L2 norm, grad scale] per group, then the step states) read.
// grid: (ceil(group_len / 256) [split with z past 65535], G, z), workgroup 256.
@group(0) @binding(5) var<storage, read_write> aw_params: array<f32>;
@group(0) @binding(6) var<storage, read> aw_grads: array<f32>;
@group(0) @binding(7) var<storage, read_write> aw_m: array<f32>;
@group(0) @binding(8) var<storage, read_write> aw_v: array<f32>;
@group(0) @binding(9) var<uniform> aw_hyper: AdamHyper;
@group(0) @binding(10) var<storage, read> aw_norm: array<f32>;

@compute @workgroup_size(256)
fn adamw_update(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let k = wid.y;
    let j = update_index(lid, wid, nwg);
    if (j >= p.group_len || !is_finite(aw_norm[2u * k])) { return; }
    let i = k * p.group_len + j;
    let h = aw_hyper;
    let st = state_index(k);
    let bias_correction1 = 1.0 - aw_norm[st + 1u];
    let bias_correction2 = 1.0 - aw_norm[st + 2u];
    let g = aw_grads[i] * aw_norm[2u * k + 1u];
    let m = h.beta1 * aw_m[i] + (1.0 - h.beta1) * g;
    let v = h.beta2 * aw_v[i] + (1.0 - h.beta2) * g * g;
    aw_m[i] = m;
    aw_v[i] = v;
    let mhat = m / bias_correction1;
    let vhat = v / bias_correction2;
    let param = aw_params[i];
    aw_params[i] = param - h.lr * (mhat / (sqrt(vhat) + h.eps) + h.weight_decay * param);
}

// adamw_update4: adamw_update on 4 consecutive elements per invocation, as vec4s (the same arithmetic per element),
// for groups whose length is a multiple of 4 (every arena-packed model). On CPU adapters each vec4 load or store
// shares one address computation and bounds check among 4 elements.
// bindings: 16 params (n/4 vec4) read_write, 17 grads read, 18 m read_write, 19 v read_write, 20 hyper, 21 norm read.
// grid: (ceil(group_len / 1024) [split with z past 65535], G, z), workgroup 256.
@group(0) @binding(16) var<storage, read_write> aw4_params: array<vec4<f32>>;
@group(0) @binding(17) var<storage, read> aw4_grads: array<vec4<f32>>;
@group(0) @binding(18) var<storage, read_write> aw4_m: array<vec4<f32>>;
@group(0) @binding(19) var<storage, read_write> aw4_v: array<vec4<f32>>;
@group(0) @binding(20) var<uniform> aw4_hyper: AdamHyper;
@group(0) @binding(21) var<storage, read> aw4_norm: array<f32>;

@compute @workgroup_size(256)
fn adamw_update4(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let k = wid.y;
    let j = update_index(lid, wid, nwg);
    if (j >= p.group_len / 4u || !is_finite(aw4_norm[2u * k])) { return; }
    let i = k * (p.group_len / 4u) + j;
    let h = aw4_hyper;
    let st = state_index(k);
    let bias_correction1 = 1.0 - aw4_norm[st + 1u];
    let bias_correction2 = 1.0 - aw4_norm[st + 2u];
    let g = aw4_grads[i] * aw4_norm[2u * k + 1u];
    let m = h.beta1 * aw4_m[i] + (1.0 - h.beta1) * g;
    let v = h.beta2 * aw4_v[i] + (1.0 - h.beta2) * g * g;
    aw4_m[i] = m;
    aw4_v[i] = v;
    let mhat = m / bias_correction1;
    let vhat = v / bias_correction2;
    let param = aw4_params[i];
    aw4_params[i] = param - h.lr * (mhat / (sqrt(vhat) + h.eps) + h.weight_decay * param);
}

// sgd_update: plain SGD behind the same clipping, with decoupled weight decay, skipped like adamw_update when the
// group's norm is not finite:
//   params -= lr * (grads[i] * scale + weight_decay * params)   (scale: the group's norm[2k + 1]; reads lr and
//   weight_decay from AdamHyper)
// bindings: 11 params (n) read_write, 12 grads (n) read, 13 hyper (AdamHyper, 8 f32) read, 14 norm (6G) read.
// grid: as adamw_update.
@group(0) @binding(11) var<storage, read_write> sgd_params: array<f32>;
@group(0) @binding(12) var<storage, read> sgd_grads: array<f32>;
@group(0) @binding(13) var<uniform> sgd_hyper: AdamHyper;
@group(0) @binding(14) var<storage, read> sgd_norm: array<f32>;

@compute @workgroup_size(256)
fn sgd_update(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let k = wid.y;
    let j = update_index(lid, wid, nwg);
    if (j >= p.group_len || !is_finite(sgd_norm[2u * k])) { return; }
    let i = k * p.group_len + j;
    let g = sgd_grads[i] * sgd_norm[2u * k + 1u];
    let param = sgd_params[i];
    sgd_params[i] = param - sgd_hyper.lr * (g + sgd_hyper.weight_decay * param);
}

// sgd_momentum_update: SGD with heavy-ball momentum (PyTorch's, dampening 0) behind the same clipping, skipped like
// adamw_update when the group's norm is not finite:
//   g = grads[i] * scale;  buf = momentum * buf + g;  params -= lr * (buf + weight_decay * params)
// bindings: 23 params (n) read_write, 24 grads (n) read, 25 buf (n) read_write, 26 hyper (AdamHyper) read,
//   27 norm (6G) read.
// grid: as adamw_update.
@group(0) @binding(23) var<storage, read_write> sgdm_params: array<f32>;
@group(0) @binding(24) var<storage, read> sgdm_grads: array<f32>;
@group(0) @binding(25) var<storage, read_write> sgdm_buf: array<f32>;
@group(0) @binding(26) var<uniform> sgdm_hyper: AdamHyper;
@group(0) @binding(27) var<storage, read> sgdm_norm: array<f32>;

@compute @workgroup_size(256)
fn sgd_momentum_update(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let k = wid.y;
    let j = update_index(lid, wid, nwg);
    if (j >= p.group_len || !is_finite(sgdm_norm[2u * k])) { return; }
    let i = k * p.group_len + j;
    let g = sgdm_grads[i] * sgdm_norm[2u * k + 1u];
    let buf = sgdm_hyper.momentum * sgdm_buf[i] + g;
    sgdm_buf[i] = buf;
    let param = sgdm_params[i];
    sgdm_params[i] = param - sgdm_hyper.lr * (buf + sgdm_hyper.weight_decay * param);
}
