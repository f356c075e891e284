//! GPU GEMM kernels (naive, tiled16, blocked64, skinny8, vec4, vec8, subgroup, subgroup_rows, tile128) and the linear
//! layer built on them against the CPU reference: odd shapes that are not multiples of any tile, batches (also in
//! groups, with causal attention's zero triangles), transposed and padded layouts, alpha/beta; matmul forward
//! with and without bias; matmul backward in all four dinp/dbias combinations accumulating onto nonzero gradients;
//! run-to-run determinism; and finite differences of the reference backward (where the gradient is first defined).

mod common;
use common::*;
use dpo3d::gpu::{Plan, Tensor};
use dpo3d::ops::elementwise;
use dpo3d::ops::matmul::{self as ops, GemmDims, MatmulKernel, MatrixLayout};
use dpo3d::reference::elementwise as cpu_elementwise;
use dpo3d::reference::matmul as cpu;
use dpo3d::Gpu;

fn upload(gpu: &Gpu, v: &[f32]) -> Tensor {
    Tensor::from_f32(gpu, "t", v).unwrap()
}

/// Elements a layout needs for a (batch, rows, cols) matrix.
fn extent(l: &MatrixLayout, batch: usize, rows: usize, cols: usize) -> usize {
    l.max_index(batch, rows, cols).map_or(1, |i| i + 1)
}

/// A spread of GEMM problems: every size in {1, 3, 17, 65, 130} appears as M, N and K; both transpositions of A
/// and B; batch 1 and 3; offsets, padded row strides, a column-major C; alpha/beta other than 1/0.
fn gemm_cases() -> Vec<GemmDims> {
    let shapes = [
        (1, 1, 1),
        (3, 17, 65),
        (17, 65, 130),
        (65, 130, 3),
        (130, 3, 17),
        (1, 130, 65),
        (130, 1, 3),
        (65, 65, 1),
        (17, 3, 130),
        (3, 130, 17),
        (130, 130, 65),
    ];
    let mut cases = Vec::new();
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        let mut d = GemmDims::new(m, n, k);
        if i % 2 == 1 {
            d = d.transpose_a();
        }
        if (i / 2) % 2 == 1 {
            d = d.transpose_b();
        }
        if i % 3 == 1 {
            d = d.batched(3);
        }
        d = match i % 4 {
            0 => d,
            1 => d.scaled(0.5, 1.0),
            2 => d.scaled(-1.25, 0.75),
            _ => d.scaled(2.0, 0.0),
        };
        cases.push(d);
    }
    // Padded, offset, strided-batch layouts: a sub-block of a bigger buffer, like one head of an attention tensor.
    let (m, n, k) = (33, 19, 40);
    cases.push(
        GemmDims::new(m, n, k)
            .batched(3)
            .with_a(MatrixLayout::strided(3 * k, 1, k).at(7)) // rows of 3K, batches interleaved within each row
            .with_b(MatrixLayout::strided(1, k + 2, n * (k + 2)).at(2)) // B^T with padded rows
            .with_c(MatrixLayout::strided(n + 5, 1, m * (n + 5) + 3).at(1))
            .scaled(1.5, -0.5),
    );
    cases.push(GemmDims::new(70, 66, 18).with_c(MatrixLayout::col_major(70, 66)).transpose_a().scaled(1.0, 1.0));
    cases
}

/// The same product described to the CPU reference: the test case's layouts copied field by field (the reference
/// has its own types, so it shares no code with the GPU side).
fn cpu_gemm(d: GemmDims) -> cpu::Gemm {
    let s = |l: MatrixLayout| cpu::Strides { offset: l.offset, batch: l.batch, row: l.row, col: l.col };
    cpu::Gemm {
        m: d.m,
        n: d.n,
        k: d.k,
        batch: d.batch,
        a: s(d.a),
        b: s(d.b),
        c: s(d.c),
        alpha: d.alpha,
        beta: d.beta,
        bias_batch: d.bias_batch,
    }
}

/// C after `kernel`'s product on the GPU, C starting as `c0`.
fn gemm_on_gpu(gpu: &Gpu, kernel: MatmulKernel, d: GemmDims, a: &[f32], b: &[f32], c0: &[f32]) -> Vec<f32> {
    let (ta, tb, tc) = (upload(gpu, a), upload(gpu, b), upload(gpu, c0));
    let mut plan = Plan::new();
    plan.push(ops::gemm_with(gpu, kernel, &tc, &ta, &tb, d));
    plan.submit(gpu);
    tc.to_vec(gpu).unwrap()
}

fn run_gemm_case(gpu: &Gpu, kernel: MatmulKernel, d: GemmDims, seed: u64) {
    let (alen, blen, clen) =
        (extent(&d.a, d.batch, d.m, d.k), extent(&d.b, d.batch, d.k, d.n), extent(&d.c, d.batch, d.m, d.n));
    let a = randn(seed, alen, 1.0);
    let b = randn(seed + 1, blen, 1.0);
    let c0 = randn(seed + 2, clen, 1.0);
    let got = gemm_on_gpu(gpu, kernel, d, &a, &b, &c0);
    let mut want = c0.clone();
    cpu::gemm(&mut want, &a, &b, cpu_gemm(d));
    let what = format!(
        "{} gemm m={} n={} k={} batch={} alpha={} beta={}",
        kernel.name(),
        d.m,
        d.n,
        d.k,
        d.batch,
        d.alpha,
        d.beta
    );
    // Elements outside C's layout (padding) must be untouched: want keeps c0 there too.
    assert_close(&what, &got, &want, 2e-4, 1e-4);
}

#[test]
fn should_match_reference_gemm_naive() {
    let gpu = gpu();
    for (i, d) in gemm_cases().into_iter().enumerate() {
        run_gemm_case(&gpu, MatmulKernel::Naive, d, 100 + 10 * i as u64);
    }
}

#[test]
fn should_match_reference_gemm_tiled16() {
    let gpu = gpu();
    for (i, d) in gemm_cases().into_iter().enumerate() {
        run_gemm_case(&gpu, MatmulKernel::Tiled16, d, 200 + 10 * i as u64);
    }
}

#[test]
fn should_match_reference_gemm_blocked64() {
    let gpu = gpu();
    for (i, d) in gemm_cases().into_iter().enumerate() {
        run_gemm_case(&gpu, MatmulKernel::Blocked64, d, 300 + 10 * i as u64);
    }
}

#[test]
fn should_match_reference_gemm_skinny8() {
    // Skinny8 is chosen for M <= 16 but correct for any M (rows in blocks of 8, ragged last block).
    let gpu = gpu();
    for (i, d) in gemm_cases().into_iter().enumerate() {
        run_gemm_case(&gpu, MatmulKernel::Skinny8, d, 400 + 10 * i as u64);
    }
}

#[test]
fn should_match_reference_gemm_tile128() {
    let gpu = gpu();
    for (i, d) in gemm_cases().into_iter().enumerate() {
        run_gemm_case(&gpu, MatmulKernel::Tile128, d, 500 + 10 * i as u64);
    }
}

/// Products the vec4 kernel computes (unit-stride vec4 axes, lengths and offsets multiples of 4), covering its three
/// variants, ragged rows (M not a multiple of 4) and columns (N not a multiple of 8, and for NT of 4), batches with
/// padded strides and offsets, alpha/beta.
fn vec4_cases() -> Vec<GemmDims> {
    vec![
        GemmDims::new(5, 12, 8),                                        // NN, second column group clamped
        GemmDims::new(130, 136, 68).batched(3).scaled(0.5, 1.0),        // NN, batched, accumulating
        GemmDims::new(7, 13, 20).transpose_b().batched(2),              // NT, ragged N
        GemmDims::new(33, 8, 4).transpose_b().scaled(-1.25, 0.75),      // NT, K = 4
        GemmDims::new(12, 20, 9).transpose_a().batched(2).accumulate(), // TN, odd K
        GemmDims::new(64, 4, 3).transpose_a(),                          // TN, one column group
        GemmDims::new(9, 16, 12)
            .batched(2)
            .with_a(MatrixLayout::strided(16, 1, 9 * 16 + 8).at(4)) // padded rows, offset
            .with_b(MatrixLayout::strided(20, 1, 12 * 20).at(8))
            .with_c(MatrixLayout::strided(17, 1, 9 * 17 + 1).at(3)), // C's strides are free
    ]
}

#[test]
fn should_match_reference_gemm_vec4() {
    let gpu = gpu();
    let cases = vec4_cases();
    for d in &cases {
        assert!(MatmulKernel::Vec4.supports(d), "vec4 case not supported: {d:?}");
    }
    for (i, d) in cases.into_iter().enumerate() {
        run_gemm_case(&gpu, MatmulKernel::Vec4, d, 600 + 10 * i as u64);
    }
    // Misaligned or strided operands are refused (the tuner then never offers it).
    assert!(!MatmulKernel::Vec4.supports(&GemmDims::new(4, 6, 8)));
    assert!(!MatmulKernel::Vec4.supports(&GemmDims::new(4, 8, 6)));
    assert!(!MatmulKernel::Vec4.supports(&GemmDims::new(4, 8, 8).with_a(MatrixLayout::row_major(4, 8).at(2))));
}

/// The vec4 cases, and edges of the vec8 kernel's 8-row x 16-column block: rows past M inside a block (M not a
/// multiple of 8, for each variant), partial column groups, N past one workgroup's 256 columns, TN with M = 4 (the
/// second row vec4 clamped onto the first).
fn vec8_cases() -> Vec<GemmDims> {
    let mut cases = vec4_cases();
    cases.extend([
        GemmDims::new(13, 20, 16), // NN, 5 rows of the second block, a half group
        GemmDims::new(19, 260, 12).batched(2).scaled(0.5, 1.0), // NN, two workgroups across N, accumulating
        GemmDims::new(11, 37, 8).transpose_b().accumulate(), // NT, 2 full groups + 5 columns
        GemmDims::new(4, 28, 7).transpose_a().scaled(2.0, 0.0), // TN, M = 4
        GemmDims::new(20, 44, 33).transpose_a().batched(3).accumulate(), // TN, M = 20: the last block's 4 rows
    ]);
    cases
}

#[test]
fn should_match_reference_gemm_vec8() {
    let gpu = gpu();
    let cases = vec8_cases();
    for d in &cases {
        assert!(MatmulKernel::Vec8.supports(d), "vec8 case not supported: {d:?}");
    }
    for (i, d) in cases.into_iter().enumerate() {
        run_gemm_case(&gpu, MatmulKernel::Vec8, d, 700 + 10 * i as u64);
    }
    assert!(!MatmulKernel::Vec8.supports(&GemmDims::new(4, 6, 8)));
    assert!(!MatmulKernel::Vec8.supports(&GemmDims::new(4, 8, 8).with_b(MatrixLayout::row_major(8, 8).at(1))));
}

#[test]
fn should_match_reference_gemm_subgroup() {
    let gpu = gpu();
    // lavapipe, what the tests run on, has subgroups of 8; there the kernel must pass its probe and be offered.
    if gpu.info.name.contains("llvmpipe") {
        assert_eq!(gpu.info.subgroup_min_size, Some(8), "lavapipe without subgroups: {:?}", gpu.info);
        assert!(MatmulKernel::Subgroup.available(&gpu), "the subgroup kernel failed its probe on lavapipe");
    }
    if !MatmulKernel::Subgroup.available(&gpu) {
        eprintln!("skipped: {} has no subgroups of 8 or more", gpu.info.name);
        return;
    }
    let mut cases = vec8_cases();
    cases.extend([
        GemmDims::new(35, 132, 16).scaled(1.0, -0.5), // NN: 3 row blocks (the last with 3 rows), 2 workgroups
        GemmDims::new(17, 9, 12).transpose_b().batched(2), // NT: 1 row past the first block, 1 column past 8
        GemmDims::new(36, 140, 5).transpose_a().accumulate(), // TN: the last block's rows 32..35 only
    ]);
    for (i, d) in cases.into_iter().enumerate() {
        assert!(MatmulKernel::Subgroup.supports(&d), "subgroup case not supported: {d:?}");
        run_gemm_case(&gpu, MatmulKernel::Subgroup, d, 800 + 10 * i as u64);
    }
}

#[test]
fn should_match_reference_dbias_every_kernel() {
    let gpu = gpu();
    for &(bt, oc) in &[(1, 1), (3, 37), (130, 5), (2048, 67), (1, 4), (13, 36), (2049, 68)] {
        let dout = randn(800 + bt as u64, bt * oc, 1.0);
        let dbias0 = randn(900, oc, 1.0);
        let mut want = dbias0.clone();
        for r in 0..bt {
            for (j, w) in want.iter_mut().enumerate() {
                *w += dout[r * oc + j]; // independent of src/reference: the column sum written out
            }
        }
        let mut got = Vec::new();
        for entry in ["matmul_dbias", "matmul_dbias_tall", "matmul_dbias_cols4"] {
            if entry == "matmul_dbias_cols4" && !oc.is_multiple_of(4) {
                continue;
            }
            let t = upload(&gpu, &dbias0);
            let mut plan = Plan::new();
            plan.push(ops::matmul_dbias_with(&gpu, entry, &t, &upload(&gpu, &dout), bt, oc));
            plan.submit(&gpu);
            got.push(t.to_vec(&gpu).unwrap());
            assert_close(&format!("dbias bt={bt} oc={oc} {entry}"), got.last().unwrap(), &want, 1e-4, 1e-4);
        }
        // cols4 keeps matmul_dbias's order of additions: the same bits.
        if oc.is_multiple_of(4) {
            assert_eq!(got[0], got[2], "dbias bt={bt} oc={oc}: matmul_dbias_cols4 differs from matmul_dbias");
        }
    }
}

#[test]
fn should_match_reference_gemm_split_k() {
    // Split-K (a linear layer's weight gradient with a long K): chunks summed separately, then reduced in order.
    let gpu = gpu();
    let cases = [
        GemmDims::new(70, 33, 700).transpose_a().batched(2).accumulate(), // 6 chunks, ragged last chunk and tiles
        GemmDims::new(5, 130, 256).scaled(-1.25, 0.75),                   // 2 chunks
        GemmDims::new(64, 64, 4096).transpose_a(),                        // 16 chunks
    ];
    for (i, d) in cases.into_iter().enumerate() {
        assert!(ops::split_k_chunks(&d).is_some());
        let (alen, blen, clen) =
            (extent(&d.a, d.batch, d.m, d.k), extent(&d.b, d.batch, d.k, d.n), extent(&d.c, d.batch, d.m, d.n));
        let (a, b, c0) = (randn(700 + i as u64, alen, 1.0), randn(710 + i as u64, blen, 1.0), randn(720, clen, 1.0));
        let tc = upload(&gpu, &c0);
        let mut plan = Plan::new();
        plan.extend(ops::gemm_split_k(&gpu, &tc, &upload(&gpu, &a), &upload(&gpu, &b), d));
        plan.submit(&gpu);
        let mut want = c0.clone();
        cpu::gemm(&mut want, &a, &b, cpu_gemm(d));
        let what = format!("split-k gemm m={} n={} k={} batch={}", d.m, d.n, d.k, d.batch);
        assert_close(&what, &tc.to_vec(&gpu).unwrap(), &want, 5e-4, 2e-4);
    }
    assert!(ops::split_k_chunks(&GemmDims::new(64, 64, 255)).is_none());
}

#[test]
fn should_not_read_output_when_beta_is_zero() {
    // beta = 0 must overwrite, not scale: a NaN already in C (stale activations) must not leak into the result.
    let gpu = gpu();
    let d = GemmDims::new(17, 65, 3);
    let a = randn(1, 17 * 3, 1.0);
    let b = randn(2, 3 * 65, 1.0);
    let mut want = vec![0.0; 17 * 65];
    cpu::gemm(&mut want, &a, &b, cpu_gemm(d));
    for kernel in MatmulKernel::ALL.into_iter().filter(|k| k.supports(&d) && k.available(&gpu)) {
        let tc = upload(&gpu, &vec![f32::NAN; 17 * 65]);
        let mut plan = Plan::new();
        plan.push(ops::gemm_with(&gpu, kernel, &tc, &upload(&gpu, &a), &upload(&gpu, &b), d));
        plan.submit(&gpu);
        assert_close(&format!("{} gemm over NaN", kernel.name()), &tc.to_vec(&gpu).unwrap(), &want, 1e-5, 1e-5);
    }
}

#[test]
fn should_match_reference_matmul_forward_with_and_without_bias() {
    let gpu = gpu();
    for (i, &(bt, c, oc)) in [(1, 1, 1), (3, 17, 5), (65, 33, 130), (130, 64, 17), (9, 12, 20)].iter().enumerate() {
        let inp = randn(10 + i as u64, bt * c, 1.0);
        let weight = randn(20 + i as u64, oc * c, 0.5);
        let bias = randn(30 + i as u64, oc, 1.0);
        let (tinp, tw, tb) = (upload(&gpu, &inp), upload(&gpu, &weight), upload(&gpu, &bias));
        for with_bias in [false, true] {
            let mut want = vec![0.0; bt * oc];
            cpu::matmul_forward(&mut want, &inp, &weight, with_bias.then_some(&bias[..]), bt, c, oc);
            let tout = upload(&gpu, &randn(40, bt * oc, 1.0)); // stale contents: forward overwrites
            let mut plan = Plan::new();
            plan.push(ops::matmul_forward(&gpu, &tout, &tinp, &tw, with_bias.then_some(&tb), bt, c, oc));
            plan.submit(&gpu);
            let what = format!("matmul_forward bt={bt} c={c} oc={oc} bias={with_bias}");
            assert_close(&what, &tout.to_vec(&gpu).unwrap(), &want, 1e-4, 1e-4);
            let fwd = ops::forward_dims(bt, c, oc, ops::Replicas::ONE);
            for kernel in MatmulKernel::ALL.into_iter().filter(|k| k.supports(&fwd) && k.available(&gpu)) {
                let tout = Tensor::zeros(&gpu, "o", bt * oc).unwrap();
                let mut plan = Plan::new();
                plan.push(ops::matmul_forward_with(
                    &gpu,
                    kernel,
                    &tout,
                    &tinp,
                    &tw,
                    with_bias.then_some(&tb),
                    bt,
                    c,
                    oc,
                ));
                plan.submit(&gpu);
                assert_close(&format!("{what} {}", kernel.name()), &tout.to_vec(&gpu).unwrap(), &want, 1e-4, 1e-4);
            }
        }
    }
}

#[test]
fn should_match_reference_matmul_backward_accumulating() {
    let gpu = gpu();
    for (i, &(bt, c, oc)) in [(3, 5, 7), (70, 33, 65), (131, 18, 40), (12, 16, 20)].iter().enumerate() {
        let s = 50 + 10 * i as u64;
        let inp = randn(s, bt * c, 1.0);
        let weight = randn(s + 1, oc * c, 0.5);
        let dout = randn(s + 2, bt * oc, 1.0);
        let dinp0 = randn(s + 3, bt * c, 1.0);
        let dweight0 = randn(s + 4, oc * c, 1.0);
        let dbias0 = randn(s + 5, oc, 1.0);
        let (tinp, tw, tdout) = (upload(&gpu, &inp), upload(&gpu, &weight), upload(&gpu, &dout));
        for (with_dinp, with_dbias) in [(false, false), (true, false), (false, true), (true, true)] {
            let (mut dinp, mut dweight, mut dbias) = (dinp0.clone(), dweight0.clone(), dbias0.clone());
            cpu::matmul_backward(
                with_dinp.then_some(&mut dinp[..]),
                &mut dweight,
                with_dbias.then_some(&mut dbias[..]),
                &dout,
                &inp,
                &weight,
                bt,
                c,
                oc,
            );
            let (tdinp, tdw, tdb) = (upload(&gpu, &dinp0), upload(&gpu, &dweight0), upload(&gpu, &dbias0));
            let mut plan = Plan::new();
            plan.extend(ops::matmul_backward(
                &gpu,
                with_dinp.then_some(&tdinp),
                &tdw,
                with_dbias.then_some(&tdb),
                &tdout,
                &tinp,
                &tw,
                bt,
                c,
                oc,
            ));
            assert_eq!(plan.len(), 1 + with_dinp as usize + with_dbias as usize);
            plan.submit(&gpu);
            let what = format!("matmul_backward bt={bt} c={c} oc={oc} dinp={with_dinp} dbias={with_dbias}");
            // Untouched gradients (None) keep their initial values on both sides.
            assert_close(&format!("{what} dinp"), &tdinp.to_vec(&gpu).unwrap(), &dinp, 1e-4, 1e-4);
            assert_close(&format!("{what} dweight"), &tdw.to_vec(&gpu).unwrap(), &dweight, 2e-4, 1e-4);
            assert_close(&format!("{what} dbias"), &tdb.to_vec(&gpu).unwrap(), &dbias, 1e-4, 1e-4);
        }
    }
}

/// Whether two vectors are equal bit for bit (the fused GELU epilogues against the unfused dispatch pair).
fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: element {i} is {} where the unfused pair gives {}", got[i], want[i]);
    }
}

#[test]
fn should_match_reference_and_the_unfused_pair_for_the_gelu_epilogues() {
    let gpu = gpu();
    // (BT, C, OC): odd sizes, one row, a tile-sized case. GELU's input spans its curved part (std 2).
    for (i, &(bt, c, oc)) in [(1, 1, 1), (3, 17, 5), (65, 33, 130), (130, 64, 17), (9, 12, 20)].iter().enumerate() {
        let s = 200 + 10 * i as u64;
        let inp = randn(s, bt * c, 1.0);
        let weight = randn(s + 1, oc * c, 1.0);
        let bias = randn(s + 2, oc, 1.0);
        let (tinp, tw, tb) = (upload(&gpu, &inp), upload(&gpu, &weight), upload(&gpu, &bias));
        // Forward, c_fc's place: pre = inp @ W^T + b, out = gelu(pre).
        let mut pre = vec![0.0; bt * oc];
        cpu::matmul_forward(&mut pre, &inp, &weight, Some(&bias), bt, c, oc);
        let mut out = vec![0.0; bt * oc];
        cpu_elementwise::gelu_forward(&mut out, &pre);
        // Backward, c_proj's place: the layer (OC2 = C outputs) reads gelu(pre2) (BT, OC); dpre2 accumulates.
        let pre2 = randn(s + 3, bt * oc, 2.0);
        let mut gelu2 = vec![0.0; bt * oc];
        cpu_elementwise::gelu_forward(&mut gelu2, &pre2);
        let w2 = randn(s + 4, c * oc, 0.5); // (C, OC): this layer maps OC -> C
        let dout2 = randn(s + 5, bt * c, 1.0);
        let dpre0 = randn(s + 6, bt * oc, 1.0);
        let (dw0, db0) = (randn(s + 7, c * oc, 1.0), randn(s + 8, c, 1.0));
        let (mut dgelu, mut dpre, mut dw, mut db) = (vec![0.0; bt * oc], dpre0.clone(), dw0.clone(), db0.clone());
        cpu::matmul_backward(Some(&mut dgelu), &mut dw, Some(&mut db), &dout2, &gelu2, &w2, bt, oc, c);
        cpu_elementwise::gelu_backward(&mut dpre, &pre2, &dgelu);
        let (tpre2, tgelu2, tw2, tdout2) =
            (upload(&gpu, &pre2), upload(&gpu, &gelu2), upload(&gpu, &w2), upload(&gpu, &dout2));

        let fwd = ops::forward_dims(bt, c, oc, ops::Replicas::ONE);
        let bwd = ops::dinp_dims(bt, oc, c, ops::Replicas::ONE);
        let kernels =
            MatmulKernel::ALL.into_iter().filter(|k| k.supports(&fwd) && k.supports(&bwd) && k.available(&gpu));
        // None: the tuner's kernels (split-K among the weight gradient's candidates), on one shape (tuning is slow).
        let tuned = if i == 2 { Some(None) } else { None };
        for kernel in kernels.map(Some).chain(tuned) {
            let what = format!("bt={bt} c={c} oc={oc} {}", kernel.map_or("tuner's", |k| k.name()));
            // Fused forward against the reference, and (a chosen kernel) bit for bit against the unfused pair.
            let (tpre, tout) = (upload(&gpu, &randn(1, bt * oc, 1.0)), upload(&gpu, &randn(2, bt * oc, 1.0)));
            let mut plan = Plan::new();
            plan.push(match kernel {
                Some(k) => ops::matmul_forward_gelu_with(&gpu, k, &tout, &tpre, &tinp, &tw, Some(&tb), bt, c, oc),
                None => ops::matmul_forward_gelu(&gpu, &tout, &tpre, &tinp, &tw, Some(&tb), bt, c, oc),
            });
            plan.submit(&gpu);
            let (got_pre, got_out) = (tpre.to_vec(&gpu).unwrap(), tout.to_vec(&gpu).unwrap());
            assert_close(&format!("{what} forward pre"), &got_pre, &pre, 1e-4, 1e-4);
            assert_close(&format!("{what} forward gelu"), &got_out, &out, 1e-4, 1e-4);
            // Fused backward: dpre2 += (dout2 @ W2) * gelu'(pre2), with dweight and dbias.
            let (tdpre, tdw, tdb) = (upload(&gpu, &dpre0), upload(&gpu, &dw0), upload(&gpu, &db0));
            let mut plan = Plan::new();
            plan.extend(match kernel {
                Some(k) => ops::matmul_backward_gelu_with(
                    &gpu,
                    k,
                    &tdpre,
                    &tdw,
                    Some(&tdb),
                    &tdout2,
                    &tgelu2,
                    &tpre2,
                    &tw2,
                    bt,
                    oc,
                    c,
                ),
                None => {
                    ops::matmul_backward_gelu(&gpu, &tdpre, &tdw, Some(&tdb), &tdout2, &tgelu2, &tpre2, &tw2, bt, oc, c)
                }
            });
            plan.submit(&gpu);
            let got = [tdpre.to_vec(&gpu).unwrap(), tdw.to_vec(&gpu).unwrap(), tdb.to_vec(&gpu).unwrap()];
            assert_close(&format!("{what} backward dpre"), &got[0], &dpre, 1e-4, 1e-4);
            assert_close(&format!("{what} backward dweight"), &got[1], &dw, 2e-4, 1e-4);
            assert_close(&format!("{what} backward dbias"), &got[2], &db, 1e-4, 1e-4);
            let Some(k) = kernel else { continue };
            // The unfused pairs with the same kernel.
            let (upre, uout) =
                (Tensor::zeros(&gpu, "pre", bt * oc).unwrap(), Tensor::zeros(&gpu, "out", bt * oc).unwrap());
            let (udgelu, udpre) = (Tensor::zeros(&gpu, "dgelu", bt * oc).unwrap(), upload(&gpu, &dpre0));
            let (udw, udb) = (upload(&gpu, &dw0), upload(&gpu, &db0));
            let mut plan = Plan::new();
            plan.push(ops::matmul_forward_with(&gpu, k, &upre, &tinp, &tw, Some(&tb), bt, c, oc));
            plan.push(elementwise::gelu_forward(&gpu, &uout, &upre, bt * oc));
            plan.extend(ops::matmul_backward_with(
                &gpu,
                k,
                Some(&udgelu),
                &udw,
                Some(&udb),
                &tdout2,
                &tgelu2,
                &tw2,
                bt,
                oc,
                c,
            ));
            plan.push(elementwise::gelu_backward(&gpu, &udpre, &tpre2, &udgelu, bt * oc));
            plan.submit(&gpu);
            assert_bits(&format!("{what} forward pre"), &got_pre, &upre.to_vec(&gpu).unwrap());
            assert_bits(&format!("{what} forward gelu"), &got_out, &uout.to_vec(&gpu).unwrap());
            assert_bits(&format!("{what} backward dpre"), &got[0], &udpre.to_vec(&gpu).unwrap());
            assert_bits(&format!("{what} backward dweight"), &got[1], &udw.to_vec(&gpu).unwrap());
        }
    }
}

#[test]
fn should_give_identical_matmul_backward_run_to_run() {
    let gpu = gpu();
    let (bt, c, oc) = (97, 40, 70);
    let inp = randn(1, bt * c, 1.0);
    let weight = randn(2, oc * c, 1.0);
    let dout = randn(3, bt * oc, 1.0);
    let (tinp, tw, tdout) = (upload(&gpu, &inp), upload(&gpu, &weight), upload(&gpu, &dout));
    let run = || {
        let (tdinp, tdw, tdb) = (
            Tensor::zeros(&gpu, "dx", bt * c).unwrap(),
            Tensor::zeros(&gpu, "dw", oc * c).unwrap(),
            Tensor::zeros(&gpu, "db", oc).unwrap(),
        );
        let mut plan = Plan::new();
        plan.extend(ops::matmul_backward(&gpu, Some(&tdinp), &tdw, Some(&tdb), &tdout, &tinp, &tw, bt, c, oc));
        plan.submit(&gpu);
        [tdinp.to_vec(&gpu).unwrap(), tdw.to_vec(&gpu).unwrap(), tdb.to_vec(&gpu).unwrap()]
    };
    let (first, second) = (run(), run());
    for (name, (x, y)) in ["dinp", "dweight", "dbias"].iter().zip(first.iter().zip(&second)) {
        assert!(x.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits()), "{name} differs between two runs");
    }
}

#[test]
fn should_match_finite_differences_reference_matmul_backward() {
    // loss = sum(out * r) for a fixed random r, so dout = r. The layer is linear in each of inp, weight and bias,
    // so central differences are exact up to rounding; f64 sums keep that rounding small.
    let (bt, c, oc) = (3, 4, 5);
    let inp = randn(1, bt * c, 1.0);
    let weight = randn(2, oc * c, 1.0);
    let bias = randn(3, oc, 1.0);
    let r = randn(4, bt * oc, 1.0);
    let loss = |inp: &[f32], weight: &[f32], bias: &[f32]| -> f64 {
        let mut out = vec![0.0; bt * oc];
        cpu::matmul_forward(&mut out, inp, weight, Some(bias), bt, c, oc);
        out.iter().zip(&r).map(|(&o, &ri)| o as f64 * ri as f64).sum()
    };
    let (mut dinp, mut dweight, mut dbias) = (vec![0.0; bt * c], vec![0.0; oc * c], vec![0.0; oc]);
    cpu::matmul_backward(Some(&mut dinp), &mut dweight, Some(&mut dbias), &r, &inp, &weight, bt, c, oc);
    let eps = 1e-2f32;
    let fd = |which: usize, i: usize| -> f64 {
        let mut p = [inp.clone(), weight.clone(), bias.clone()];
        p[which][i] += eps;
        let up = loss(&p[0], &p[1], &p[2]);
        p[which][i] -= 2.0 * eps;
        let down = loss(&p[0], &p[1], &p[2]);
        (up - down) / (2.0 * eps as f64)
    };
    for (which, (name, grad)) in [("dinp", &dinp), ("dweight", &dweight), ("dbias", &dbias)].iter().enumerate() {
        for (i, &g) in grad.iter().enumerate() {
            let want = fd(which, i);
            assert!(
                (g as f64 - want).abs() <= 1e-3 * (1.0 + want.abs()),
                "{name}[{i}]: backward {g}, finite differences {want}"
            );
        }
    }
}

#[test]
fn should_count_two_flops_per_multiply_add() {
    assert_eq!(ops::matmul_flops(2, 3, 4, 5), 240.0);
}

/// Replicated linear layers (several independent models in one dispatch, parameters `param_stride` apart in one
/// arena) against the CPU reference, and bit-for-bit against each replica run alone through the unreplicated layer:
/// forward with bias, and backward into all three gradients accumulating onto nonzero values.
#[test]
fn should_match_reference_and_lone_layers_for_replicated_matmul() {
    use dpo3d::ops::matmul::Replicas;
    let gpu = gpu();
    for (i, &(r, bt, c, oc)) in
        [(3usize, 8usize, 5usize, 10usize), (2, 17, 33, 7), (4, 1, 65, 3), (1, 5, 4, 6)].iter().enumerate()
    {
        let s = 300 + 10 * i as u64;
        let wlen = oc * c;
        let bias_at = wlen.div_ceil(64) * 64; // the arena's 64-element alignment
        let stride = bias_at + oc.div_ceil(64) * 64;
        let rep = Replicas::new(r, stride);
        let params = randn(s, r * stride, 0.5);
        let inp = randn(s + 1, r * bt * c, 1.0);
        let dout = randn(s + 2, r * bt * oc, 1.0);
        let dinp0 = randn(s + 3, r * bt * c, 1.0);
        let grads0 = randn(s + 4, r * stride, 1.0);
        let what = format!("replicas={r} bt={bt} c={c} oc={oc}");

        // CPU reference.
        let mut want_out = vec![0.0; r * bt * oc];
        cpu::matmul_forward_replicas(&mut want_out, &inp, &params, Some(&params[bias_at..]), bt, c, oc, r, stride);
        let (mut want_dinp, mut want_grads) = (dinp0.clone(), grads0.clone());
        {
            let (w, b) = want_grads.split_at_mut(bias_at);
            // dweight and dbias interleave per replica; run the reference on copies and merge.
            let mut dw = w.to_vec();
            dw.extend_from_slice(b);
            let mut db = dw.clone();
            cpu::matmul_backward_replicas(
                Some(&mut want_dinp),
                &mut dw,
                None,
                &dout,
                &inp,
                &params,
                bt,
                c,
                oc,
                r,
                stride,
            );
            cpu::matmul_dbias_replicas(&mut db[bias_at..], &dout, bt, oc, r, stride);
            for k in 0..r {
                let base = k * stride;
                want_grads[base..base + wlen].copy_from_slice(&dw[base..base + wlen]);
                want_grads[base + bias_at..base + bias_at + oc]
                    .copy_from_slice(&db[base + bias_at..base + bias_at + oc]);
            }
        }

        // GPU, all replicas in one dispatch each.
        let tp = upload(&gpu, &params);
        let (tw, tb) = (tp.slice(0, rep.span(wlen)), tp.slice(bias_at, rep.span(oc)));
        let (tinp, tdout, tdinp) = (upload(&gpu, &inp), upload(&gpu, &dout), upload(&gpu, &dinp0));
        let tg = upload(&gpu, &grads0);
        let (tdw, tdb) = (tg.slice(0, rep.span(wlen)), tg.slice(bias_at, rep.span(oc)));
        let tout = upload(&gpu, &randn(s + 5, r * bt * oc, 1.0));
        let mut plan = Plan::new();
        plan.push(ops::matmul_forward_replicas(&gpu, &tout, &tinp, &tw, Some(&tb), bt, c, oc, rep));
        plan.extend(ops::matmul_backward_replicas(
            &gpu,
            Some(&tdinp),
            &tdw,
            Some(&tdb),
            &tdout,
            &tinp,
            &tw,
            bt,
            c,
            oc,
            rep,
        ));
        assert_eq!(plan.len(), 4, "one dispatch per product whatever the replica count");
        plan.submit(&gpu);
        let (out, dinp, grads) = (tout.to_vec(&gpu).unwrap(), tdinp.to_vec(&gpu).unwrap(), tg.to_vec(&gpu).unwrap());
        assert_close(&format!("{what} out"), &out, &want_out, 1e-4, 1e-4);
        assert_close(&format!("{what} dinp"), &dinp, &want_dinp, 1e-4, 1e-4);
        assert_close(&format!("{what} grads"), &grads, &want_grads, 2e-4, 1e-4);
        let fwd = ops::forward_dims(bt, c, oc, rep);
        for kernel in MatmulKernel::ALL.into_iter().filter(|k| k.supports(&fwd) && k.available(&gpu)) {
            let t = Tensor::zeros(&gpu, "o", r * bt * oc).unwrap();
            let mut plan = Plan::new();
            plan.push(ops::gemm_bias_with(&gpu, kernel, &t, &tinp, &tw, &tb, ops::forward_dims(bt, c, oc, rep)));
            plan.submit(&gpu);
            assert_close(&format!("{what} {} out", kernel.name()), &t.to_vec(&gpu).unwrap(), &want_out, 1e-4, 1e-4);
        }

        // Each replica alone through the plain layer gives the same bits.
        for k in 0..r {
            let p = &params[k * stride..(k + 1) * stride];
            let (lw, lb) = (upload(&gpu, &p[..wlen]), upload(&gpu, &p[bias_at..bias_at + oc]));
            let g = &grads0[k * stride..(k + 1) * stride];
            let (ldw, ldb) = (upload(&gpu, &g[..wlen]), upload(&gpu, &g[bias_at..bias_at + oc]));
            let linp = upload(&gpu, &inp[k * bt * c..(k + 1) * bt * c]);
            let ldout = upload(&gpu, &dout[k * bt * oc..(k + 1) * bt * oc]);
            let ldinp = upload(&gpu, &dinp0[k * bt * c..(k + 1) * bt * c]);
            let lout = Tensor::zeros(&gpu, "o", bt * oc).unwrap();
            let mut plan = Plan::new();
            plan.push(ops::matmul_forward(&gpu, &lout, &linp, &lw, Some(&lb), bt, c, oc));
            plan.extend(ops::matmul_backward(&gpu, Some(&ldinp), &ldw, Some(&ldb), &ldout, &linp, &lw, bt, c, oc));
            plan.submit(&gpu);
            assert_eq!(lout.to_vec(&gpu).unwrap(), out[k * bt * oc..(k + 1) * bt * oc], "{what} replica {k} out");
            assert_eq!(ldinp.to_vec(&gpu).unwrap(), dinp[k * bt * c..(k + 1) * bt * c], "{what} replica {k} dinp");
            let gk = &grads[k * stride..(k + 1) * stride];
            assert_eq!(ldw.to_vec(&gpu).unwrap(), gk[..wlen], "{what} replica {k} dweight");
            assert_eq!(ldb.to_vec(&gpu).unwrap(), gk[bias_at..bias_at + oc], "{what} replica {k} dbias");
        }
    }
}

/// Products over attention's (sequence, head) pairs: batches in groups (`GemmDims::grouped`, B groups of NH heads
/// whose matrices lie HS apart inside each sequence's rows) with the causal bits: C's upper triangle written as 0,
/// and A's zero triangle (lower or upper) that the subgroup-rows kernel skips. Shapes: T = 13 and 70 (vec4 kernels only
/// for the products with B^T; the others by the rows kernel's scalar-A form, at T = 70 over two row workgroups), 68
/// (two 64-row workgroups of the rows kernel, the second with 4 rows, and column blocks past the first workgroup's
/// diagonal), 36; HS 4 and 16; alpha, beta.
fn grouped_causal_cases() -> Vec<GemmDims> {
    let mut cases = Vec::new();
    for &(b, t, nh, hs) in &[(2, 13, 3, 4), (2, 68, 2, 16), (1, 36, 3, 4), (1, 70, 2, 4)] {
        let c = nh * hs;
        let c3 = 3 * c;
        let qkv = |slot: usize| MatrixLayout::strided(c3, 1, t * c3).grouped(hs).at(slot * c);
        let qkv_t = |slot: usize| MatrixLayout { row: 1, col: c3, ..qkv(slot) };
        let heads = MatrixLayout::strided(c, 1, t * c).grouped(hs);
        let square = MatrixLayout::strided(t, 1, nh * t * t).grouped(t * t);
        let square_t = MatrixLayout { row: 1, col: t, ..square };
        let per_head =
            |n, k, a, bm, cm| GemmDims::new(t, n, k).batched(b * nh).grouped(nh).with_a(a).with_b(bm).with_c(cm);
        // scores (C causal), once overwriting and once accumulating: above the diagonal C is 0 either way
        cases.push(per_head(t, hs, qkv(0), qkv_t(1), square).scaled(0.5, 0.0).causal(ops::CAUSAL_C));
        cases.push(per_head(t, hs, heads, qkv_t(2), square).scaled(1.0, 1.0).causal(ops::CAUSAL_C));
        // weighted values / dq (A lower triangular), dk / dv (A stored transposed, upper triangular)
        cases.push(per_head(hs, t, square, qkv(2), heads).causal(ops::CAUSAL_A_LOWER));
        cases.push(per_head(hs, t, square, qkv(1), qkv(0)).scaled(0.25, 1.0).causal(ops::CAUSAL_A_LOWER));
        cases.push(per_head(hs, t, square_t, heads, qkv(2)).scaled(1.0, 1.0).causal(ops::CAUSAL_A_UPPER));
        // no causal bits: the grouping alone
        cases.push(per_head(hs, t, square, qkv(2), heads));
    }
    cases
}

/// Elements a grouped layout needs.
fn extent_grouped(l: &MatrixLayout, d: &GemmDims, rows: usize, cols: usize) -> usize {
    l.max_index_grouped(d.batch, d.inner, rows, cols).map_or(1, |i| i + 1)
}

fn run_grouped_causal_case(gpu: &Gpu, kernel: MatmulKernel, d: GemmDims, seed: u64) {
    let (alen, blen, clen) =
        (extent_grouped(&d.a, &d, d.m, d.k), extent_grouped(&d.b, &d, d.k, d.n), extent_grouped(&d.c, &d, d.m, d.n));
    let start = |l: &MatrixLayout, bt: usize| l.offset + (bt / d.inner) * l.batch + (bt % d.inner) * l.inner;
    let mut a = randn(seed, alen, 1.0);
    // The promised zeros of A, written through its layout.
    for bt in 0..d.batch {
        for m in 0..d.m {
            for k in 0..d.k {
                let zero =
                    (d.causal & ops::CAUSAL_A_LOWER != 0 && k > m) || (d.causal & ops::CAUSAL_A_UPPER != 0 && k < m);
                if zero {
                    a[start(&d.a, bt) + m * d.a.row + k * d.a.col] = 0.0;
                }
            }
        }
    }
    let b = randn(seed + 1, blen, 1.0);
    let c0 = randn(seed + 2, clen, 1.0);
    let got = gemm_on_gpu(gpu, kernel, d, &a, &b, &c0);
    // The reference: each batch as its own ungrouped product at the offsets the grouping gives, then C's upper
    // triangle zeroed by hand.
    let mut want = c0.clone();
    for bt in 0..d.batch {
        let one = |l: MatrixLayout| MatrixLayout { offset: start(&l, bt), inner: 0, ..l };
        let single = GemmDims { batch: 1, inner: 1, causal: 0, a: one(d.a), b: one(d.b), c: one(d.c), ..d };
        cpu::gemm(&mut want, &a, &b, cpu_gemm(single));
        if d.causal & ops::CAUSAL_C != 0 {
            for m in 0..d.m {
                for n in m + 1..d.n {
                    want[start(&d.c, bt) + m * d.c.row + n * d.c.col] = 0.0;
                }
            }
        }
    }
    let what =
        format!("{} grouped/causal gemm {}x{}x{} batch {} causal {}", kernel.name(), d.m, d.n, d.k, d.batch, d.causal);
    assert_close(&what, &got, &want, 2e-4, 1e-4);
}

#[test]
fn should_match_reference_grouped_and_causal_products_with_every_kernel() {
    let gpu = gpu();
    let mut rows_cases = 0;
    for kernel in MatmulKernel::ALL {
        if !kernel.available(&gpu) {
            continue;
        }
        for (i, d) in grouped_causal_cases().into_iter().enumerate() {
            if kernel.supports(&d) {
                rows_cases += (kernel == MatmulKernel::SubgroupRows) as usize;
                run_grouped_causal_case(&gpu, kernel, d, 1000 + 10 * i as u64);
            }
        }
    }
    // On lavapipe the rows kernel (the one that skips zero triangles) must have run all 24 cases: those with B^T in
    // its vec4 form, the others in it (T = 68, 36) or in its scalar-A form (T = 13, 70: A's rows T floats apart).
    if gpu.info.name.contains("llvmpipe") {
        assert_eq!(rows_cases, 24, "subgroup_rows ran {rows_cases} of the grouped/causal cases");
    }
}

#[test]
fn should_match_reference_gemm_subgroup_rows() {
    let gpu = gpu();
    if gpu.info.name.contains("llvmpipe") {
        assert!(MatmulKernel::SubgroupRows.available(&gpu), "the subgroup-rows kernel failed its probe on lavapipe");
    }
    if !MatmulKernel::SubgroupRows.available(&gpu) {
        eprintln!("skipped: {} has no subgroups of 8 or more", gpu.info.name);
        return;
    }
    let cases = [
        GemmDims::new(1, 4, 4),                             // NN, one row, one column group
        GemmDims::new(70, 20, 12).scaled(1.0, 0.5), // NN: 2 row workgroups (6 rows in the second), 2 column groups
        GemmDims::new(9, 36, 8).batched(3),         // NN: a lane with 1 row, the last of 3 column groups half used
        GemmDims::new(130, 16, 64).scaled(-1.5, 1.0), // NN: 3 row workgroups
        GemmDims::new(76, 24, 7).transpose_a(),     // TN: odd K (the last k pair's second half)
        GemmDims::new(12, 8, 1).transpose_a().accumulate(), // TN: K = 1, M = 12 (the second vec4 of 8 rows clamped)
        GemmDims::new(68, 32, 33).transpose_a().batched(2).scaled(0.5, 0.0), // TN: 4 rows in the second workgroup
        GemmDims::new(66, 20, 12).transpose_b().scaled(1.0, 0.5), // NT: 2 rows in the second workgroup, 4 columns past 16
        GemmDims::new(5, 36, 4).transpose_b().batched(2),         // NT: 5 rows, the third column block a quarter used
        GemmDims::new(1, 3, 4).transpose_b().accumulate(), // NT: C of 3 elements, less than the vec4 its binding spans
        // A not 4-aligned (gemm_srxn, A read as scalars): an LM head's backward with V = 19, dinp and dweight
        GemmDims::new(24, 16, 19).accumulate(),
        GemmDims::new(19, 16, 24).transpose_a().accumulate(),
        GemmDims::new(70, 20, 13).with_a(MatrixLayout::strided(15, 1, 0).at(1)).batched(2), // offset 1, 2 row groups
        GemmDims::new(9, 36, 1).scaled(0.5, 1.0),                                           // K = 1 (one k of a pair)
    ];
    for (i, d) in cases.into_iter().enumerate() {
        assert!(MatmulKernel::SubgroupRows.supports(&d), "subgroup_rows case not supported: {d:?}");
        run_gemm_case(&gpu, MatmulKernel::SubgroupRows, d, 900 + 10 * i as u64);
    }
    assert!(!MatmulKernel::SubgroupRows.supports(&GemmDims::new(4, 6, 8)));
}
