// The body of dpo3d's CPU-adapter GEMM (gemm_v4nn in shaders/matmul.wgsl: a 4-row x 8-column block per invocation,
// operands read as vec4s) in three forms, for examples/lavapipe_ceiling.rs. They time where lavapipe spends a GEMM:
//   full       the kernel as shipped: A and B loaded from storage buffers (a real C = A @ B; checked on the CPU)
//   a_only     B's loads replaced by arithmetic on the loop counter: A's 4 vec4 loads per 4 k remain
//   no_loads   both replaced: the multiply-adds, the loop and the stores alone (the arithmetic ceiling)
// Only `full` computes a product; the other two exist to be timed. A (M, K), B (K, N), C (M, N), all row-major;
// M a multiple of 4, N of 128, K of 4. grid (N / 128, M / 4), workgroup 16.

struct Params { m: u32, n: u32, k: u32, pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

struct Block { c00: vec4<f32>, c01: vec4<f32>, c10: vec4<f32>, c11: vec4<f32>,
               c20: vec4<f32>, c21: vec4<f32>, c30: vec4<f32>, c31: vec4<f32> }

// acc += x (4 rows at one k4, as vec4s over k) times the B rows y0/y1 (columns n0..n0+3 / n0+4..n0+7) at k = 4 k4 + j.
fn step(acc: Block, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, j: u32,
        y0: vec4<f32>, y1: vec4<f32>) -> Block {
    var r = acc;
    r.c00 += x0[j] * y0; r.c01 += x0[j] * y1;
    r.c10 += x1[j] * y0; r.c11 += x1[j] * y1;
    r.c20 += x2[j] * y0; r.c21 += x2[j] * y1;
    r.c30 += x3[j] * y0; r.c31 += x3[j] * y1;
    return r;
}

fn store_row(m: u32, n: u32, v: vec4<f32>) {
    let i = m * p.n + n;
    c[i] = v.x; c[i + 1u] = v.y; c[i + 2u] = v.z; c[i + 3u] = v.w;
}

fn store(m0: u32, n0: u32, r: Block) {
    store_row(m0, n0, r.c00); store_row(m0, n0 + 4u, r.c01);
    store_row(m0 + 1u, n0, r.c10); store_row(m0 + 1u, n0 + 4u, r.c11);
    store_row(m0 + 2u, n0, r.c20); store_row(m0 + 2u, n0 + 4u, r.c21);
    store_row(m0 + 3u, n0, r.c30); store_row(m0 + 3u, n0 + 4u, r.c31);
}

@compute @workgroup_size(16)
fn full(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let n0 = (wid.x * 16u + lid.x) * 8u;
    let m0 = wid.y * 4u;
    let k4s = p.k / 4u;
    let n4s = p.n / 4u;
    let a0 = m0 * k4s;
    var acc: Block;
    for (var k4 = 0u; k4 < k4s; k4++) {
        let x0 = a[a0 + k4]; let x1 = a[a0 + k4s + k4]; let x2 = a[a0 + 2u * k4s + k4]; let x3 = a[a0 + 3u * k4s + k4];
        for (var j = 0u; j < 4u; j++) {
            let kb = (k4 * 4u + j) * n4s + n0 / 4u;
            acc = step(acc, x0, x1, x2, x3, j, b[kb], b[kb + 1u]);
        }
    }
    store(m0, n0, acc);
}

@compute @workgroup_size(16)
fn a_only(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let n0 = (wid.x * 16u + lid.x) * 8u;
    let m0 = wid.y * 4u;
    let k4s = p.k / 4u;
    let a0 = m0 * k4s;
    var acc: Block;
    for (var k4 = 0u; k4 < k4s; k4++) {
        let x0 = a[a0 + k4]; let x1 = a[a0 + k4s + k4]; let x2 = a[a0 + 2u * k4s + k4]; let x3 = a[a0 + 3u * k4s + k4];
        for (var j = 0u; j < 4u; j++) {
            let y0 = vec4<f32>(f32(k4 * 4u + j + n0));
            acc = step(acc, x0, x1, x2, x3, j, y0, y0 * 0.5);
        }
    }
    acc.c00 += b[0] * 1e-30; // keeps binding 2 in the entry point's layout
    store(m0, n0, acc);
}

@compute @workgroup_size(16)
fn no_loads(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let n0 = (wid.x * 16u + lid.x) * 8u;
    let m0 = wid.y * 4u;
    let k4s = p.k / 4u;
    var acc: Block;
    for (var k4 = 0u; k4 < k4s; k4++) {
        let x0 = vec4<f32>(f32(k4 + m0)); let x1 = x0 + 1.0; let x2 = x0 * 2.0; let x3 = x0 * 3.0;
        for (var j = 0u; j < 4u; j++) {
            let y0 = vec4<f32>(f32(k4 * 4u + j + n0));
            acc = step(acc, x0, x1, x2, x3, j, y0, y0 * 0.5);
        }
    }
    acc.c00 += a[0] * 1e-30 + b[0] * 1e-30; // keeps bindings 1 and 2 in the layout
    store(m0, n0, acc);
}
