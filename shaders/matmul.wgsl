// Matmul op family: one batched, strided GEMM in several implementations (naive; 16x16 shared-memory tiled; 64x64
// and 128x128 register-blocked for GPUs; skinny, vec4 (4x8) and vec8 (8x16) register-blocked for CPU adapters such
// as lavapipe; subgroup forms of the vec4 family, one of them for few columns, live in matmul_subgroup.wgsl), plus
// the column sum that gives a linear layer's bias gradient. Which kernel runs for a given product is chosen by
// measurement on the adapter in hand (src/gpu/tune.rs), never by a fixed rule.
//
//   C[b](m, n) = alpha * sum_k A[b](m, k) * B[b](k, n)  + beta * C[b](m, n)  + bias[b * bias_bs + n]
//
// Every matrix is addressed through (offset, row stride, column stride, batch stride) in elements, so A^T or B^T is
// just a choice of strides and the linear layer's three products (forward, dinp, dweight) are all this one kernel.
// Batches may come in groups (`inner`, each operand's inner stride: a_start below), which is how causal attention's
// per-head products run as one GEMM over (sequence, head) pairs, and the `causal` bits zero C's upper triangle or let
// a kernel skip A's zero triangle.
// beta = 0 never reads C (so stale NaNs in an output buffer cannot leak in); beta = 1 accumulates, which is how the
// backward products honour the `+=` convention. bias (length N per batch) is added only when has_bias = 1; otherwise
// the bias binding is bound to some read-only input and never read. bias_bs = 0 shares one bias across the batch;
// replicated linear layers (several independent models in one dispatch) give each batch its own.
//
// Summation order is k = 0, 1, ..., K-1 in every kernel (and in the CPU mirror, src/reference/matmul.rs), so the
// kernels differ from the reference only by rounding (fused multiply-adds).

struct Params {
    m: u32,         // rows of C and A
    n: u32,         // columns of C and B
    k: u32,         // the contracted dimension
    batch: u32,     // number of independent products (grid z)
    a_off: u32,     // A[b](m, k) = a[a_off + b * a_bs + m * a_rs + k * a_cs]
    a_rs: u32,
    a_cs: u32,
    a_bs: u32,
    b_off: u32,     // B[b](k, n) = b[b_off + b * b_bs + k * b_rs + n * b_cs]
    b_rs: u32,
    b_cs: u32,
    b_bs: u32,
    c_off: u32,     // C[b](m, n) = c[c_off + b * c_bs + m * c_rs + n * c_cs]
    c_rs: u32,
    c_cs: u32,
    c_bs: u32,
    alpha: f32,
    beta: f32,
    has_bias: u32,  // 1: add bias[b * bias_bs + n]
    bias_bs: u32,   // the bias's batch stride (0: one bias for every batch)
    splits: u32,    // split-K only: the K range is cut into `splits` chunks of `k_chunk` (a multiple of 16)
    k_chunk: u32,
    act: u32,       // the GELU epilogue (see `store`'s comment below): 0 none, 1 ACT_GELU, 2 ACT_DGELU
    causal: u32,    // causal attention's products: CAUSAL_* bits below (0: a plain product)
    inner: u32,     // batches come in groups of `inner` (attention's heads): batch b is (b / inner, b % inner) ...
    a_is: u32,      // ... and its matrices start at x_off + (b / inner) * x_bs + (b % inner) * x_is
    b_is: u32,
    c_is: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// Where batch bt's A, B and C start (two-level batches: attention's (batch, head) pairs, whose matrices lie at
// b * T * 3C + h * HS, which no single stride reaches).
fn a_start(bt: u32) -> u32 {
    return p.a_off + (bt / p.inner) * p.a_bs + (bt % p.inner) * p.a_is;
}

fn b_start(bt: u32) -> u32 {
    return p.b_off + (bt / p.inner) * p.b_bs + (bt % p.inner) * p.b_is;
}

fn c_start(bt: u32) -> u32 {
    return p.c_off + (bt / p.inner) * p.c_bs + (bt % p.inner) * p.c_is;
}

// The causal bits. CAUSAL_C: C(m, n) for n > m is written as 0 (attention's scores above the diagonal), whatever the
// product, alpha, beta and bias (not combined with a GELU epilogue). CAUSAL_A_LOWER / CAUSAL_A_UPPER: the caller
// promises A(m, k) = 0 for k > m (lower triangular) or for k < m (upper), and a kernel may skip those terms (only the
// subgroup-rows kernels do); the sums are the same, the skipped terms being products with exact zeros.
const CAUSAL_C: u32 = 1u;
const CAUSAL_A_LOWER: u32 = 2u;
const CAUSAL_A_UPPER: u32 = 4u;

// The value stored at C(m, n): v, or 0 above the diagonal of a CAUSAL_C product.
fn causal_mask(m: u32, n: u32, v: f32) -> f32 {
    return select(v, 0.0, (p.causal & CAUSAL_C) != 0u && n > m);
}

// alpha * acc + beta * c_old + bias, the common epilogue (c_old is only meaningful when beta != 0).
fn epilogue(acc: f32, c_old: f32, bias: f32) -> f32 {
    var v = p.alpha * acc;
    if (p.beta != 0.0) {
        v += p.beta * c_old;
    }
    return v + bias;
}

// The GELU epilogues, which fuse a GPT MLP's activation into its two products (llm.c's gelu_fusion). Every GEMM
// kernel has an `aux` binding laid out like C (same offset and strides) and, at each output element ci:
//   act = 0: C[ci] = epilogue(acc, ...)                              (aux is bound to a stand-in and never touched)
//   ACT_GELU (c_fc's forward): C[ci] = epilogue(acc, ...) (the pre-activation), then aux[ci] = gelu(C[ci])
//   ACT_DGELU (c_proj's dinp): C[ci] = epilogue(acc * gelu'(aux[ci]), ...), aux = the pre-activation (read only)
// gelu and gelu' are elementwise.wgsl's gelu_forward / gelu_backward, written the same way, so the fused products
// give the unfused pair's results.
const ACT_GELU: u32 = 1u;
const ACT_DGELU: u32 = 2u;
const GELU_SCALE: f32 = 0.7978845608028654; // sqrt(2/pi)

fn gelu(x: f32) -> f32 {
    let cube = 0.044715 * x * x * x;
    return 0.5 * x * (1.0 + tanh(GELU_SCALE * (x + cube)));
}

fn gelu4(x: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(gelu(x.x), gelu(x.y), gelu(x.z), gelu(x.w));
}

fn gelu_grad4(x: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(gelu_grad(x.x), gelu_grad(x.y), gelu_grad(x.z), gelu_grad(x.w));
}

fn gelu_grad(x: f32) -> f32 {
    let cube = 0.044715 * x * x * x;
    let tanh_arg = GELU_SCALE * (x + cube);
    let tanh_out = tanh(tanh_arg);
    let cosh_out = cosh(tanh_arg);
    let sech2 = 1.0 / (cosh_out * cosh_out);
    return 0.5 * (1.0 + tanh_out) + x * 0.5 * sech2 * GELU_SCALE * (1.0 + 3.0 * 0.044715 * x * x);
}

// ---------------------------------------------------------------------------------------------------------------
// gemm_naive: one invocation per output element, K-loop straight from global memory.
// bindings: 1 a read, 2 b read, 3 c read_write, 4 bias (N) read (read only when has_bias = 1),
// 31 aux read_write (see the GELU epilogues).
// grid: (ceil(N/16), ceil(M/16), batch), workgroup (16, 16): x runs along n, y along m.
@group(0) @binding(1) var<storage, read> na_a: array<f32>;
@group(0) @binding(2) var<storage, read> na_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> na_c: array<f32>;
@group(0) @binding(4) var<storage, read> na_bias: array<f32>;
@group(0) @binding(31) var<storage, read_write> na_aux: array<f32>;

@compute @workgroup_size(16, 16)
fn gemm_naive(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    let m = gid.y;
    let bt = gid.z;
    if (m >= p.m || n >= p.n) { return; }
    var ai = a_start(bt) + m * p.a_rs;
    var bi = b_start(bt) + n * p.b_cs;
    var acc = 0.0;
    for (var k = 0u; k < p.k; k++) {
        acc += na_a[ai] * na_b[bi];
        ai += p.a_cs;
        bi += p.b_rs;
    }
    let ci = c_start(bt) + m * p.c_rs + n * p.c_cs;
    var c_old = 0.0;
    if (p.beta != 0.0) { c_old = na_c[ci]; }
    var bias = 0.0;
    if (p.has_bias == 1u) { bias = na_bias[bt * p.bias_bs + n]; }
    var g = 1.0;
    if (p.act == ACT_DGELU) { g = gelu_grad(na_aux[ci]); }
    let v = causal_mask(m, n, epilogue(acc * g, c_old, bias));
    na_c[ci] = v;
    if (p.act == ACT_GELU) { na_aux[ci] = gelu(v); }
}

// ---------------------------------------------------------------------------------------------------------------
// gemm_tiled16: 16x16 output tile per workgroup, one output per invocation; A and B stream through 16x16 tiles of
// workgroup memory (2 KiB). Loads are arranged so that neighbouring invocations read neighbouring addresses
// whichever of A's (or B's) strides is the unit one.
// bindings: 5 a read, 6 b read, 7 c read_write, 8 bias (N) read (read only when has_bias = 1),
// 32 aux read_write.
// grid: (ceil(N/16), ceil(M/16), batch), workgroup (16, 16).
@group(0) @binding(5) var<storage, read> t16_a: array<f32>;
@group(0) @binding(6) var<storage, read> t16_b: array<f32>;
@group(0) @binding(7) var<storage, read_write> t16_c: array<f32>;
@group(0) @binding(8) var<storage, read> t16_bias: array<f32>;
@group(0) @binding(32) var<storage, read_write> t16_aux: array<f32>;

var<workgroup> t16_as: array<f32, 256>; // [m][k] of the current K-tile
var<workgroup> t16_bs: array<f32, 256>; // [k][n]

fn t16_load_a(base: u32, m: u32, k: u32) -> f32 {
    if (m < p.m && k < p.k) { return t16_a[base + m * p.a_rs + k * p.a_cs]; }
    return 0.0;
}

fn t16_load_b(base: u32, k: u32, n: u32) -> f32 {
    if (k < p.k && n < p.n) { return t16_b[base + k * p.b_rs + n * p.b_cs]; }
    return 0.0;
}

@compute @workgroup_size(16, 16)
fn gemm_tiled16(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tx = lid.x;
    let ty = lid.y;
    let m0 = wid.y * 16u;
    let n0 = wid.x * 16u;
    let bt = wid.z;
    let a_base = a_start(bt);
    let b_base = b_start(bt);
    var acc = 0.0;
    for (var k0 = 0u; k0 < p.k; k0 += 16u) {
        if (p.a_cs == 1u) {
            t16_as[ty * 16u + tx] = t16_load_a(a_base, m0 + ty, k0 + tx);   // x along k: contiguous rows
        } else {
            t16_as[tx * 16u + ty] = t16_load_a(a_base, m0 + tx, k0 + ty);   // x along m: A stored transposed
        }
        if (p.b_cs == 1u) {
            t16_bs[ty * 16u + tx] = t16_load_b(b_base, k0 + ty, n0 + tx);   // x along n: contiguous rows
        } else {
            t16_bs[tx * 16u + ty] = t16_load_b(b_base, k0 + tx, n0 + ty);   // x along k: B stored transposed
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk++) {
            acc += t16_as[ty * 16u + kk] * t16_bs[kk * 16u + tx];
        }
        workgroupBarrier();
    }
    let m = m0 + ty;
    let n = n0 + tx;
    if (m >= p.m || n >= p.n) { return; }
    let ci = c_start(bt) + m * p.c_rs + n * p.c_cs;
    var c_old = 0.0;
    if (p.beta != 0.0) { c_old = t16_c[ci]; }
    var bias = 0.0;
    if (p.has_bias == 1u) { bias = t16_bias[bt * p.bias_bs + n]; }
    var g = 1.0;
    if (p.act == ACT_DGELU) { g = gelu_grad(t16_aux[ci]); }
    let v = causal_mask(m, n, epilogue(acc * g, c_old, bias));
    t16_c[ci] = v;
    if (p.act == ACT_GELU) { t16_aux[ci] = gelu(v); }
}

// ---------------------------------------------------------------------------------------------------------------
// gemm_blocked64: 64x64 output tile per workgroup of 256 invocations, each computing a 4x4 block in registers
// (rows 4*ty..4*ty+3, columns 4*tx..4*tx+3 of the tile). Per K-tile of 16, A (64x16) and B (16x64) are staged in
// workgroup memory as vec4s along m and n (8 KiB), so the inner loop is two vec4 loads for 16 multiply-adds.
// Edges (any M, N, K) are handled by zero-filling out-of-range tile elements and masking the stores.
// bindings: 9 a read, 10 b read, 11 c read_write, 12 bias (N) read (read only when has_bias = 1),
// 33 aux read_write.
// grid: (ceil(N/64), ceil(M/64), batch), workgroup (16, 16).
@group(0) @binding(9) var<storage, read> b64_a: array<f32>;
@group(0) @binding(10) var<storage, read> b64_b: array<f32>;
@group(0) @binding(11) var<storage, read_write> b64_c: array<f32>;
@group(0) @binding(12) var<storage, read> b64_bias: array<f32>;
@group(0) @binding(33) var<storage, read_write> b64_aux: array<f32>;

var<workgroup> b64_as: array<vec4<f32>, 256>; // [k][m / 4]: 16 x 64 floats
var<workgroup> b64_bs: array<vec4<f32>, 256>; // [k][n / 4]: 16 x 64 floats

// Store one row (4 columns from n) of a thread's 4x4 block, masked at the matrix edge.
fn b64_store_row(c_base: u32, bias_base: u32, m: u32, n: u32, row: vec4<f32>) {
    if (m >= p.m) { return; }
    for (var j = 0u; j < 4u; j++) {
        let nj = n + j;
        if (nj < p.n) {
            let ci = c_base + m * p.c_rs + nj * p.c_cs;
            var c_old = 0.0;
            if (p.beta != 0.0) { c_old = b64_c[ci]; }
            var bias = 0.0;
            if (p.has_bias == 1u) { bias = b64_bias[bias_base + nj]; }
            var g = 1.0;
            if (p.act == ACT_DGELU) { g = gelu_grad(b64_aux[ci]); }
            let v = causal_mask(m, nj, epilogue(row[j] * g, c_old, bias));
            b64_c[ci] = v;
            if (p.act == ACT_GELU) { b64_aux[ci] = gelu(v); }
        }
    }
}

// The 4x4 block of invocation (tx, ty) of the 64x64 tile at (m0, n0), batch bt, summed over k in [k_begin, k_end).
struct B64Acc {
    r0: vec4<f32>,
    r1: vec4<f32>,
    r2: vec4<f32>,
    r3: vec4<f32>,
}

fn b64_accumulate(tx: u32, ty: u32, tid: u32, m0: u32, n0: u32, bt: u32, k_begin: u32, k_end: u32) -> B64Acc {
    let a_base = a_start(bt);
    let b_base = b_start(bt);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = k_begin; k0 < k_end; k0 += 16u) {
        // Stage the 64x16 A tile and the 16x64 B tile, 4 elements per invocation each. Consecutive invocations
        // take consecutive elements along whichever dimension has unit stride in global memory.
        for (var r = 0u; r < 4u; r++) {
            let idx = tid + r * 256u;
            var kk: u32;
            var mm: u32;
            if (p.a_cs == 1u) { kk = idx % 16u; mm = idx / 16u; } else { mm = idx % 64u; kk = idx / 64u; }
            let gm = m0 + mm;
            let gk = k0 + kk;
            var v = 0.0;
            if (gm < p.m && gk < k_end) { v = b64_a[a_base + gm * p.a_rs + gk * p.a_cs]; }
            b64_as[kk * 16u + mm / 4u][mm % 4u] = v;
        }
        for (var r = 0u; r < 4u; r++) {
            let idx = tid + r * 256u;
            var kk: u32;
            var nn: u32;
            if (p.b_cs == 1u) { nn = idx % 64u; kk = idx / 64u; } else { kk = idx % 16u; nn = idx / 16u; }
            let gn = n0 + nn;
            let gk = k0 + kk;
            var v = 0.0;
            if (gk < k_end && gn < p.n) { v = b64_b[b_base + gk * p.b_rs + gn * p.b_cs]; }
            b64_bs[kk * 16u + nn / 4u][nn % 4u] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk++) {
            let av = b64_as[kk * 16u + ty];
            let bv = b64_bs[kk * 16u + tx];
            acc0 += av.x * bv;
            acc1 += av.y * bv;
            acc2 += av.z * bv;
            acc3 += av.w * bv;
        }
        workgroupBarrier();
    }
    return B64Acc(acc0, acc1, acc2, acc3);
}

@compute @workgroup_size(16, 16)
fn gemm_blocked64(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let m0 = wid.y * 64u;
    let n0 = wid.x * 64u;
    let bt = wid.z;
    let acc = b64_accumulate(lid.x, lid.y, tid, m0, n0, bt, 0u, p.k);
    let c_base = c_start(bt);
    let bias_base = bt * p.bias_bs;
    let m = m0 + lid.y * 4u;
    let n = n0 + lid.x * 4u;
    b64_store_row(c_base, bias_base, m, n, acc.r0);
    b64_store_row(c_base, bias_base, m + 1u, n, acc.r1);
    b64_store_row(c_base, bias_base, m + 2u, n, acc.r2);
    b64_store_row(c_base, bias_base, m + 3u, n, acc.r3);
}

// gemm_b64_splitk: Blocked64 over one chunk of K, for products with few output tiles and a long K (a linear
// layer's weight gradient: K = B*T rows): workgroup z = bt * splits + s sums k in [s * k_chunk, (s+1) * k_chunk)
// and writes the raw sums to part[((s * batch + bt) * M + m) * N + n]; gemm_splitk_reduce then adds the chunks in
// order s = 0, 1, ... and applies the epilogue. The result is deterministic; it differs from the one-pass kernels
// only by rounding (the chunks are summed separately).
// bindings: 9 a read, 10 b read, 27 part (splits * batch * M * N) read_write.
// grid: (ceil(N/64), ceil(M/64), batch * splits), workgroup (16, 16).
@group(0) @binding(27) var<storage, read_write> sk64_part: array<f32>;

@compute @workgroup_size(16, 16)
fn gemm_b64_splitk(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let m0 = wid.y * 64u;
    let n0 = wid.x * 64u;
    let bt = wid.z / p.splits;
    let s = wid.z % p.splits;
    let k_begin = s * p.k_chunk;
    let acc = b64_accumulate(lid.x, lid.y, tid, m0, n0, bt, k_begin, min(p.k, k_begin + p.k_chunk));
    let m = m0 + lid.y * 4u;
    let n = n0 + lid.x * 4u;
    let base = (s * p.batch + bt) * p.m;
    let rows = array<vec4<f32>, 4>(acc.r0, acc.r1, acc.r2, acc.r3);
    for (var i = 0u; i < 4u; i++) {
        if (m + i < p.m) {
            for (var j = 0u; j < 4u; j++) {
                if (n + j < p.n) { sk64_part[(base + m + i) * p.n + n + j] = rows[i][j]; }
            }
        }
    }
}

// gemm_splitk_reduce: C[b](m, n) = epilogue(sum over s of part[((s * batch + b) * M + m) * N + n]), s ascending.
// bindings: 28 part read, 29 c read_write, 30 bias (N) read (read only when has_bias = 1),
// 34 aux read_write.
// grid: (ceil(N/16), ceil(M/16), batch), workgroup (16, 16).
@group(0) @binding(28) var<storage, read> skr_part: array<f32>;
@group(0) @binding(29) var<storage, read_write> skr_c: array<f32>;
@group(0) @binding(30) var<storage, read> skr_bias: array<f32>;
@group(0) @binding(34) var<storage, read_write> skr_aux: array<f32>;

@compute @workgroup_size(16, 16)
fn gemm_splitk_reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    let m = gid.y;
    let bt = gid.z;
    if (m >= p.m || n >= p.n) { return; }
    var acc = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        acc += skr_part[((s * p.batch + bt) * p.m + m) * p.n + n];
    }
    let ci = c_start(bt) + m * p.c_rs + n * p.c_cs;
    var c_old = 0.0;
    if (p.beta != 0.0) { c_old = skr_c[ci]; }
    var bias = 0.0;
    if (p.has_bias == 1u) { bias = skr_bias[bt * p.bias_bs + n]; }
    var g = 1.0;
    if (p.act == ACT_DGELU) { g = gelu_grad(skr_aux[ci]); }
    let v = causal_mask(m, n, epilogue(acc * g, c_old, bias));
    skr_c[ci] = v;
    if (p.act == ACT_GELU) { skr_aux[ci] = gelu(v); }
}

// ---------------------------------------------------------------------------------------------------------------
// matmul_dbias: dbias[b][oc] += sum_bt dout[b][bt, oc], the bias gradient of a linear layer (uses p.m = BT,
// p.n = OC; batch b of `p.batch` replicated layers reads dout at b * a_bs and writes dbias at b * bias_bs).
// Each workgroup owns 32 columns; its 8 rows of invocations sum rows y, y+8, y+16, ... and the 8 partial sums are
// added in a fixed order, so the result is the same every run and each dbias element has exactly one writer.
// bindings: 13 dout (batch, BT, OC) read, 14 dbias (OC per batch) read_write.
// grid: (ceil(OC/32), 1, batch), workgroup (32, 8).
@group(0) @binding(13) var<storage, read> db_dout: array<f32>;
@group(0) @binding(14) var<storage, read_write> db_dbias: array<f32>;

var<workgroup> db_part: array<f32, 256>; // [y][x]

@compute @workgroup_size(32, 8)
fn matmul_dbias(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let col = wid.x * 32u + lid.x;
    let bt = wid.z;
    var s = 0.0;
    if (col < p.n) {
        for (var r = lid.y; r < p.m; r += 8u) {
            s += db_dout[bt * p.a_bs + r * p.n + col];
        }
    }
    db_part[lid.y * 32u + lid.x] = s;
    workgroupBarrier();
    if (lid.y == 0u && col < p.n) {
        var t = 0.0;
        for (var j = 0u; j < 8u; j++) {
            t += db_part[j * 32u + lid.x];
        }
        db_dbias[bt * p.bias_bs + col] += t;
    }
}

// matmul_dbias_tall: the same column sums for GPUs, where 32 columns per workgroup leave most of the chip idle (a
// bias of 256 gives 8 workgroups): 4 columns per workgroup of (4, 64), each invocation summing rows y, y+64, ...,
// then a fixed-order tree over the 64 partials. Chosen per shape by measurement (`dbias` in the tuner).
// bindings: 13 dout read, 14 dbias read_write (as matmul_dbias).
// grid: (ceil(OC/4), 1, batch), workgroup (4, 64).
var<workgroup> dbt_part: array<f32, 256>; // [y][x]

@compute @workgroup_size(4, 64)
fn matmul_dbias_tall(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let col = wid.x * 4u + lid.x;
    let bt = wid.z;
    var s = 0.0;
    if (col < p.n) {
        for (var r = lid.y; r < p.m; r += 64u) {
            s += db_dout[bt * p.a_bs + r * p.n + col];
        }
    }
    dbt_part[lid.y * 4u + lid.x] = s;
    workgroupBarrier();
    for (var h = 32u; h > 0u; h = h / 2u) {
        if (lid.y < h) {
            dbt_part[lid.y * 4u + lid.x] += dbt_part[(lid.y + h) * 4u + lid.x];
        }
        workgroupBarrier();
    }
    if (lid.y == 0u && col < p.n) {
        db_dbias[bt * p.bias_bs + col] += dbt_part[lid.x];
    }
}

// matmul_dbias_cols4: matmul_dbias's sums for CPU adapters, without workgroup memory or barriers: one invocation per 4
// columns keeps the 8 row lanes' partial sums (rows y, y + 8, ... for y = 0..7) as 8 vec4s and adds them in
// matmul_dbias's order, so the result is bit for bit matmul_dbias's; it reads dout a vec4 (4 columns of a row) at a
// time. Requires OC, dout's batch stride and dbias's batch stride to be multiples of 4 (checked on the host).
// bindings: 53 dout (vec4 view) read, 54 dbias (vec4 view) read_write.
// grid: (ceil(OC / 32), 1, batch), workgroup 8 (x 4 columns = 32 columns per workgroup).
@group(0) @binding(53) var<storage, read> dbc_dout: array<vec4<f32>>;
@group(0) @binding(54) var<storage, read_write> dbc_dbias: array<vec4<f32>>;

@compute @workgroup_size(8)
fn matmul_dbias_cols4(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let n4 = p.n / 4u;
    let c4 = wid.x * 8u + lid.x;
    if (c4 >= n4) { return; }
    let bt = wid.z;
    let base = bt * p.a_bs / 4u + c4;
    var s0 = vec4<f32>(0.0); var s1 = vec4<f32>(0.0); var s2 = vec4<f32>(0.0); var s3 = vec4<f32>(0.0);
    var s4 = vec4<f32>(0.0); var s5 = vec4<f32>(0.0); var s6 = vec4<f32>(0.0); var s7 = vec4<f32>(0.0);
    for (var r = 0u; r < p.m; r += 8u) {
        let row = base + r * n4;
        s0 += dbc_dout[row];
        if (r + 1u < p.m) { s1 += dbc_dout[row + n4]; }
        if (r + 2u < p.m) { s2 += dbc_dout[row + 2u * n4]; }
        if (r + 3u < p.m) { s3 += dbc_dout[row + 3u * n4]; }
        if (r + 4u < p.m) { s4 += dbc_dout[row + 4u * n4]; }
        if (r + 5u < p.m) { s5 += dbc_dout[row + 5u * n4]; }
        if (r + 6u < p.m) { s6 += dbc_dout[row + 6u * n4]; }
        if (r + 7u < p.m) { s7 += dbc_dout[row + 7u * n4]; }
    }
    var t = vec4<f32>(0.0);
    t += s0; t += s1; t += s2; t += s3; t += s4; t += s5; t += s6; t += s7;
    dbc_dbias[bt * p.bias_bs / 4u + c4] += t;
}

// gemm_skinny8: C = alpha * A @ B + beta * C (+ bias) for few rows M. Each invocation owns 4 output columns (and
// its batch) and loops over the rows 8 at a time, holding an 8 x 4 block of accumulators: per k it loads 8 elements of
// A and 4 of B for 32 multiply-adds. On CPU adapters such as lavapipe every per-invocation load is a gather, so loads
// per multiply-add set the speed (8 x 1 blocks: 2.1x slower on the toy's 8 x 256 x 256 products). Rows past M and
// columns past N are clamped to the last row / column (loaded, never stored), so the loop body has no data-dependent
// branches and no dynamically indexed arrays.
// bindings: 15 a read, 16 b read, 17 c read_write, 18 bias (N) read (only read when has_bias),
// 35 aux read_write.
// grid: (ceil(N / 64), ceil(M / 64), batch), workgroup 16 (x 4 columns = 64 columns per workgroup); workgroup row y
// covers rows [64 y, 64 y + 64).
@group(0) @binding(15) var<storage, read> sk_a: array<f32>;
@group(0) @binding(16) var<storage, read> sk_b: array<f32>;
@group(0) @binding(17) var<storage, read_write> sk_c: array<f32>;
@group(0) @binding(18) var<storage, read> sk_bias: array<f32>;
@group(0) @binding(35) var<storage, read_write> sk_aux: array<f32>;

// Store row m, columns n..n+3 of the block (masked at the matrix edge).
fn sk_store(bt: u32, m: u32, n: u32, acc: vec4<f32>) {
    if (m >= p.m) { return; }
    for (var j = 0u; j < 4u; j++) {
        let nj = n + j;
        if (nj < p.n) {
            let ci = c_start(bt) + m * p.c_rs + nj * p.c_cs;
            var c_old = 0.0;
            if (p.beta != 0.0) { c_old = sk_c[ci]; }
            var bias = 0.0;
            if (p.has_bias == 1u) { bias = sk_bias[bt * p.bias_bs + nj]; }
            var g = 1.0;
            if (p.act == ACT_DGELU) { g = gelu_grad(sk_aux[ci]); }
            let v = causal_mask(m, nj, epilogue(acc[j] * g, c_old, bias));
            sk_c[ci] = v;
            if (p.act == ACT_GELU) { sk_aux[ci] = gelu(v); }
        }
    }
}

@compute @workgroup_size(16)
fn gemm_skinny8(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x * 4u;
    let bt = gid.z;
    if (n >= p.n || p.m == 0u) { return; }
    let last_m = p.m - 1u;
    let last_n = p.n - 1u;
    let a_base = a_start(bt);
    let b_base = b_start(bt);
    let c0 = b_base + min(n, last_n) * p.b_cs;
    let c1 = b_base + min(n + 1u, last_n) * p.b_cs;
    let c2 = b_base + min(n + 2u, last_n) * p.b_cs;
    let c3 = b_base + min(n + 3u, last_n) * p.b_cs;
    let m_end = min(gid.y * 64u + 64u, p.m);
    for (var m0 = gid.y * 64u; m0 < m_end; m0 += 8u) {
        let r0 = a_base + min(m0, last_m) * p.a_rs;
        let r1 = a_base + min(m0 + 1u, last_m) * p.a_rs;
        let r2 = a_base + min(m0 + 2u, last_m) * p.a_rs;
        let r3 = a_base + min(m0 + 3u, last_m) * p.a_rs;
        let r4 = a_base + min(m0 + 4u, last_m) * p.a_rs;
        let r5 = a_base + min(m0 + 5u, last_m) * p.a_rs;
        let r6 = a_base + min(m0 + 6u, last_m) * p.a_rs;
        let r7 = a_base + min(m0 + 7u, last_m) * p.a_rs;
        var acc0 = vec4<f32>(0.0);
        var acc1 = vec4<f32>(0.0);
        var acc2 = vec4<f32>(0.0);
        var acc3 = vec4<f32>(0.0);
        var acc4 = vec4<f32>(0.0);
        var acc5 = vec4<f32>(0.0);
        var acc6 = vec4<f32>(0.0);
        var acc7 = vec4<f32>(0.0);
        var ko = 0u;
        var kb = 0u;
        for (var k = 0u; k < p.k; k++) {
            let b = vec4<f32>(sk_b[c0 + kb], sk_b[c1 + kb], sk_b[c2 + kb], sk_b[c3 + kb]);
            acc0 += sk_a[r0 + ko] * b;
            acc1 += sk_a[r1 + ko] * b;
            acc2 += sk_a[r2 + ko] * b;
            acc3 += sk_a[r3 + ko] * b;
            acc4 += sk_a[r4 + ko] * b;
            acc5 += sk_a[r5 + ko] * b;
            acc6 += sk_a[r6 + ko] * b;
            acc7 += sk_a[r7 + ko] * b;
            ko += p.a_cs;
            kb += p.b_rs;
        }
        sk_store(bt, m0, n, acc0);
        sk_store(bt, m0 + 1u, n, acc1);
        sk_store(bt, m0 + 2u, n, acc2);
        sk_store(bt, m0 + 3u, n, acc3);
        sk_store(bt, m0 + 4u, n, acc4);
        sk_store(bt, m0 + 5u, n, acc5);
        sk_store(bt, m0 + 6u, n, acc6);
        sk_store(bt, m0 + 7u, n, acc7);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// gemm_v4nn / gemm_v4nt / gemm_v4tn: for CPU adapters (lavapipe). Each invocation owns a 4-row x 8-column block
// (32 accumulators: what fits a CPU's 32 vector registers) and reads its operands as vec4s. On lavapipe a load
// whose address is the same for the whole workgroup (here: A, which depends only on the workgroup's rows) is one
// scalar load, and every other load is a gather, so the cost follows the gathers per multiply-add; vec4 loads also
// share one address computation and bounds check among 4 elements. Measured at 1024^3 on lavapipe: about 1.7x the
// GFLOP/s of gemm_skinny8. The three variants differ in which operand is stored transposed:
//   v4nn: A (M, K) row-major, B (K, N) row-major          (a linear layer's dinp = dout @ W)
//   v4nt: A (M, K) row-major, B stored as B^T (N, K)      (the forward, out = inp @ W^T)
//   v4tn: A stored as A^T (K, M), B (K, N) row-major      (the weight gradient, dW = dout^T @ inp)
// Requirements (checked on the host, `MatmulKernel::supports`): the vec4 axes have unit stride, their lengths (K;
// N for v4nn/v4tn; M for v4tn) are multiples of 4, and the offsets and other strides of A and B are multiples of 4.
// Rows past M and columns past N are clamped to the last one (loaded, never stored). C is written with its general
// strides and the same epilogue (alpha, beta, bias) as every kernel, a vec4 at a time where four columns lie in one
// aligned vec4 of C and element by element elsewhere (`v4_store`); C and aux are therefore bound as vec4 arrays, over
// whole vec4s (`Tensor::binding_bytes`), and an element is reached as v4_c[i / 4][i % 4].
// bindings: 19 a (vec4) read, 20 b (vec4) read, 21 c (vec4) read_write, 22 bias (N) read (read only when
// has_bias = 1), 36 aux (vec4) read_write.
// grid: (ceil(N / 128), ceil(M / 4), batch), workgroup 16 (x 8 columns = 128 columns per workgroup).
@group(0) @binding(19) var<storage, read> v4_a: array<vec4<f32>>;
@group(0) @binding(20) var<storage, read> v4_b: array<vec4<f32>>;
@group(0) @binding(21) var<storage, read_write> v4_c: array<vec4<f32>>;
@group(0) @binding(22) var<storage, read> v4_bias: array<f32>;
@group(0) @binding(36) var<storage, read_write> v4_aux: array<vec4<f32>>;

// Store row m, columns n..n+3 (masked at the matrix edge): one vec4 where the four lie in one aligned vec4 of C.
fn v4_store(bt: u32, m: u32, n: u32, acc: vec4<f32>) {
    if (m >= p.m) { return; }
    let c0 = c_start(bt) + m * p.c_rs + n * p.c_cs;
    let causal = (p.causal & CAUSAL_C) != 0u;
    if (n + 3u < p.n && p.c_cs == 1u && (c0 & 3u) == 0u && (!causal || n + 3u <= m || n > m)) {
        // The four columns lie in one aligned vec4 of C, none of them or all above a causal product's diagonal: one
        // load (beta != 0) and one store instead of four each, which lavapipe runs as a loop over the SIMD lanes per
        // element. The arithmetic is the scalar path's, componentwise.
        if (causal && n > m) {
            v4_c[c0 / 4u] = vec4<f32>(0.0);
            return;
        }
        var g = vec4<f32>(1.0);
        if (p.act == ACT_DGELU) { g = gelu_grad4(v4_aux[c0 / 4u]); }
        var v = p.alpha * (acc * g);
        if (p.beta != 0.0) { v += p.beta * v4_c[c0 / 4u]; }
        var bias = vec4<f32>(0.0);
        if (p.has_bias == 1u) {
            let bi = bt * p.bias_bs + n;
            bias = vec4<f32>(v4_bias[bi], v4_bias[bi + 1u], v4_bias[bi + 2u], v4_bias[bi + 3u]);
        }
        v += bias;
        v4_c[c0 / 4u] = v;
        if (p.act == ACT_GELU) { v4_aux[c0 / 4u] = gelu4(v); }
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let nj = n + j;
        if (nj < p.n) {
            let ci = c_start(bt) + m * p.c_rs + nj * p.c_cs;
            var c_old = 0.0;
            if (p.beta != 0.0) { c_old = v4_c[ci / 4u][ci % 4u]; }
            var bias = 0.0;
            if (p.has_bias == 1u) { bias = v4_bias[bt * p.bias_bs + nj]; }
            var g = 1.0;
            if (p.act == ACT_DGELU) { g = gelu_grad(v4_aux[ci / 4u][ci % 4u]); }
            let v = causal_mask(m, nj, epilogue(acc[j] * g, c_old, bias));
            v4_c[ci / 4u][ci % 4u] = v;
            if (p.act == ACT_GELU) { v4_aux[ci / 4u][ci % 4u] = gelu(v); }
        }
    }
}

// The vec4 index of row m of A (row-major, clamped to the last row) in batch bt: the same for the whole workgroup.
fn v4_a_row(bt: u32, m: u32) -> u32 {
    return (a_start(bt) + min(m, p.m - 1u) * p.a_rs) / 4u;
}

// Store the 4x8 block (acc[2 i + h] = row m0 + i, columns n0 + 4 h ..) in a loop the compiler cannot unroll, so the
// epilogue's code appears twice instead of eight times (lavapipe compiles each vec4 kernel in about a third of the
// time).
fn v4_store_block(bt: u32, m0: u32, n0: u32, acc: array<vec4<f32>, 8>) {
    for (var i = 0u; i < min(4u, p.m - m0); i++) {
        v4_store(bt, m0 + i, n0, acc[2u * i]);
        v4_store(bt, m0 + i, n0 + 4u, acc[2u * i + 1u]);
    }
}

@compute @workgroup_size(16)
fn gemm_v4nn(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let n0 = (wid.x * 16u + lid.x) * 8u;
    let m0 = wid.y * 4u;
    let bt = wid.z;
    if (n0 >= p.n) { return; }
    // vec4 indices: A rows (uniform over the workgroup), B's two column groups of this invocation.
    let a0 = v4_a_row(bt, m0);
    let a1 = v4_a_row(bt, m0 + 1u);
    let a2 = v4_a_row(bt, m0 + 2u);
    let a3 = v4_a_row(bt, m0 + 3u);
    let b_rs4 = p.b_rs / 4u;
    let bb0 = (b_start(bt) + n0) / 4u;
    let bb1 = (b_start(bt) + min(n0 + 4u, p.n - 4u)) / 4u;
    var acc: array<vec4<f32>, 8>;
    var c00 = vec4<f32>(0.0); var c01 = vec4<f32>(0.0); var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0); var c21 = vec4<f32>(0.0); var c30 = vec4<f32>(0.0); var c31 = vec4<f32>(0.0);
    let k4s = p.k / 4u;
    for (var k4 = 0u; k4 < k4s; k4++) {
        let x0 = v4_a[a0 + k4];
        let x1 = v4_a[a1 + k4];
        let x2 = v4_a[a2 + k4];
        let x3 = v4_a[a3 + k4];
        for (var j = 0u; j < 4u; j++) {
            let kb = (k4 * 4u + j) * b_rs4;
            let y0 = v4_b[bb0 + kb];
            let y1 = v4_b[bb1 + kb];
            c00 += x0[j] * y0; c01 += x0[j] * y1;
            c10 += x1[j] * y0; c11 += x1[j] * y1;
            c20 += x2[j] * y0; c21 += x2[j] * y1;
            c30 += x3[j] * y0; c31 += x3[j] * y1;
        }
    }
    acc[0] = c00; acc[1] = c01; acc[2] = c10; acc[3] = c11; acc[4] = c20; acc[5] = c21; acc[6] = c30; acc[7] = c31;
    v4_store_block(bt, m0, n0, acc);
}

@compute @workgroup_size(16)
fn gemm_v4nt(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let n0 = (wid.x * 16u + lid.x) * 8u;
    let m0 = wid.y * 4u;
    let bt = wid.z;
    if (n0 >= p.n) { return; }
    let last_n = p.n - 1u;
    let a0 = v4_a_row(bt, m0);
    let a1 = v4_a_row(bt, m0 + 1u);
    let a2 = v4_a_row(bt, m0 + 2u);
    let a3 = v4_a_row(bt, m0 + 3u);
    // B^T rows (one per output column), read 4 k at a time.
    let bb = b_start(bt);
    let r0 = (bb + min(n0, last_n) * p.b_cs) / 4u;
    let r1 = (bb + min(n0 + 1u, last_n) * p.b_cs) / 4u;
    let r2 = (bb + min(n0 + 2u, last_n) * p.b_cs) / 4u;
    let r3 = (bb + min(n0 + 3u, last_n) * p.b_cs) / 4u;
    let r4 = (bb + min(n0 + 4u, last_n) * p.b_cs) / 4u;
    let r5 = (bb + min(n0 + 5u, last_n) * p.b_cs) / 4u;
    let r6 = (bb + min(n0 + 6u, last_n) * p.b_cs) / 4u;
    let r7 = (bb + min(n0 + 7u, last_n) * p.b_cs) / 4u;
    var acc: array<vec4<f32>, 8>;
    var c00 = vec4<f32>(0.0); var c01 = vec4<f32>(0.0); var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0); var c21 = vec4<f32>(0.0); var c30 = vec4<f32>(0.0); var c31 = vec4<f32>(0.0);
    let k4s = p.k / 4u;
    for (var k4 = 0u; k4 < k4s; k4++) {
        let x0 = v4_a[a0 + k4];
        let x1 = v4_a[a1 + k4];
        let x2 = v4_a[a2 + k4];
        let x3 = v4_a[a3 + k4];
        let w0 = v4_b[r0 + k4]; let w1 = v4_b[r1 + k4]; let w2 = v4_b[r2 + k4]; let w3 = v4_b[r3 + k4];
        let w4 = v4_b[r4 + k4]; let w5 = v4_b[r5 + k4]; let w6 = v4_b[r6 + k4]; let w7 = v4_b[r7 + k4];
        for (var j = 0u; j < 4u; j++) {
            let y0 = vec4<f32>(w0[j], w1[j], w2[j], w3[j]);
            let y1 = vec4<f32>(w4[j], w5[j], w6[j], w7[j]);
            c00 += x0[j] * y0; c01 += x0[j] * y1;
            c10 += x1[j] * y0; c11 += x1[j] * y1;
            c20 += x2[j] * y0; c21 += x2[j] * y1;
            c30 += x3[j] * y0; c31 += x3[j] * y1;
        }
    }
    acc[0] = c00; acc[1] = c01; acc[2] = c10; acc[3] = c11; acc[4] = c20; acc[5] = c21; acc[6] = c30; acc[7] = c31;
    v4_store_block(bt, m0, n0, acc);
}

@compute @workgroup_size(16)
fn gemm_v4tn(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let n0 = (wid.x * 16u + lid.x) * 8u;
    let m0 = wid.y * 4u;
    let bt = wid.z;
    if (n0 >= p.n) { return; }
    // A^T (K, M): the 4 rows m0..m0+3 at one k are one vec4 (M is a multiple of 4, so m0 + 3 < M).
    let aa = (a_start(bt) + m0) / 4u;
    let a_cs4 = p.a_cs / 4u;
    let b_rs4 = p.b_rs / 4u;
    let bb0 = (b_start(bt) + n0) / 4u;
    let bb1 = (b_start(bt) + min(n0 + 4u, p.n - 4u)) / 4u;
    var acc: array<vec4<f32>, 8>;
    var c00 = vec4<f32>(0.0); var c01 = vec4<f32>(0.0); var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0); var c21 = vec4<f32>(0.0); var c30 = vec4<f32>(0.0); var c31 = vec4<f32>(0.0);
    for (var k = 0u; k < p.k; k++) {
        let x = v4_a[aa + k * a_cs4];
        let y0 = v4_b[bb0 + k * b_rs4];
        let y1 = v4_b[bb1 + k * b_rs4];
        c00 += x.x * y0; c01 += x.x * y1;
        c10 += x.y * y0; c11 += x.y * y1;
        c20 += x.z * y0; c21 += x.z * y1;
        c30 += x.w * y0; c31 += x.w * y1;
    }
    acc[0] = c00; acc[1] = c01; acc[2] = c10; acc[3] = c11; acc[4] = c20; acc[5] = c21; acc[6] = c30; acc[7] = c31;
    v4_store_block(bt, m0, n0, acc);
}

// ---------------------------------------------------------------------------------------------------------------
// gemm_v8nn / gemm_v8nt / gemm_v8tn: the vec4 kernels above with an 8-row x 16-column block per invocation (128
// accumulators, which spill on a CPU), so each loaded element serves twice the multiply-adds (5.3 per element of A
// and B, against 2.7 for the 4x8 block). On lavapipe the loads cost more than the spilled accumulators: measured at
// 1024^3 (nn), about 1.5x gemm_v4nn's GFLOP/s, while 8x8 and 4x16 blocks were slower than 4x8. Same requirements,
// bindings and edge handling as the vec4 kernels (`MatmulKernel::supports`): rows past M and columns past N are
// clamped on load and masked on store.
// grid: (ceil(N / 256), ceil(M / 8), batch), workgroup 16 (x 16 columns = 256 columns per workgroup).

// The 8 x 16 block's accumulators: c[r][g] = row m0 + r, columns n0 + 4 g .. n0 + 4 g + 3.
struct V8Acc {
    c00: vec4<f32>, c01: vec4<f32>, c02: vec4<f32>, c03: vec4<f32>,
    c10: vec4<f32>, c11: vec4<f32>, c12: vec4<f32>, c13: vec4<f32>,
    c20: vec4<f32>, c21: vec4<f32>, c22: vec4<f32>, c23: vec4<f32>,
    c30: vec4<f32>, c31: vec4<f32>, c32: vec4<f32>, c33: vec4<f32>,
    c40: vec4<f32>, c41: vec4<f32>, c42: vec4<f32>, c43: vec4<f32>,
    c50: vec4<f32>, c51: vec4<f32>, c52: vec4<f32>, c53: vec4<f32>,
    c60: vec4<f32>, c61: vec4<f32>, c62: vec4<f32>, c63: vec4<f32>,
    c70: vec4<f32>, c71: vec4<f32>, c72: vec4<f32>, c73: vec4<f32>,
}

// The first column of the column group (4 columns) that starts at n, clamped so that the vec4 stays inside the row
// (N is a multiple of 4); the vec8 and subgroup kernels load B's columns through it.
fn v4_col_group(n: u32) -> u32 {
    return min(n, p.n - 4u);
}

// The vec4 index of B^T's row for output column n (clamped to the last column) in the batch at element bb.
fn v8_bt_row(bb: u32, n: u32) -> u32 {
    return (bb + min(n, p.n - 1u) * p.b_cs) / 4u;
}

// Store the block. A loop with a bound the compiler cannot unroll, so the epilogue's code (GELU and its derivative
// included) appears once instead of once per accumulator: unrolled, lavapipe took about 25 s to compile each vec8
// kernel (2.5 s for the vec4 kernels' 8 stores).
fn v8_store_block(bt: u32, m0: u32, n0: u32, r: V8Acc) {
    let acc = array<vec4<f32>, 32>(
        r.c00, r.c01, r.c02, r.c03, r.c10, r.c11, r.c12, r.c13, r.c20, r.c21, r.c22, r.c23, r.c30, r.c31, r.c32, r.c33,
        r.c40, r.c41, r.c42, r.c43, r.c50, r.c51, r.c52, r.c53, r.c60, r.c61, r.c62, r.c63, r.c70, r.c71, r.c72, r.c73,
    );
    for (var i = 0u; i < min(8u, p.m - m0); i++) {
        v4_store(bt, m0 + i, n0, acc[4u * i]);
        v4_store(bt, m0 + i, n0 + 4u, acc[4u * i + 1u]);
        v4_store(bt, m0 + i, n0 + 8u, acc[4u * i + 2u]);
        v4_store(bt, m0 + i, n0 + 12u, acc[4u * i + 3u]);
    }
}

// acc += the outer product of one k: the 8 rows' values x0..x7 and the 16 columns' values y0..y3.
fn v8_step(acc: V8Acc, x0: f32, x1: f32, x2: f32, x3: f32, x4: f32, x5: f32, x6: f32, x7: f32,
           y0: vec4<f32>, y1: vec4<f32>, y2: vec4<f32>, y3: vec4<f32>) -> V8Acc {
    var r = acc;
    r.c00 += x0 * y0; r.c01 += x0 * y1; r.c02 += x0 * y2; r.c03 += x0 * y3;
    r.c10 += x1 * y0; r.c11 += x1 * y1; r.c12 += x1 * y2; r.c13 += x1 * y3;
    r.c20 += x2 * y0; r.c21 += x2 * y1; r.c22 += x2 * y2; r.c23 += x2 * y3;
    r.c30 += x3 * y0; r.c31 += x3 * y1; r.c32 += x3 * y2; r.c33 += x3 * y3;
    r.c40 += x4 * y0; r.c41 += x4 * y1; r.c42 += x4 * y2; r.c43 += x4 * y3;
    r.c50 += x5 * y0; r.c51 += x5 * y1; r.c52 += x5 * y2; r.c53 += x5 * y3;
    r.c60 += x6 * y0; r.c61 += x6 * y1; r.c62 += x6 * y2; r.c63 += x6 * y3;
    r.c70 += x7 * y0; r.c71 += x7 * y1; r.c72 += x7 * y2; r.c73 += x7 * y3;
    return r;
}

@compute @workgroup_size(16)
fn gemm_v8nn(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let n0 = (wid.x * 16u + lid.x) * 16u;
    let m0 = wid.y * 8u;
    let bt = wid.z;
    if (n0 >= p.n) { return; }
    let a0 = v4_a_row(bt, m0); let a1 = v4_a_row(bt, m0 + 1u); let a2 = v4_a_row(bt, m0 + 2u);
    let a3 = v4_a_row(bt, m0 + 3u); let a4 = v4_a_row(bt, m0 + 4u); let a5 = v4_a_row(bt, m0 + 5u);
    let a6 = v4_a_row(bt, m0 + 6u); let a7 = v4_a_row(bt, m0 + 7u);
    let b_rs4 = p.b_rs / 4u;
    let bb = b_start(bt);
    let bb0 = (bb + n0) / 4u;
    let bb1 = (bb + v4_col_group(n0 + 4u)) / 4u;
    let bb2 = (bb + v4_col_group(n0 + 8u)) / 4u;
    let bb3 = (bb + v4_col_group(n0 + 12u)) / 4u;
    var acc: V8Acc;
    let k4s = p.k / 4u;
    for (var k4 = 0u; k4 < k4s; k4++) {
        let x0 = v4_a[a0 + k4]; let x1 = v4_a[a1 + k4]; let x2 = v4_a[a2 + k4]; let x3 = v4_a[a3 + k4];
        let x4 = v4_a[a4 + k4]; let x5 = v4_a[a5 + k4]; let x6 = v4_a[a6 + k4]; let x7 = v4_a[a7 + k4];
        for (var j = 0u; j < 4u; j++) {
            let kb = (k4 * 4u + j) * b_rs4;
            acc = v8_step(acc, x0[j], x1[j], x2[j], x3[j], x4[j], x5[j], x6[j], x7[j],
                          v4_b[bb0 + kb], v4_b[bb1 + kb], v4_b[bb2 + kb], v4_b[bb3 + kb]);
        }
    }
    v8_store_block(bt, m0, n0, acc);
}

@compute @workgroup_size(16)
fn gemm_v8nt(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let n0 = (wid.x * 16u + lid.x) * 16u;
    let m0 = wid.y * 8u;
    let bt = wid.z;
    if (n0 >= p.n) { return; }
    let a0 = v4_a_row(bt, m0); let a1 = v4_a_row(bt, m0 + 1u); let a2 = v4_a_row(bt, m0 + 2u);
    let a3 = v4_a_row(bt, m0 + 3u); let a4 = v4_a_row(bt, m0 + 4u); let a5 = v4_a_row(bt, m0 + 5u);
    let a6 = v4_a_row(bt, m0 + 6u); let a7 = v4_a_row(bt, m0 + 7u);
    // B^T rows (one per output column, clamped to the last), read 4 k at a time.
    let bb = b_start(bt);
    let r0 = v8_bt_row(bb, n0); let r1 = v8_bt_row(bb, n0 + 1u); let r2 = v8_bt_row(bb, n0 + 2u);
    let r3 = v8_bt_row(bb, n0 + 3u); let r4 = v8_bt_row(bb, n0 + 4u); let r5 = v8_bt_row(bb, n0 + 5u);
    let r6 = v8_bt_row(bb, n0 + 6u); let r7 = v8_bt_row(bb, n0 + 7u); let r8 = v8_bt_row(bb, n0 + 8u);
    let r9 = v8_bt_row(bb, n0 + 9u); let r10 = v8_bt_row(bb, n0 + 10u); let r11 = v8_bt_row(bb, n0 + 11u);
    let r12 = v8_bt_row(bb, n0 + 12u); let r13 = v8_bt_row(bb, n0 + 13u); let r14 = v8_bt_row(bb, n0 + 14u);
    let r15 = v8_bt_row(bb, n0 + 15u);
    var acc: V8Acc;
    let k4s = p.k / 4u;
    for (var k4 = 0u; k4 < k4s; k4++) {
        let x0 = v4_a[a0 + k4]; let x1 = v4_a[a1 + k4]; let x2 = v4_a[a2 + k4]; let x3 = v4_a[a3 + k4];
        let x4 = v4_a[a4 + k4]; let x5 = v4_a[a5 + k4]; let x6 = v4_a[a6 + k4]; let x7 = v4_a[a7 + k4];
        let w0 = v4_b[r0 + k4]; let w1 = v4_b[r1 + k4]; let w2 = v4_b[r2 + k4]; let w3 = v4_b[r3 + k4];
        let w4 = v4_b[r4 + k4]; let w5 = v4_b[r5 + k4]; let w6 = v4_b[r6 + k4]; let w7 = v4_b[r7 + k4];
        let w8 = v4_b[r8 + k4]; let w9 = v4_b[r9 + k4]; let w10 = v4_b[r10 + k4]; let w11 = v4_b[r11 + k4];
        let w12 = v4_b[r12 + k4]; let w13 = v4_b[r13 + k4]; let w14 = v4_b[r14 + k4]; let w15 = v4_b[r15 + k4];
        for (var j = 0u; j < 4u; j++) {
            acc = v8_step(acc, x0[j], x1[j], x2[j], x3[j], x4[j], x5[j], x6[j], x7[j],
                          vec4<f32>(w0[j], w1[j], w2[j], w3[j]), vec4<f32>(w4[j], w5[j], w6[j], w7[j]),
                          vec4<f32>(w8[j], w9[j], w10[j], w11[j]), vec4<f32>(w12[j], w13[j], w14[j], w15[j]));
        }
    }
    v8_store_block(bt, m0, n0, acc);
}

@compute @workgroup_size(16)
fn gemm_v8tn(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let n0 = (wid.x * 16u + lid.x) * 16u;
    let m0 = wid.y * 8u;
    let bt = wid.z;
    if (n0 >= p.n) { return; }
    // A^T (K, M): rows m0..m0+3 and m0+4..m0+7 at one k are two vec4s (M is a multiple of 4; the second is clamped
    // to the last vec4 of the row when m0 + 4 >= M, and its rows are never stored).
    let aa = a_start(bt);
    let aa0 = (aa + m0) / 4u;
    let aa1 = (aa + min(m0 + 4u, p.m - 4u)) / 4u;
    let a_cs4 = p.a_cs / 4u;
    let b_rs4 = p.b_rs / 4u;
    let bb = b_start(bt);
    let bb0 = (bb + n0) / 4u;
    let bb1 = (bb + v4_col_group(n0 + 4u)) / 4u;
    let bb2 = (bb + v4_col_group(n0 + 8u)) / 4u;
    let bb3 = (bb + v4_col_group(n0 + 12u)) / 4u;
    var acc: V8Acc;
    for (var k = 0u; k < p.k; k++) {
        let xa = v4_a[aa0 + k * a_cs4];
        let xb = v4_a[aa1 + k * a_cs4];
        let kb = k * b_rs4;
        acc = v8_step(acc, xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w,
                      v4_b[bb0 + kb], v4_b[bb1 + kb], v4_b[bb2 + kb], v4_b[bb3 + kb]);
    }
    v8_store_block(bt, m0, n0, acc);
}

// ---------------------------------------------------------------------------------------------------------------
// gemm_tile128: for GPUs. 128x128 output tile per workgroup of 256 invocations, each computing an 8x8 block in
// registers: rows {4 ty .. 4 ty + 3} and {64 + 4 ty .. 64 + 4 ty + 3}, likewise for columns with tx, so that the
// inner loop reads its operands from workgroup memory as vec4s at addresses that neighbouring invocations share
// or step through contiguously. Per K-tile of 8, A (128x8) and B (8x128) are staged in workgroup memory (8 KiB)
// with every invocation loading 4 elements of each, consecutive invocations taking consecutive addresses along the
// operand's unit-stride dimension. 64 multiply-adds per 4 vec4 loads from workgroup memory.
// Edges (any M, N, K) are zero-filled on load and masked on store.
// bindings: 23 a read, 24 b read, 25 c read_write, 26 bias (N) read (read only when has_bias = 1),
// 37 aux read_write.
// grid: (ceil(N/128), ceil(M/128), batch), workgroup (16, 16).
@group(0) @binding(23) var<storage, read> t128_a: array<f32>;
@group(0) @binding(24) var<storage, read> t128_b: array<f32>;
@group(0) @binding(25) var<storage, read_write> t128_c: array<f32>;
@group(0) @binding(26) var<storage, read> t128_bias: array<f32>;
@group(0) @binding(37) var<storage, read_write> t128_aux: array<f32>;

var<workgroup> t128_as: array<vec4<f32>, 256>; // [k (8)][m / 4 (32)]
var<workgroup> t128_bs: array<vec4<f32>, 256>; // [k (8)][n / 4 (32)]

fn t128_store(bt: u32, m: u32, n: u32, acc: vec4<f32>) {
    if (m >= p.m) { return; }
    for (var j = 0u; j < 4u; j++) {
        let nj = n + j;
        if (nj < p.n) {
            let ci = c_start(bt) + m * p.c_rs + nj * p.c_cs;
            var c_old = 0.0;
            if (p.beta != 0.0) { c_old = t128_c[ci]; }
            var bias = 0.0;
            if (p.has_bias == 1u) { bias = t128_bias[bt * p.bias_bs + nj]; }
            var g = 1.0;
            if (p.act == ACT_DGELU) { g = gelu_grad(t128_aux[ci]); }
            let v = causal_mask(m, nj, epilogue(acc[j] * g, c_old, bias));
            t128_c[ci] = v;
            if (p.act == ACT_GELU) { t128_aux[ci] = gelu(v); }
        }
    }
}

@compute @workgroup_size(16, 16)
fn gemm_tile128(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let tx = lid.x;
    let ty = lid.y;
    let m0 = wid.y * 128u;
    let n0 = wid.x * 128u;
    let bt = wid.z;
    let a_base = a_start(bt);
    let b_base = b_start(bt);
    // Accumulators: rows 4 ty + i (lo) and 64 + 4 ty + i (hi), columns 4 tx.. (l) and 64 + 4 tx.. (h). Named
    // registers, not an array: a dynamically indexed array would live in slow local memory on some compilers.
    var lo0l = vec4<f32>(0.0); var lo0h = vec4<f32>(0.0); var lo1l = vec4<f32>(0.0); var lo1h = vec4<f32>(0.0);
    var lo2l = vec4<f32>(0.0); var lo2h = vec4<f32>(0.0); var lo3l = vec4<f32>(0.0); var lo3h = vec4<f32>(0.0);
    var hi0l = vec4<f32>(0.0); var hi0h = vec4<f32>(0.0); var hi1l = vec4<f32>(0.0); var hi1h = vec4<f32>(0.0);
    var hi2l = vec4<f32>(0.0); var hi2h = vec4<f32>(0.0); var hi3l = vec4<f32>(0.0); var hi3h = vec4<f32>(0.0);
    let a_unit = p.a_cs == 1u;
    let b_unit = p.b_cs == 1u;
    for (var k0 = 0u; k0 < p.k; k0 += 8u) {
        for (var r = 0u; r < 4u; r++) {
            let idx = tid + r * 256u; // 0..1023 over the 128x8 A tile
            var kk = idx / 128u;
            var mm = idx % 128u;
            if (a_unit) { kk = idx % 8u; mm = idx / 8u; }
            let gm = m0 + mm;
            let gk = k0 + kk;
            var v = 0.0;
            if (gm < p.m && gk < p.k) { v = t128_a[a_base + gm * p.a_rs + gk * p.a_cs]; }
            t128_as[kk * 32u + mm / 4u][mm % 4u] = v;
        }
        for (var r = 0u; r < 4u; r++) {
            let idx = tid + r * 256u; // 0..1023 over the 8x128 B tile
            var kk = idx / 128u;
            var nn = idx % 128u;
            if (!b_unit) { kk = idx % 8u; nn = idx / 8u; }
            let gn = n0 + nn;
            let gk = k0 + kk;
            var v = 0.0;
            if (gk < p.k && gn < p.n) { v = t128_b[b_base + gk * p.b_rs + gn * p.b_cs]; }
            t128_bs[kk * 32u + nn / 4u][nn % 4u] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 8u; kk++) {
            let a_lo = t128_as[kk * 32u + ty];
            let a_hi = t128_as[kk * 32u + 16u + ty];
            let b_l = t128_bs[kk * 32u + tx];
            let b_h = t128_bs[kk * 32u + 16u + tx];
            lo0l += a_lo.x * b_l; lo0h += a_lo.x * b_h;
            lo1l += a_lo.y * b_l; lo1h += a_lo.y * b_h;
            lo2l += a_lo.z * b_l; lo2h += a_lo.z * b_h;
            lo3l += a_lo.w * b_l; lo3h += a_lo.w * b_h;
            hi0l += a_hi.x * b_l; hi0h += a_hi.x * b_h;
            hi1l += a_hi.y * b_l; hi1h += a_hi.y * b_h;
            hi2l += a_hi.z * b_l; hi2h += a_hi.z * b_h;
            hi3l += a_hi.w * b_l; hi3h += a_hi.w * b_h;
        }
        workgroupBarrier();
    }
    let ml = m0 + 4u * ty;
    let mh = m0 + 64u + 4u * ty;
    let nl = n0 + 4u * tx;
    let nh = n0 + 64u + 4u * tx;
    t128_store(bt, ml, nl, lo0l); t128_store(bt, ml, nh, lo0h);
    t128_store(bt, ml + 1u, nl, lo1l); t128_store(bt, ml + 1u, nh, lo1h);
    t128_store(bt, ml + 2u, nl, lo2l); t128_store(bt, ml + 2u, nh, lo2h);
    t128_store(bt, ml + 3u, nl, lo3l); t128_store(bt, ml + 3u, nh, lo3h);
    t128_store(bt, mh, nl, hi0l); t128_store(bt, mh, nh, hi0h);
    t128_store(bt, mh + 1u, nl, hi1l); t128_store(bt, mh + 1u, nh, hi1h);
    t128_store(bt, mh + 2u, nl, hi2l); t128_store(bt, mh + 2u, nh, hi2h);
    t128_store(bt, mh + 3u, nl, hi3l); t128_store(bt, mh + 3u, nh, hi3h);
}
