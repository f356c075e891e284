// The subgroup GEMM kernels: for CPU adapters (lavapipe) that have subgroups. Appended to matmul.wgsl (whose Params,
// bindings and epilogue helpers they use) to make the `matmul_subgroup` module, which is compiled only on a device
// with wgpu's SUBGROUP feature and a minimum subgroup size of at least 8 (src/ops/matmul.rs checks both, and checks
// the kernel's result once against gemm_v4nn before the tuner may time it).
//
// A 16-row (sgnn: 24-row) x 8-column block per invocation (32 or 48 vec4 accumulators), columns as in the vec4
// kernels. On lavapipe every
// storage-buffer load is a loop over the SIMD lanes (a gather), even when all lanes read the same address, so the
// vec4 kernels spend much of their time loading A's rows, which every invocation of a workgroup reads alike. Here the
// 8 lanes of a subgroup each load a different row's vec4 (lane l: rows m0 + l and m0 + 8 + l) and pass them around
// with subgroupBroadcast, a register shuffle: per 4 k an invocation loads 2 vec4s of A instead of 16 (4 in sgtn,
// whose rows are contiguous), and 8 of B. Measured at 1024^3 on lavapipe: about 2.8x gemm_v4nn's GFLOP/s (blocks of
// 8 or 32 rows and staging A in workgroup memory were slower, 16 columns no faster). sgnn takes 24 rows (3 vec4s of A
// per 4 k): with the shaders compiled without wgpu's loop bound, its 33 dispatches in the 4L C256 GPT step took 602
// against 648 ms at 16 rows, 137 against 150 ms in the 4L C128 step (`bench --profile`; a prototype at 768^3: 37.5
// against 35.2 GFLOP/s, and unrolling the k loop twice was 25% slower).
//
// Every invocation stays active to the end (subgroupBroadcast needs its source lane): columns past N are clamped on
// load and masked on store, rows past M clamped on load (v4_a_row) and masked on store. Same requirements as the
// vec4 kernels (`MatmulKernel::supports`), same bindings (19 a, 20 b, 21 c, 22 bias, 36 aux).
//   sgnn: A (M, K) row-major, B (K, N) row-major; sgnt: B stored as B^T (N, K); sgtn: A stored as A^T (K, M).
// grid: (ceil(N / 128), ceil(M / 16), batch) (sgnn: ceil(M / 24)), workgroup 16.

// Store the block: acc[2 r + h] = row m0 + r, columns n0 + 4 h .. n0 + 4 h + 3. A loop with a bound the compiler cannot
// unroll, so the epilogue's code (GELU and its derivative included) appears once instead of once per accumulator:
// unrolled, lavapipe took about 25 s to compile each of these kernels.
fn sg_store_block(bt: u32, m0: u32, n0: u32, acc: array<vec4<f32>, 32>) {
    for (var r = 0u; r < min(16u, p.m - m0); r++) {
        v4_store(bt, m0 + r, n0, acc[2u * r]);
        v4_store(bt, m0 + r, n0 + 4u, acc[2u * r + 1u]);
    }
}

@compute @workgroup_size(16)
fn gemm_sgnn(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(subgroup_invocation_id) lane: u32) {
    let n0 = (wid.x * 16u + lid.x) * 8u;
    let m0 = wid.y * 24u;
    let bt = wid.z;
    // This lane's three rows of A (the same for every subgroup of the workgroup).
    let row0 = v4_a_row(bt, m0 + (lane & 7u));
    let row1 = v4_a_row(bt, m0 + 8u + (lane & 7u));
    let row2 = v4_a_row(bt, m0 + 16u + (lane & 7u));
    let b_rs4 = p.b_rs / 4u;
    let bb0 = (b_start(bt) + v4_col_group(n0)) / 4u;
    let bb1 = (b_start(bt) + v4_col_group(n0 + 4u)) / 4u;
    var c00_0 = vec4<f32>(0.0); var c00_1 = vec4<f32>(0.0); var c01_0 = vec4<f32>(0.0); var c01_1 = vec4<f32>(0.0);
    var c02_0 = vec4<f32>(0.0); var c02_1 = vec4<f32>(0.0); var c03_0 = vec4<f32>(0.0); var c03_1 = vec4<f32>(0.0);
    var c04_0 = vec4<f32>(0.0); var c04_1 = vec4<f32>(0.0); var c05_0 = vec4<f32>(0.0); var c05_1 = vec4<f32>(0.0);
    var c06_0 = vec4<f32>(0.0); var c06_1 = vec4<f32>(0.0); var c07_0 = vec4<f32>(0.0); var c07_1 = vec4<f32>(0.0);
    var c08_0 = vec4<f32>(0.0); var c08_1 = vec4<f32>(0.0); var c09_0 = vec4<f32>(0.0); var c09_1 = vec4<f32>(0.0);
    var c10_0 = vec4<f32>(0.0); var c10_1 = vec4<f32>(0.0); var c11_0 = vec4<f32>(0.0); var c11_1 = vec4<f32>(0.0);
    var c12_0 = vec4<f32>(0.0); var c12_1 = vec4<f32>(0.0); var c13_0 = vec4<f32>(0.0); var c13_1 = vec4<f32>(0.0);
    var c14_0 = vec4<f32>(0.0); var c14_1 = vec4<f32>(0.0); var c15_0 = vec4<f32>(0.0); var c15_1 = vec4<f32>(0.0);
    var c16_0 = vec4<f32>(0.0); var c16_1 = vec4<f32>(0.0); var c17_0 = vec4<f32>(0.0); var c17_1 = vec4<f32>(0.0);
    var c18_0 = vec4<f32>(0.0); var c18_1 = vec4<f32>(0.0); var c19_0 = vec4<f32>(0.0); var c19_1 = vec4<f32>(0.0);
    var c20_0 = vec4<f32>(0.0); var c20_1 = vec4<f32>(0.0); var c21_0 = vec4<f32>(0.0); var c21_1 = vec4<f32>(0.0);
    var c22_0 = vec4<f32>(0.0); var c22_1 = vec4<f32>(0.0); var c23_0 = vec4<f32>(0.0); var c23_1 = vec4<f32>(0.0);
    let k4s = p.k / 4u;
    for (var k4 = 0u; k4 < k4s; k4++) {
        let v0 = v4_a[row0 + k4];
        let v1 = v4_a[row1 + k4];
        let v2 = v4_a[row2 + k4];
        let x00 = subgroupBroadcast(v0, 0u); let x01 = subgroupBroadcast(v0, 1u);
        let x02 = subgroupBroadcast(v0, 2u); let x03 = subgroupBroadcast(v0, 3u);
        let x04 = subgroupBroadcast(v0, 4u); let x05 = subgroupBroadcast(v0, 5u);
        let x06 = subgroupBroadcast(v0, 6u); let x07 = subgroupBroadcast(v0, 7u);
        let x08 = subgroupBroadcast(v1, 0u); let x09 = subgroupBroadcast(v1, 1u);
        let x10 = subgroupBroadcast(v1, 2u); let x11 = subgroupBroadcast(v1, 3u);
        let x12 = subgroupBroadcast(v1, 4u); let x13 = subgroupBroadcast(v1, 5u);
        let x14 = subgroupBroadcast(v1, 6u); let x15 = subgroupBroadcast(v1, 7u);
        let x16 = subgroupBroadcast(v2, 0u); let x17 = subgroupBroadcast(v2, 1u);
        let x18 = subgroupBroadcast(v2, 2u); let x19 = subgroupBroadcast(v2, 3u);
        let x20 = subgroupBroadcast(v2, 4u); let x21 = subgroupBroadcast(v2, 5u);
        let x22 = subgroupBroadcast(v2, 6u); let x23 = subgroupBroadcast(v2, 7u);
        for (var j = 0u; j < 4u; j++) {
            let kb = (k4 * 4u + j) * b_rs4;
            let y0 = v4_b[bb0 + kb];
            let y1 = v4_b[bb1 + kb];
            c00_0 += x00[j] * y0; c00_1 += x00[j] * y1; c01_0 += x01[j] * y0; c01_1 += x01[j] * y1;
            c02_0 += x02[j] * y0; c02_1 += x02[j] * y1; c03_0 += x03[j] * y0; c03_1 += x03[j] * y1;
            c04_0 += x04[j] * y0; c04_1 += x04[j] * y1; c05_0 += x05[j] * y0; c05_1 += x05[j] * y1;
            c06_0 += x06[j] * y0; c06_1 += x06[j] * y1; c07_0 += x07[j] * y0; c07_1 += x07[j] * y1;
            c08_0 += x08[j] * y0; c08_1 += x08[j] * y1; c09_0 += x09[j] * y0; c09_1 += x09[j] * y1;
            c10_0 += x10[j] * y0; c10_1 += x10[j] * y1; c11_0 += x11[j] * y0; c11_1 += x11[j] * y1;
            c12_0 += x12[j] * y0; c12_1 += x12[j] * y1; c13_0 += x13[j] * y0; c13_1 += x13[j] * y1;
            c14_0 += x14[j] * y0; c14_1 += x14[j] * y1; c15_0 += x15[j] * y0; c15_1 += x15[j] * y1;
            c16_0 += x16[j] * y0; c16_1 += x16[j] * y1; c17_0 += x17[j] * y0; c17_1 += x17[j] * y1;
            c18_0 += x18[j] * y0; c18_1 += x18[j] * y1; c19_0 += x19[j] * y0; c19_1 += x19[j] * y1;
            c20_0 += x20[j] * y0; c20_1 += x20[j] * y1; c21_0 += x21[j] * y0; c21_1 += x21[j] * y1;
            c22_0 += x22[j] * y0; c22_1 += x22[j] * y1; c23_0 += x23[j] * y0; c23_1 += x23[j] * y1;
        }
    }
    if (n0 < p.n) {
        sg_store_block24(bt, m0, n0, array<vec4<f32>, 48>(
            c00_0, c00_1, c01_0, c01_1, c02_0, c02_1, c03_0, c03_1,
            c04_0, c04_1, c05_0, c05_1, c06_0, c06_1, c07_0, c07_1,
            c08_0, c08_1, c09_0, c09_1, c10_0, c10_1, c11_0, c11_1,
            c12_0, c12_1, c13_0, c13_1, c14_0, c14_1, c15_0, c15_1,
            c16_0, c16_1, c17_0, c17_1, c18_0, c18_1, c19_0, c19_1,
            c20_0, c20_1, c21_0, c21_1, c22_0, c22_1, c23_0, c23_1,
        ));
    }
}

// sg_store_block for gemm_sgnn's 24 rows.
fn sg_store_block24(bt: u32, m0: u32, n0: u32, acc: array<vec4<f32>, 48>) {
    for (var r = 0u; r < min(24u, p.m - m0); r++) {
        v4_store(bt, m0 + r, n0, acc[2u * r]);
        v4_store(bt, m0 + r, n0 + 4u, acc[2u * r + 1u]);
    }
}

// gemm_sgnt's 16 x 8 block: c<r>_<h> = row m0 + r, columns n0 + 4 h .. n0 + 4 h + 3 (gemm_sgnn and gemm_sgtn keep
// the same 32 accumulators as plain locals).
struct SgAcc {
    c00_0: vec4<f32>, c00_1: vec4<f32>,
    c01_0: vec4<f32>, c01_1: vec4<f32>,
    c02_0: vec4<f32>, c02_1: vec4<f32>,
    c03_0: vec4<f32>, c03_1: vec4<f32>,
    c04_0: vec4<f32>, c04_1: vec4<f32>,
    c05_0: vec4<f32>, c05_1: vec4<f32>,
    c06_0: vec4<f32>, c06_1: vec4<f32>,
    c07_0: vec4<f32>, c07_1: vec4<f32>,
    c08_0: vec4<f32>, c08_1: vec4<f32>,
    c09_0: vec4<f32>, c09_1: vec4<f32>,
    c10_0: vec4<f32>, c10_1: vec4<f32>,
    c11_0: vec4<f32>, c11_1: vec4<f32>,
    c12_0: vec4<f32>, c12_1: vec4<f32>,
    c13_0: vec4<f32>, c13_1: vec4<f32>,
    c14_0: vec4<f32>, c14_1: vec4<f32>,
    c15_0: vec4<f32>, c15_1: vec4<f32>,
}

// acc += the outer product of one k: the 16 rows' values x and the 8 columns' values y0, y1.
fn sg_step(a: SgAcc, x: array<f32, 16>, y0: vec4<f32>, y1: vec4<f32>) -> SgAcc {
    var r = a;
    r.c00_0 += x[0] * y0; r.c00_1 += x[0] * y1;
    r.c01_0 += x[1] * y0; r.c01_1 += x[1] * y1;
    r.c02_0 += x[2] * y0; r.c02_1 += x[2] * y1;
    r.c03_0 += x[3] * y0; r.c03_1 += x[3] * y1;
    r.c04_0 += x[4] * y0; r.c04_1 += x[4] * y1;
    r.c05_0 += x[5] * y0; r.c05_1 += x[5] * y1;
    r.c06_0 += x[6] * y0; r.c06_1 += x[6] * y1;
    r.c07_0 += x[7] * y0; r.c07_1 += x[7] * y1;
    r.c08_0 += x[8] * y0; r.c08_1 += x[8] * y1;
    r.c09_0 += x[9] * y0; r.c09_1 += x[9] * y1;
    r.c10_0 += x[10] * y0; r.c10_1 += x[10] * y1;
    r.c11_0 += x[11] * y0; r.c11_1 += x[11] * y1;
    r.c12_0 += x[12] * y0; r.c12_1 += x[12] * y1;
    r.c13_0 += x[13] * y0; r.c13_1 += x[13] * y1;
    r.c14_0 += x[14] * y0; r.c14_1 += x[14] * y1;
    r.c15_0 += x[15] * y0; r.c15_1 += x[15] * y1;
    return r;
}

@compute @workgroup_size(16)
fn gemm_sgnt(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(subgroup_invocation_id) lane: u32) {
    let n0 = (wid.x * 16u + lid.x) * 8u;
    let m0 = wid.y * 16u;
    let bt = wid.z;
    let lo_row = v4_a_row(bt, m0 + (lane & 7u));
    let hi_row = v4_a_row(bt, m0 + 8u + (lane & 7u));
    // B^T rows (one per output column, clamped to the last), read 4 k at a time.
    let bb = b_start(bt);
    let r0 = v8_bt_row(bb, n0); let r1 = v8_bt_row(bb, n0 + 1u); let r2 = v8_bt_row(bb, n0 + 2u);
    let r3 = v8_bt_row(bb, n0 + 3u); let r4 = v8_bt_row(bb, n0 + 4u); let r5 = v8_bt_row(bb, n0 + 5u);
    let r6 = v8_bt_row(bb, n0 + 6u); let r7 = v8_bt_row(bb, n0 + 7u);
    var acc = SgAcc();
    let k4s = p.k / 4u;
    for (var k4 = 0u; k4 < k4s; k4++) {
        let lo = v4_a[lo_row + k4];
        let hi = v4_a[hi_row + k4];
        let x00 = subgroupBroadcast(lo, 0u); let x01 = subgroupBroadcast(lo, 1u);
        let x02 = subgroupBroadcast(lo, 2u); let x03 = subgroupBroadcast(lo, 3u);
        let x04 = subgroupBroadcast(lo, 4u); let x05 = subgroupBroadcast(lo, 5u);
        let x06 = subgroupBroadcast(lo, 6u); let x07 = subgroupBroadcast(lo, 7u);
        let x08 = subgroupBroadcast(hi, 0u); let x09 = subgroupBroadcast(hi, 1u);
        let x10 = subgroupBroadcast(hi, 2u); let x11 = subgroupBroadcast(hi, 3u);
        let x12 = subgroupBroadcast(hi, 4u); let x13 = subgroupBroadcast(hi, 5u);
        let x14 = subgroupBroadcast(hi, 6u); let x15 = subgroupBroadcast(hi, 7u);
        let w0 = v4_b[r0 + k4]; let w1 = v4_b[r1 + k4]; let w2 = v4_b[r2 + k4]; let w3 = v4_b[r3 + k4];
        let w4 = v4_b[r4 + k4]; let w5 = v4_b[r5 + k4]; let w6 = v4_b[r6 + k4]; let w7 = v4_b[r7 + k4];
        // The 4 k of this step one by one (components .x to .w): 4-8% faster on lavapipe at the GPT's shapes than a
        // loop over j with w0[j] (dynamically indexed components).
        acc = sg_step(acc, array<f32, 16>(x00.x, x01.x, x02.x, x03.x, x04.x, x05.x, x06.x, x07.x,
                                          x08.x, x09.x, x10.x, x11.x, x12.x, x13.x, x14.x, x15.x),
                      vec4<f32>(w0.x, w1.x, w2.x, w3.x), vec4<f32>(w4.x, w5.x, w6.x, w7.x));
        acc = sg_step(acc, array<f32, 16>(x00.y, x01.y, x02.y, x03.y, x04.y, x05.y, x06.y, x07.y,
                                          x08.y, x09.y, x10.y, x11.y, x12.y, x13.y, x14.y, x15.y),
                      vec4<f32>(w0.y, w1.y, w2.y, w3.y), vec4<f32>(w4.y, w5.y, w6.y, w7.y));
        acc = sg_step(acc, array<f32, 16>(x00.z, x01.z, x02.z, x03.z, x04.z, x05.z, x06.z, x07.z,
                                          x08.z, x09.z, x10.z, x11.z, x12.z, x13.z, x14.z, x15.z),
                      vec4<f32>(w0.z, w1.z, w2.z, w3.z), vec4<f32>(w4.z, w5.z, w6.z, w7.z));
        acc = sg_step(acc, array<f32, 16>(x00.w, x01.w, x02.w, x03.w, x04.w, x05.w, x06.w, x07.w,
                                          x08.w, x09.w, x10.w, x11.w, x12.w, x13.w, x14.w, x15.w),
                      vec4<f32>(w0.w, w1.w, w2.w, w3.w), vec4<f32>(w4.w, w5.w, w6.w, w7.w));
    }
    if (n0 < p.n) {
        sg_store_block(bt, m0, n0, array<vec4<f32>, 32>(
            acc.c00_0, acc.c00_1, acc.c01_0, acc.c01_1, acc.c02_0, acc.c02_1, acc.c03_0, acc.c03_1,
            acc.c04_0, acc.c04_1, acc.c05_0, acc.c05_1, acc.c06_0, acc.c06_1, acc.c07_0, acc.c07_1,
            acc.c08_0, acc.c08_1, acc.c09_0, acc.c09_1, acc.c10_0, acc.c10_1, acc.c11_0, acc.c11_1,
            acc.c12_0, acc.c12_1, acc.c13_0, acc.c13_1, acc.c14_0, acc.c14_1, acc.c15_0, acc.c15_1,
        ));
    }
}

@compute @workgroup_size(16)
fn gemm_sgtn(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(subgroup_invocation_id) lane: u32) {
    let n0 = (wid.x * 16u + lid.x) * 8u;
    let m0 = wid.y * 16u;
    let bt = wid.z;
    // A^T (K, M): the 16 rows at one k are 4 vec4s; lane l loads vec4 l & 3 (clamped to the row's last vec4; M is a
    // multiple of 4) and the others take it by broadcast.
    let aa = (a_start(bt) + min(m0 + 4u * (lane & 3u), p.m - 4u)) / 4u;
    let a_cs4 = p.a_cs / 4u;
    let b_rs4 = p.b_rs / 4u;
    let bb0 = (b_start(bt) + v4_col_group(n0)) / 4u;
    let bb1 = (b_start(bt) + v4_col_group(n0 + 4u)) / 4u;
    var c00_0 = vec4<f32>(0.0); var c00_1 = vec4<f32>(0.0); var c01_0 = vec4<f32>(0.0); var c01_1 = vec4<f32>(0.0);
    var c02_0 = vec4<f32>(0.0); var c02_1 = vec4<f32>(0.0); var c03_0 = vec4<f32>(0.0); var c03_1 = vec4<f32>(0.0);
    var c04_0 = vec4<f32>(0.0); var c04_1 = vec4<f32>(0.0); var c05_0 = vec4<f32>(0.0); var c05_1 = vec4<f32>(0.0);
    var c06_0 = vec4<f32>(0.0); var c06_1 = vec4<f32>(0.0); var c07_0 = vec4<f32>(0.0); var c07_1 = vec4<f32>(0.0);
    var c08_0 = vec4<f32>(0.0); var c08_1 = vec4<f32>(0.0); var c09_0 = vec4<f32>(0.0); var c09_1 = vec4<f32>(0.0);
    var c10_0 = vec4<f32>(0.0); var c10_1 = vec4<f32>(0.0); var c11_0 = vec4<f32>(0.0); var c11_1 = vec4<f32>(0.0);
    var c12_0 = vec4<f32>(0.0); var c12_1 = vec4<f32>(0.0); var c13_0 = vec4<f32>(0.0); var c13_1 = vec4<f32>(0.0);
    var c14_0 = vec4<f32>(0.0); var c14_1 = vec4<f32>(0.0); var c15_0 = vec4<f32>(0.0); var c15_1 = vec4<f32>(0.0);
    for (var k = 0u; k < p.k; k++) {
        let mine = v4_a[aa + k * a_cs4];
        let q0 = subgroupBroadcast(mine, 0u); let q1 = subgroupBroadcast(mine, 1u);
        let q2 = subgroupBroadcast(mine, 2u); let q3 = subgroupBroadcast(mine, 3u);
        let kb = k * b_rs4;
        let y0 = v4_b[bb0 + kb];
        let y1 = v4_b[bb1 + kb];
        c00_0 += q0.x * y0; c00_1 += q0.x * y1; c01_0 += q0.y * y0; c01_1 += q0.y * y1;
        c02_0 += q0.z * y0; c02_1 += q0.z * y1; c03_0 += q0.w * y0; c03_1 += q0.w * y1;
        c04_0 += q1.x * y0; c04_1 += q1.x * y1; c05_0 += q1.y * y0; c05_1 += q1.y * y1;
        c06_0 += q1.z * y0; c06_1 += q1.z * y1; c07_0 += q1.w * y0; c07_1 += q1.w * y1;
        c08_0 += q2.x * y0; c08_1 += q2.x * y1; c09_0 += q2.y * y0; c09_1 += q2.y * y1;
        c10_0 += q2.z * y0; c10_1 += q2.z * y1; c11_0 += q2.w * y0; c11_1 += q2.w * y1;
        c12_0 += q3.x * y0; c12_1 += q3.x * y1; c13_0 += q3.y * y0; c13_1 += q3.y * y1;
        c14_0 += q3.z * y0; c14_1 += q3.z * y1; c15_0 += q3.w * y0; c15_1 += q3.w * y1;
    }
    if (n0 < p.n) {
        sg_store_block(bt, m0, n0, array<vec4<f32>, 32>(
            c00_0, c00_1, c01_0, c01_1, c02_0, c02_1, c03_0, c03_1,
            c04_0, c04_1, c05_0, c05_1, c06_0, c06_1, c07_0, c07_1,
            c08_0, c08_1, c09_0, c09_1, c10_0, c10_1, c11_0, c11_1,
            c12_0, c12_1, c13_0, c13_1, c14_0, c14_1, c15_0, c15_1,
        ));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// gemm_srnn / gemm_srnt / gemm_srtn ("subgroup rows"): for attention's per-head products, with few columns ((T, T) @
// (T, HS), HS of 16 to 64, where the kernels above would leave most lanes of a workgroup on clamped columns past N)
// or a short K (q k^T, K = HS). Here the lanes run across rows: each invocation owns 8 rows x 16 columns (vec8's
// accumulators and step), a workgroup of 8 (one subgroup) 64 rows x the same 16 columns. Each lane loads its own rows
// of A; B's 16 columns at 4 k (16 vec4s, the same for every lane) are loaded 2 per lane and shared by
// subgroupBroadcast. Per 4 k a lane loads 10 vec4s (12 in srtn) for 128 vec4 multiply-adds, as in gemm_sgnn.
//   srnn: A (M, K) row-major, B (K, N) row-major; srnt: B stored as B^T (N, K); srtn: A stored as A^T (K, M).
// Causal products (`p.causal`, see matmul.wgsl): where A is triangular the k loop covers only the workgroup's
// non-zero part of it (the same sums: the skipped terms are products with exact zeros), and where C is causal a
// workgroup entirely above the diagonal only stores its zeros.
// grid: (ceil(N / 16), ceil(M / 64), batch), workgroup 8.

// The k range [k_lo, k_hi) the workgroup of rows [mw, mw + 64) must sum over: all of K unless A is triangular.
fn sr_k_range(mw: u32) -> vec2<u32> {
    var lo = 0u;
    var hi = p.k;
    if ((p.causal & CAUSAL_A_LOWER) != 0u) { hi = min(p.k, mw + 64u); } // A(m, k) = 0 for k > m
    if ((p.causal & CAUSAL_A_UPPER) != 0u) { lo = min(p.k, mw); }       // A(m, k) = 0 for k < m
    return vec2<u32>(lo, hi);
}

@compute @workgroup_size(8)
fn gemm_srnn(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(subgroup_invocation_id) lane: u32) {
    let n0 = wid.x * 16u;
    let mw = wid.y * 64u;
    let m0 = mw + lid.x * 8u;
    let bt = wid.z;
    let a0 = v4_a_row(bt, m0); let a1 = v4_a_row(bt, m0 + 1u); let a2 = v4_a_row(bt, m0 + 2u);
    let a3 = v4_a_row(bt, m0 + 3u); let a4 = v4_a_row(bt, m0 + 4u); let a5 = v4_a_row(bt, m0 + 5u);
    let a6 = v4_a_row(bt, m0 + 6u); let a7 = v4_a_row(bt, m0 + 7u);
    // Lane l loads column group l & 3 (columns n0 + 4 (l & 3) ..) of rows 4 k4 + (l >> 2) and 4 k4 + 2 + (l >> 2):
    // broadcast from lanes 0..3 of `lo`, they are B's row 4 k4; from lanes 4..7, row 4 k4 + 1; `hi`: + 2, + 3.
    let l = lane & 7u;
    let bcol = (b_start(bt) + v4_col_group(n0 + 4u * (l & 3u))) / 4u;
    let b_rs4 = p.b_rs / 4u;
    let kr = sr_k_range(mw);
    var acc = V8Acc();
    for (var k4 = kr.x / 4u; k4 < (kr.y + 3u) / 4u; k4++) {
        let x0 = v4_a[a0 + k4]; let x1 = v4_a[a1 + k4]; let x2 = v4_a[a2 + k4]; let x3 = v4_a[a3 + k4];
        let x4 = v4_a[a4 + k4]; let x5 = v4_a[a5 + k4]; let x6 = v4_a[a6 + k4]; let x7 = v4_a[a7 + k4];
        let lo = v4_b[bcol + (4u * k4 + (l >> 2u)) * b_rs4];
        let hi = v4_b[bcol + (4u * k4 + 2u + (l >> 2u)) * b_rs4];
        acc = v8_step(acc, x0.x, x1.x, x2.x, x3.x, x4.x, x5.x, x6.x, x7.x, subgroupBroadcast(lo, 0u),
                      subgroupBroadcast(lo, 1u), subgroupBroadcast(lo, 2u), subgroupBroadcast(lo, 3u));
        acc = v8_step(acc, x0.y, x1.y, x2.y, x3.y, x4.y, x5.y, x6.y, x7.y, subgroupBroadcast(lo, 4u),
                      subgroupBroadcast(lo, 5u), subgroupBroadcast(lo, 6u), subgroupBroadcast(lo, 7u));
        acc = v8_step(acc, x0.z, x1.z, x2.z, x3.z, x4.z, x5.z, x6.z, x7.z, subgroupBroadcast(hi, 0u),
                      subgroupBroadcast(hi, 1u), subgroupBroadcast(hi, 2u), subgroupBroadcast(hi, 3u));
        acc = v8_step(acc, x0.w, x1.w, x2.w, x3.w, x4.w, x5.w, x6.w, x7.w, subgroupBroadcast(hi, 4u),
                      subgroupBroadcast(hi, 5u), subgroupBroadcast(hi, 6u), subgroupBroadcast(hi, 7u));
    }
    if (m0 < p.m) {
        v8_store_block(bt, m0, n0, acc);
    }
}

@compute @workgroup_size(8)
fn gemm_srtn(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(subgroup_invocation_id) lane: u32) {
    let n0 = wid.x * 16u;
    let mw = wid.y * 64u;
    let m0 = mw + lid.x * 8u;
    let bt = wid.z;
    // A^T (K, M): this lane's 8 rows at one k are 2 vec4s (each clamped to the row's last vec4; M is a multiple of 4).
    let ab = a_start(bt);
    let xa = (ab + min(m0, p.m - 4u)) / 4u;
    let xb = (ab + min(m0 + 4u, p.m - 4u)) / 4u;
    let a_cs4 = p.a_cs / 4u;
    // Lane l loads column group l & 3 of row k + (l >> 2) (clamped to the last row): lanes 0..3 give row k, 4..7 k + 1.
    let l = lane & 7u;
    let bcol = (b_start(bt) + v4_col_group(n0 + 4u * (l & 3u))) / 4u;
    let b_rs4 = p.b_rs / 4u;
    let kr = sr_k_range(mw);
    var acc = V8Acc();
    for (var k = kr.x; k < kr.y; k += 2u) {
        let y = v4_b[bcol + min(k + (l >> 2u), p.k - 1u) * b_rs4];
        let u = v4_a[xa + k * a_cs4];
        let v = v4_a[xb + k * a_cs4];
        acc = v8_step(acc, u.x, u.y, u.z, u.w, v.x, v.y, v.z, v.w, subgroupBroadcast(y, 0u),
                      subgroupBroadcast(y, 1u), subgroupBroadcast(y, 2u), subgroupBroadcast(y, 3u));
        if (k + 1u < kr.y) {
            let u1 = v4_a[xa + (k + 1u) * a_cs4];
            let v1 = v4_a[xb + (k + 1u) * a_cs4];
            acc = v8_step(acc, u1.x, u1.y, u1.z, u1.w, v1.x, v1.y, v1.z, v1.w, subgroupBroadcast(y, 4u),
                          subgroupBroadcast(y, 5u), subgroupBroadcast(y, 6u), subgroupBroadcast(y, 7u));
        }
    }
    if (m0 < p.m) {
        v8_store_block(bt, m0, n0, acc);
    }
}

// gemm_srnt: B stored as B^T (N, K), attention's scores (q k^T) and datt (dout v^T). Lane l loads B^T's rows (output
// columns) n0 + l and n0 + 8 + l, 4 k at a time, and every lane takes the 16 columns' vec4s by broadcast. Where C is
// causal (CAUSAL_C), a workgroup whose columns all lie above its rows' diagonal (n0 > its last row) skips the sum and
// only stores its zeros.
@compute @workgroup_size(8)
fn gemm_srnt(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(subgroup_invocation_id) lane: u32) {
    let n0 = wid.x * 16u;
    let mw = wid.y * 64u;
    let m0 = mw + lid.x * 8u;
    let bt = wid.z;
    let a0 = v4_a_row(bt, m0); let a1 = v4_a_row(bt, m0 + 1u); let a2 = v4_a_row(bt, m0 + 2u);
    let a3 = v4_a_row(bt, m0 + 3u); let a4 = v4_a_row(bt, m0 + 4u); let a5 = v4_a_row(bt, m0 + 5u);
    let a6 = v4_a_row(bt, m0 + 6u); let a7 = v4_a_row(bt, m0 + 7u);
    let l = lane & 7u;
    let bb = b_start(bt);
    let lo_row = v8_bt_row(bb, n0 + l);
    let hi_row = v8_bt_row(bb, n0 + 8u + l);
    var k4s = p.k / 4u;
    if ((p.causal & CAUSAL_C) != 0u && n0 > mw + 63u) { k4s = 0u; }
    var acc = V8Acc();
    for (var k4 = 0u; k4 < k4s; k4++) {
        let x0 = v4_a[a0 + k4]; let x1 = v4_a[a1 + k4]; let x2 = v4_a[a2 + k4]; let x3 = v4_a[a3 + k4];
        let x4 = v4_a[a4 + k4]; let x5 = v4_a[a5 + k4]; let x6 = v4_a[a6 + k4]; let x7 = v4_a[a7 + k4];
        let lo = v4_b[lo_row + k4];
        let hi = v4_b[hi_row + k4];
        // Column c's 4 k: w<c>.
        let w0 = subgroupBroadcast(lo, 0u); let w1 = subgroupBroadcast(lo, 1u);
        let w2 = subgroupBroadcast(lo, 2u); let w3 = subgroupBroadcast(lo, 3u);
        let w4 = subgroupBroadcast(lo, 4u); let w5 = subgroupBroadcast(lo, 5u);
        let w6 = subgroupBroadcast(lo, 6u); let w7 = subgroupBroadcast(lo, 7u);
        let w8 = subgroupBroadcast(hi, 0u); let w9 = subgroupBroadcast(hi, 1u);
        let w10 = subgroupBroadcast(hi, 2u); let w11 = subgroupBroadcast(hi, 3u);
        let w12 = subgroupBroadcast(hi, 4u); let w13 = subgroupBroadcast(hi, 5u);
        let w14 = subgroupBroadcast(hi, 6u); let w15 = subgroupBroadcast(hi, 7u);
        acc = v8_step(acc, x0.x, x1.x, x2.x, x3.x, x4.x, x5.x, x6.x, x7.x,
                      vec4<f32>(w0.x, w1.x, w2.x, w3.x), vec4<f32>(w4.x, w5.x, w6.x, w7.x),
                      vec4<f32>(w8.x, w9.x, w10.x, w11.x), vec4<f32>(w12.x, w13.x, w14.x, w15.x));
        acc = v8_step(acc, x0.y, x1.y, x2.y, x3.y, x4.y, x5.y, x6.y, x7.y,
                      vec4<f32>(w0.y, w1.y, w2.y, w3.y), vec4<f32>(w4.y, w5.y, w6.y, w7.y),
                      vec4<f32>(w8.y, w9.y, w10.y, w11.y), vec4<f32>(w12.y, w13.y, w14.y, w15.y));
        acc = v8_step(acc, x0.z, x1.z, x2.z, x3.z, x4.z, x5.z, x6.z, x7.z,
                      vec4<f32>(w0.z, w1.z, w2.z, w3.z), vec4<f32>(w4.z, w5.z, w6.z, w7.z),
                      vec4<f32>(w8.z, w9.z, w10.z, w11.z), vec4<f32>(w12.z, w13.z, w14.z, w15.z));
        acc = v8_step(acc, x0.w, x1.w, x2.w, x3.w, x4.w, x5.w, x6.w, x7.w,
                      vec4<f32>(w0.w, w1.w, w2.w, w3.w), vec4<f32>(w4.w, w5.w, w6.w, w7.w),
                      vec4<f32>(w8.w, w9.w, w10.w, w11.w), vec4<f32>(w12.w, w13.w, w14.w, w15.w));
    }
    if (m0 < p.m) {
        v8_store_block(bt, m0, n0, acc);
    }
}

// gemm_srxn: the subgroup-rows kernel with A read as scalars through its strides, for products whose A is not
// 4-aligned (any layout of A, any M and K), like a GPT's LM head backward when the vocabulary is not a multiple of 4:
// dinp = dlogits (BT, V) @ wte (V, C) and dwte = dlogits^T @ x, where the rows of dlogits start V floats apart. B is
// row-major and 4-aligned as in srnn. Per 2 k a lane loads 16 scalars of A and one vec4 of B (its column group of row
// k or k + 1, broadcast as in srtn) for 64 vec4 multiply-adds.
@group(0) @binding(38) var<storage, read> sx_a: array<f32>;

@compute @workgroup_size(8)
fn gemm_srxn(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(subgroup_invocation_id) lane: u32) {
    let n0 = wid.x * 16u;
    let mw = wid.y * 64u;
    let m0 = mw + lid.x * 8u;
    let bt = wid.z;
    // Where this lane's 8 rows of A start (rows past M clamped to the last).
    let ab = a_start(bt);
    let last = p.m - 1u;
    let r0 = ab + min(m0, last) * p.a_rs; let r1 = ab + min(m0 + 1u, last) * p.a_rs;
    let r2 = ab + min(m0 + 2u, last) * p.a_rs; let r3 = ab + min(m0 + 3u, last) * p.a_rs;
    let r4 = ab + min(m0 + 4u, last) * p.a_rs; let r5 = ab + min(m0 + 5u, last) * p.a_rs;
    let r6 = ab + min(m0 + 6u, last) * p.a_rs; let r7 = ab + min(m0 + 7u, last) * p.a_rs;
    let l = lane & 7u;
    let bcol = (b_start(bt) + v4_col_group(n0 + 4u * (l & 3u))) / 4u;
    let b_rs4 = p.b_rs / 4u;
    let kr = sr_k_range(mw);
    var acc = V8Acc();
    for (var k = kr.x; k < kr.y; k += 2u) {
        let y = v4_b[bcol + min(k + (l >> 2u), p.k - 1u) * b_rs4];
        let ka = k * p.a_cs;
        acc = v8_step(acc, sx_a[r0 + ka], sx_a[r1 + ka], sx_a[r2 + ka], sx_a[r3 + ka], sx_a[r4 + ka], sx_a[r5 + ka],
                      sx_a[r6 + ka], sx_a[r7 + ka], subgroupBroadcast(y, 0u), subgroupBroadcast(y, 1u),
                      subgroupBroadcast(y, 2u), subgroupBroadcast(y, 3u));
        if (k + 1u < kr.y) {
            let kb = ka + p.a_cs;
            acc = v8_step(acc, sx_a[r0 + kb], sx_a[r1 + kb], sx_a[r2 + kb], sx_a[r3 + kb], sx_a[r4 + kb],
                          sx_a[r5 + kb], sx_a[r6 + kb], sx_a[r7 + kb], subgroupBroadcast(y, 4u),
                          subgroupBroadcast(y, 5u), subgroupBroadcast(y, 6u), subgroupBroadcast(y, 7u));
        }
    }
    if (m0 < p.m) {
        v8_store_block(bt, m0, n0, acc);
    }
}
