// Elementwise op family: GELU (GPT-2's tanh form), ReLU, residual add, the fill used to zero buffers, and the
// transpose that gives a linear layer's weight in the layout its forward product reads fastest (`ops::matmul`).
// Forward and backward side by side. Backward kernels ACCUMULATE into their d-outputs (+=), like llm.c, so a tensor
// that feeds two consumers collects both gradients.
//
// All entry points: workgroup 256, 1-D grid folded into (x, y) by `grid_1d`; element i = gid.x + gid.y * nwg.x * 256.

struct Params {
    n: u32,        // number of elements (transpose4: of 4x4 blocks)
    value: f32,    // fill value (fill only)
    rows: u32,     // transpose4 only: rows M of its input
    cols: u32,     // transpose4 only: columns N of its input
}

@group(0) @binding(0) var<uniform> p: Params;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

const GELU_SCALE: f32 = 0.7978845608028654; // sqrt(2/pi)

// gelu_forward: out[i] = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
// bindings: 1 inp (N) read, 2 out (N) write.
@group(0) @binding(1) var<storage, read> gelu_inp: array<f32>;
@group(0) @binding(2) var<storage, read_write> gelu_out: array<f32>;

@compute @workgroup_size(256)
fn gelu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let x = gelu_inp[i];
    let cube = 0.044715 * x * x * x;
    gelu_out[i] = 0.5 * x * (1.0 + tanh(GELU_SCALE * (x + cube)));
}

// gelu_backward: dinp[i] += dout[i] * gelu'(inp[i])
// bindings: 3 inp (N) read, 4 dout (N) read, 5 dinp (N) read_write.
@group(0) @binding(3) var<storage, read> gelub_inp: array<f32>;
@group(0) @binding(4) var<storage, read> gelub_dout: array<f32>;
@group(0) @binding(5) var<storage, read_write> gelub_dinp: array<f32>;

@compute @workgroup_size(256)
fn gelu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let x = gelub_inp[i];
    let cube = 0.044715 * x * x * x;
    let tanh_arg = GELU_SCALE * (x + cube);
    let tanh_out = tanh(tanh_arg);
    let cosh_out = cosh(tanh_arg);
    let sech2 = 1.0 / (cosh_out * cosh_out);
    let local_grad = 0.5 * (1.0 + tanh_out) + x * 0.5 * sech2 * GELU_SCALE * (1.0 + 3.0 * 0.044715 * x * x);
    gelub_dinp[i] += local_grad * gelub_dout[i];
}

// relu_forward: out[i] = max(x, 0)
// bindings: 6 inp (N) read, 7 out (N) write.
@group(0) @binding(6) var<storage, read> relu_inp: array<f32>;
@group(0) @binding(7) var<storage, read_write> relu_out: array<f32>;

@compute @workgroup_size(256)
fn relu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    relu_out[i] = max(relu_inp[i], 0.0);
}

// relu_backward: dinp[i] += dout[i] * (inp[i] > 0)
// bindings: 8 inp (N) read, 9 dout (N) read, 10 dinp (N) read_write.
@group(0) @binding(8) var<storage, read> relub_inp: array<f32>;
@group(0) @binding(9) var<storage, read> relub_dout: array<f32>;
@group(0) @binding(10) var<storage, read_write> relub_dinp: array<f32>;

@compute @workgroup_size(256)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    if (relub_inp[i] > 0.0) {
        relub_dinp[i] += relub_dout[i];
    }
}

// residual_forward: out[i] = inp1[i] + inp2[i]
// bindings: 11 inp1 (N) read, 12 inp2 (N) read, 13 out (N) write.
@group(0) @binding(11) var<storage, read> res_inp1: array<f32>;
@group(0) @binding(12) var<storage, read> res_inp2: array<f32>;
@group(0) @binding(13) var<storage, read_write> res_out: array<f32>;

@compute @workgroup_size(256)
fn residual_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    res_out[i] = res_inp1[i] + res_inp2[i];
}

// residual_backward: dinp1[i] += dout[i]; dinp2[i] += dout[i]
// bindings: 14 dout (N) read, 15 dinp1 (N) read_write, 16 dinp2 (N) read_write.
@group(0) @binding(14) var<storage, read> resb_dout: array<f32>;
@group(0) @binding(15) var<storage, read_write> resb_dinp1: array<f32>;
@group(0) @binding(16) var<storage, read_write> resb_dinp2: array<f32>;

@compute @workgroup_size(256)
fn residual_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let d = resb_dout[i];
    resb_dinp1[i] += d;
    resb_dinp2[i] += d;
}

// fill: out[i] = value (zeroing gradient buffers inside the step's compute pass)
// bindings: 17 out (N) write.
@group(0) @binding(17) var<storage, read_write> fill_out: array<f32>;

@compute @workgroup_size(256)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    fill_out[i] = p.value;
}

// transpose4: out (N, M) = inp (M, N)^T, by 4x4 blocks (M and N multiples of 4): invocation i reads block (bi, bj) =
// (i / (N/4), i % (N/4)) as 4 vec4s, rows 4 bi.. of inp at column 4 bj, and writes them as out's rows 4 bj.. at
// column 4 bi. Four vec4 loads and stores per 16 elements (on lavapipe each load is a loop over the lanes).
// bindings: 18 inp (M, N/4) vec4 read, 19 out (N, M/4) vec4 write. grid: grid_1d(M N / 16, 256).
@group(0) @binding(18) var<storage, read> tr_inp: array<vec4<f32>>;
@group(0) @binding(19) var<storage, read_write> tr_out: array<vec4<f32>>;

@compute @workgroup_size(256)
fn transpose4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n) { return; }
    let n4 = p.cols / 4u;
    let m4 = p.rows / 4u;
    let bi = i / n4;
    let bj = i - bi * n4;
    let r = 4u * bi * n4 + bj; // inp row 4 bi, vec4 column bj
    let r0 = tr_inp[r];
    let r1 = tr_inp[r + n4];
    let r2 = tr_inp[r + 2u * n4];
    let r3 = tr_inp[r + 3u * n4];
    let o = 4u * bj * m4 + bi; // out row 4 bj, vec4 column bi
    tr_out[o] = vec4<f32>(r0.x, r1.x, r2.x, r3.x);
    tr_out[o + m4] = vec4<f32>(r0.y, r1.y, r2.y, r3.y);
    tr_out[o + 2u * m4] = vec4<f32>(r0.z, r1.z, r2.z, r3.z);
    tr_out[o + 3u * m4] = vec4<f32>(r0.w, r1.w, r2.w, r3.w);
}
