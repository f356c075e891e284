// Optimizer op family: the global gradient L2 norm with its clip scale (a deterministic two-pass reduction), the
// AdamW update (decoupled weight decay) and plain SGD. The updates read their hyperparameters and the clip scale from
// buffers (AdamHyper as a uniform block), so the recorded plan never changes between steps: the host only rewrites
// the 8-float AdamHyper block.
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

// grad_norm_final (pass 2), per group g: norm[2g] = sqrt(sum of the group's scratch); norm[2g + 1] = clip scale:
//   max_norm <= 0: 1; else min(1, max_norm / (norm + 1e-6)).
// bindings: 3 scratch (G * P) read, 4 norm (2G) write.
// grid: (G): one workgroup of 256 per group.
@group(0) @binding(3) var<storage, read> gnf_scratch: array<f32>;
@group(0) @binding(4) var<storage, read_write> gnf_norm: array<f32>;

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
    }
}

// The 8-float hyperparameter block the host rewrites before each step (bias corrections are 1 - beta^step).
struct AdamHyper {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bias_correction1: f32,
    bias_correction2: f32,
    _pad: f32,
}

// adamw_update: g = grads[i] * norm[2 * (i / group_len) + 1] (its group's clip scale); m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//   params -= lr * ((m / bc1) / (sqrt(v / bc2) + eps) + weight_decay * params)
// bindings: 5 params (n) read_write, 6 grads (n) read, 7 m (n) read_write, 8 v (n) read_write,
//   9 hyper (AdamHyper, 8 f32) read, 10 norm (2G: [L2 norm, grad scale] per group) read.
// grid: one thread per element, workgroup 256, grid_1d(n, 256); i = gid.x + gid.y * nwg.x * 256.
@group(0) @binding(5) var<storage, read_write> aw_params: array<f32>;
@group(0) @binding(6) var<storage, read> aw_grads: array<f32>;
@group(0) @binding(7) var<storage, read_write> aw_m: array<f32>;
@group(0) @binding(8) var<storage, read_write> aw_v: array<f32>;
@group(0) @binding(9) var<uniform> aw_hyper: AdamHyper;
@group(0) @binding(10) var<storage, read> aw_norm: array<f32>;

@compute @workgroup_size(256)
fn adamw_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.n) { return; }
    let h = aw_hyper;
    let g = aw_grads[i] * aw_norm[2u * (i / p.group_len) + 1u];
    let m = h.beta1 * aw_m[i] + (1.0 - h.beta1) * g;
    let v = h.beta2 * aw_v[i] + (1.0 - h.beta2) * g * g;
    aw_m[i] = m;
    aw_v[i] = v;
    let mhat = m / h.bias_correction1;
    let vhat = v / h.bias_correction2;
    let param = aw_params[i];
    aw_params[i] = param - h.lr * (mhat / (sqrt(vhat) + h.eps) + h.weight_decay * param);
}

// sgd_update: plain SGD behind the same clipping, with decoupled weight decay:
//   params -= lr * (grads[i] * scale + weight_decay * params)   (scale: the group's norm[2g + 1]; reads lr and
//   weight_decay from AdamHyper)
// bindings: 11 params (n) read_write, 12 grads (n) read, 13 hyper (AdamHyper, 8 f32) read, 14 norm (2G) read.
// grid: one thread per element, workgroup 256, grid_1d(n, 256); i = gid.x + gid.y * nwg.x * 256.
@group(0) @binding(11) var<storage, read_write> sgd_params: array<f32>;
@group(0) @binding(12) var<storage, read> sgd_grads: array<f32>;
@group(0) @binding(13) var<uniform> sgd_hyper: AdamHyper;
@group(0) @binding(14) var<storage, read> sgd_norm: array<f32>;

@compute @workgroup_size(256)
fn sgd_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.n) { return; }
    let g = sgd_grads[i] * sgd_norm[2u * (i / p.group_len) + 1u];
    let param = sgd_params[i];
    sgd_params[i] = param - sgd_hyper.lr * (g + sgd_hyper.weight_decay * param);
}
