// The subgroup GEMM kernels: for CPU adapters (lavapipe) that have subgroups. Appended to matmul.wgsl (whose Params,
// bindings and epilogue helpers they use) to make the `matmul_subgroup` module, which is compiled only on a device
// with wgpu's SUBGROUP feature and a minimum subgroup size of at least 8 (src/ops/matmul.rs checks both, and checks
// the kernel's result once against gemm_v4nn before the tuner may time it).
//
// A 16-row x 8-column block per invocation (32 vec4 accumulators), columns as in the vec4 kernels. On lavapipe every
// storage-buffer load is a loop over the SIMD lanes (a gather), even when all lanes read the same address, so the
// vec4 kernels spend most of their time loading A's rows, which every invocation of a workgroup reads alike. Here the
// 8 lanes of a subgroup each load a different row's vec4 (lane l: rows m0 + l and m0 + 8 + l) and pass them around
// with subgroupBroadcast, a register shuffle: per 4 k an invocation loads 2 vec4s of A instead of 16, and 8 of B.
// Measured at 1024^3 on lavapipe: about 2.8x gemm_v4nn's GFLOP/s (8-row and 32-row blocks, 16 columns, and staging
// A in workgroup memory were slower).
//
// Every invocation stays active to the end (subgroupBroadcast needs its source lane): columns past N are clamped on
// load and masked on store, rows past M clamped on load (v4_a_row) and masked on store. Same requirements as the
// vec4 kernels (`MatmulKernel::supports`), same bindings (19 a, 20 b, 21 c, 22 bias, 36 aux).
//   sgnn: A (M, K) row-major, B (K, N) row-major; sgnt: B stored as B^T (N, K); sgtn: A stored as A^T (K, M).
// grid: (ceil(N / 128), ceil(M / 16), batch), workgroup 16.

struct SgAcc {
    c000: vec4<f32>, c001: vec4<f32>,
    c010: vec4<f32>, c011: vec4<f32>,
    c020: vec4<f32>, c021: vec4<f32>,
    c030: vec4<f32>, c031: vec4<f32>,
    c040: vec4<f32>, c041: vec4<f32>,
    c050: vec4<f32>, c051: vec4<f32>,
    c060: vec4<f32>, c061: vec4<f32>,
    c070: vec4<f32>, c071: vec4<f32>,
    c080: vec4<f32>, c081: vec4<f32>,
    c090: vec4<f32>, c091: vec4<f32>,
    c100: vec4<f32>, c101: vec4<f32>,
    c110: vec4<f32>, c111: vec4<f32>,
    c120: vec4<f32>, c121: vec4<f32>,
    c130: vec4<f32>, c131: vec4<f32>,
    c140: vec4<f32>, c141: vec4<f32>,
    c150: vec4<f32>, c151: vec4<f32>,
}

// acc += one k's outer product: rows' values x00..x15 times the 8 columns' values (y0, y1).
fn sg_step(acc: SgAcc,
           x00: f32, x01: f32, x02: f32, x03: f32, x04: f32, x05: f32, x06: f32, x07: f32,
           x08: f32, x09: f32, x10: f32, x11: f32, x12: f32, x13: f32, x14: f32, x15: f32,
           y0: vec4<f32>, y1: vec4<f32>) -> SgAcc {
    var r = acc;
    r.c000 += x00 * y0; r.c001 += x00 * y1;
    r.c010 += x01 * y0; r.c011 += x01 * y1;
    r.c020 += x02 * y0; r.c021 += x02 * y1;
    r.c030 += x03 * y0; r.c031 += x03 * y1;
    r.c040 += x04 * y0; r.c041 += x04 * y1;
    r.c050 += x05 * y0; r.c051 += x05 * y1;
    r.c060 += x06 * y0; r.c061 += x06 * y1;
    r.c070 += x07 * y0; r.c071 += x07 * y1;
    r.c080 += x08 * y0; r.c081 += x08 * y1;
    r.c090 += x09 * y0; r.c091 += x09 * y1;
    r.c100 += x10 * y0; r.c101 += x10 * y1;
    r.c110 += x11 * y0; r.c111 += x11 * y1;
    r.c120 += x12 * y0; r.c121 += x12 * y1;
    r.c130 += x13 * y0; r.c131 += x13 * y1;
    r.c140 += x14 * y0; r.c141 += x14 * y1;
    r.c150 += x15 * y0; r.c151 += x15 * y1;
    return r;
}

fn sg_store_block(bt: u32, m0: u32, n0: u32, r: SgAcc) {
    v4_store(bt, m0, n0, r.c000); v4_store(bt, m0, n0 + 4u, r.c001);
    v4_store(bt, m0 + 1u, n0, r.c010); v4_store(bt, m0 + 1u, n0 + 4u, r.c011);
    v4_store(bt, m0 + 2u, n0, r.c020); v4_store(bt, m0 + 2u, n0 + 4u, r.c021);
    v4_store(bt, m0 + 3u, n0, r.c030); v4_store(bt, m0 + 3u, n0 + 4u, r.c031);
    v4_store(bt, m0 + 4u, n0, r.c040); v4_store(bt, m0 + 4u, n0 + 4u, r.c041);
    v4_store(bt, m0 + 5u, n0, r.c050); v4_store(bt, m0 + 5u, n0 + 4u, r.c051);
    v4_store(bt, m0 + 6u, n0, r.c060); v4_store(bt, m0 + 6u, n0 + 4u, r.c061);
    v4_store(bt, m0 + 7u, n0, r.c070); v4_store(bt, m0 + 7u, n0 + 4u, r.c071);
    v4_store(bt, m0 + 8u, n0, r.c080); v4_store(bt, m0 + 8u, n0 + 4u, r.c081);
    v4_store(bt, m0 + 9u, n0, r.c090); v4_store(bt, m0 + 9u, n0 + 4u, r.c091);
    v4_store(bt, m0 + 10u, n0, r.c100); v4_store(bt, m0 + 10u, n0 + 4u, r.c101);
    v4_store(bt, m0 + 11u, n0, r.c110); v4_store(bt, m0 + 11u, n0 + 4u, r.c111);
    v4_store(bt, m0 + 12u, n0, r.c120); v4_store(bt, m0 + 12u, n0 + 4u, r.c121);
    v4_store(bt, m0 + 13u, n0, r.c130); v4_store(bt, m0 + 13u, n0 + 4u, r.c131);
    v4_store(bt, m0 + 14u, n0, r.c140); v4_store(bt, m0 + 14u, n0 + 4u, r.c141);
    v4_store(bt, m0 + 15u, n0, r.c150); v4_store(bt, m0 + 15u, n0 + 4u, r.c151);
}

// The first element of this invocation's two column vec4s, clamped inside the row (N is a multiple of 4).
fn sg_col(n: u32) -> u32 {
    return min(n, p.n - 4u);
}

@compute @workgroup_size(16)
fn gemm_sgnn(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(subgroup_invocation_id) lane: u32) {
    let n0 = (wid.x * 16u + lid.x) * 8u;
    let m0 = wid.y * 16u;
    let bt = wid.z;
    // This lane's two rows of A (the same for every subgroup of the workgroup).
    let lo_row = v4_a_row(bt, m0 + (lane & 7u));
    let hi_row = v4_a_row(bt, m0 + 8u + (lane & 7u));
    let b_rs4 = p.b_rs / 4u;
    let bb0 = (p.b_off + bt * p.b_bs + sg_col(n0)) / 4u;
    let bb1 = (p.b_off + bt * p.b_bs + sg_col(n0 + 4u)) / 4u;
    var acc: SgAcc;
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
        for (var j = 0u; j < 4u; j++) {
            let kb = (k4 * 4u + j) * b_rs4;
            acc = sg_step(acc, x00[j], x01[j], x02[j], x03[j], x04[j], x05[j], x06[j], x07[j],
                          x08[j], x09[j], x10[j], x11[j], x12[j], x13[j], x14[j], x15[j],
                          v4_b[bb0 + kb], v4_b[bb1 + kb]);
        }
    }
    if (n0 < p.n) { sg_store_block(bt, m0, n0, acc); }
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
    let bb = p.b_off + bt * p.b_bs;
    let r0 = v8_bt_row(bb, n0); let r1 = v8_bt_row(bb, n0 + 1u); let r2 = v8_bt_row(bb, n0 + 2u);
    let r3 = v8_bt_row(bb, n0 + 3u); let r4 = v8_bt_row(bb, n0 + 4u); let r5 = v8_bt_row(bb, n0 + 5u);
    let r6 = v8_bt_row(bb, n0 + 6u); let r7 = v8_bt_row(bb, n0 + 7u);
    var acc: SgAcc;
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
        for (var j = 0u; j < 4u; j++) {
            acc = sg_step(acc, x00[j], x01[j], x02[j], x03[j], x04[j], x05[j], x06[j], x07[j],
                          x08[j], x09[j], x10[j], x11[j], x12[j], x13[j], x14[j], x15[j],
                          vec4<f32>(w0[j], w1[j], w2[j], w3[j]), vec4<f32>(w4[j], w5[j], w6[j], w7[j]));
        }
    }
    if (n0 < p.n) { sg_store_block(bt, m0, n0, acc); }
}

@compute @workgroup_size(16)
fn gemm_sgtn(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(subgroup_invocation_id) lane: u32) {
    let n0 = (wid.x * 16u + lid.x) * 8u;
    let m0 = wid.y * 16u;
    let bt = wid.z;
    // A^T (K, M): the 16 rows at one k are 4 vec4s; lane l loads vec4 l & 3 (clamped to the row's last vec4; M is a
    // multiple of 4) and the others take it by broadcast.
    let aa = (p.a_off + bt * p.a_bs + min(m0 + 4u * (lane & 3u), p.m - 4u)) / 4u;
    let a_cs4 = p.a_cs / 4u;
    let b_rs4 = p.b_rs / 4u;
    let bb0 = (p.b_off + bt * p.b_bs + sg_col(n0)) / 4u;
    let bb1 = (p.b_off + bt * p.b_bs + sg_col(n0 + 4u)) / 4u;
    var acc: SgAcc;
    for (var k = 0u; k < p.k; k++) {
        let mine = v4_a[aa + k * a_cs4];
        let q0 = subgroupBroadcast(mine, 0u); let q1 = subgroupBroadcast(mine, 1u);
        let q2 = subgroupBroadcast(mine, 2u); let q3 = subgroupBroadcast(mine, 3u);
        let kb = k * b_rs4;
        acc = sg_step(acc, q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w,
                      q2.x, q2.y, q2.z, q2.w, q3.x, q3.y, q3.z, q3.w,
                      v4_b[bb0 + kb], v4_b[bb1 + kb]);
    }
    if (n0 < p.n) { sg_store_block(bt, m0, n0, acc); }
}
