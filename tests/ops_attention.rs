//! GPU causal self-attention kernels against the CPU reference, forward (out, preatt, att) and backward (dinp, and the
//! datt/dpreatt scratch), on odd shapes (T neither a multiple of the row workgroup nor below it, one head and several);
//! accumulation onto a nonzero dinp; causality; determinism; and the reference backward against f64 central
//! differences of an independent f64 forward.

mod common;
use common::*;
use dpo3d::gpu::{Plan, Tensor};
use dpo3d::ops::attention as ops;
use dpo3d::reference::attention as cpu;
use dpo3d::Gpu;

/// (B, T, C, NH)
const SHAPES: &[(usize, usize, usize, usize)] = &[
    (1, 1, 4, 1),
    (2, 5, 12, 3),
    (3, 17, 16, 4),
    (1, 33, 8, 2),
    (1, 70, 8, 2),
    (2, 9, 10, 2),
    (1, 130, 24, 3),
    // T a multiple of 4: the per-row softmax kernels' vec4 path (the others take their element path)
    (2, 8, 12, 3),
    (1, 68, 8, 2),
];

struct Gpus {
    inp: Tensor,
    out: Tensor,
    preatt: Tensor,
    att: Tensor,
    dout: Tensor,
    dinp: Tensor,
    dpreatt: Tensor,
    datt: Tensor,
}

#[allow(clippy::too_many_arguments)]
fn upload(gpu: &Gpu, inp: &[f32], dout: &[f32], dinp0: &[f32], b: usize, t: usize, c: usize, nh: usize) -> Gpus {
    let tt = b * nh * t * t;
    let z = |n| Tensor::zeros(gpu, "z", n).unwrap();
    Gpus {
        inp: Tensor::from_f32(gpu, "inp", inp).unwrap(),
        out: z(b * t * c),
        preatt: z(tt),
        att: z(tt),
        dout: Tensor::from_f32(gpu, "dout", dout).unwrap(),
        dinp: Tensor::from_f32(gpu, "dinp", dinp0).unwrap(),
        // start the scratch nonzero: the backward must overwrite it, not accumulate into it
        dpreatt: Tensor::from_f32(gpu, "dpreatt", &randn(98, tt, 1.0)).unwrap(),
        datt: Tensor::from_f32(gpu, "datt", &randn(99, tt, 1.0)).unwrap(),
    }
}

fn forward(gpu: &Gpu, g: &Gpus, b: usize, t: usize, c: usize, nh: usize) -> Vec<dpo3d::gpu::Dispatch> {
    ops::attention_forward(gpu, &g.out, &g.preatt, &g.att, &g.inp, b, t, c, nh)
}

fn backward(gpu: &Gpu, g: &Gpus, b: usize, t: usize, c: usize, nh: usize) -> Vec<dpo3d::gpu::Dispatch> {
    ops::attention_backward(gpu, &g.dinp, &g.dpreatt, &g.datt, &g.dout, &g.inp, &g.att, b, t, c, nh)
}

/// Every kernel choice (separate: softmax by a workgroup or an invocation per row, products with one or 4 outputs per
/// invocation; fused: scalar or vec4 loads; the products as grouped, causal GEMMs, each with the kernel the tuner picks
/// for its shape, with either softmax), whatever the tuner would pick here. (Every GEMM kernel on such products:
/// `tests/ops_matmul.rs`.)
const FORMS: [ops::AttentionKernels; 8] = [
    ops::AttentionKernels { softmax: ops::SoftmaxForm::Workgroup, x4: false, fused: false, gemm: false },
    ops::AttentionKernels { softmax: ops::SoftmaxForm::Invocation, x4: false, fused: false, gemm: false },
    ops::AttentionKernels { softmax: ops::SoftmaxForm::Workgroup, x4: true, fused: false, gemm: false },
    ops::AttentionKernels { softmax: ops::SoftmaxForm::Invocation, x4: true, fused: false, gemm: false },
    ops::AttentionKernels { softmax: ops::SoftmaxForm::Workgroup, x4: false, fused: true, gemm: false },
    ops::AttentionKernels { softmax: ops::SoftmaxForm::Workgroup, x4: true, fused: true, gemm: false },
    ops::AttentionKernels { softmax: ops::SoftmaxForm::Workgroup, x4: false, fused: false, gemm: true },
    ops::AttentionKernels { softmax: ops::SoftmaxForm::Invocation, x4: false, fused: false, gemm: true },
];

#[allow(clippy::too_many_arguments)]
fn forward_with(
    f: ops::AttentionKernels,
    gpu: &Gpu,
    g: &Gpus,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Vec<dpo3d::gpu::Dispatch> {
    ops::attention_forward_with(gpu, f, &g.out, &g.preatt, &g.att, &g.inp, b, t, c, nh)
}

#[allow(clippy::too_many_arguments)]
fn backward_with(
    f: ops::AttentionKernels,
    gpu: &Gpu,
    g: &Gpus,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Vec<dpo3d::gpu::Dispatch> {
    ops::attention_backward_with(gpu, f, &g.dinp, &g.dpreatt, &g.datt, &g.dout, &g.inp, &g.att, b, t, c, nh)
}

#[test]
fn should_match_reference_attention_forward() {
    let gpu = gpu();
    for (s, &(b, t, c, nh)) in SHAPES.iter().enumerate() {
        for form in FORMS {
            let inp = randn(10 + s as u64, b * t * 3 * c, 1.0);
            let g = upload(&gpu, &inp, &vec![0.0; b * t * c], &vec![0.0; b * t * 3 * c], b, t, c, nh);
            let mut plan = Plan::new();
            plan.extend(forward_with(form, &gpu, &g, b, t, c, nh));
            plan.submit(&gpu);
            let (mut out, mut preatt, mut att) =
                (vec![0.0; b * t * c], vec![0.0; b * nh * t * t], vec![0.0; b * nh * t * t]);
            cpu::attention_forward(&mut out, &mut preatt, &mut att, &inp, b, t, c, nh);
            let what = format!("{form:?} (B,T,C,NH)=({b},{t},{c},{nh})");
            if form.fused {
                // The fused kernel keeps the scores in workgroup memory: the preatt scratch stays as uploaded (zeros).
                assert!(g.preatt.to_vec(&gpu).unwrap().iter().all(|&x| x == 0.0), "{what}: fused wrote preatt");
            } else {
                assert_close(&format!("{what} preatt"), &g.preatt.to_vec(&gpu).unwrap(), &preatt, 1e-5, 1e-5);
            }
            assert_close(&format!("{what} att"), &g.att.to_vec(&gpu).unwrap(), &att, 1e-6, 1e-5);
            assert_close(&format!("{what} out"), &g.out.to_vec(&gpu).unwrap(), &out, 1e-5, 1e-4);
            // every att row is a distribution over the past
            let att_gpu = g.att.to_vec(&gpu).unwrap();
            for (r, row) in att_gpu.chunks(t).enumerate() {
                let tq = r % t;
                let sum: f32 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "{what} att row {r} sums to {sum}");
                assert!(row[tq + 1..].iter().all(|&a| a == 0.0), "{what} att row {r} attends to the future");
            }
        }
    }
}

#[test]
fn should_match_reference_attention_backward_accumulating_onto_dinp() {
    let gpu = gpu();
    for (s, &(b, t, c, nh)) in SHAPES.iter().enumerate() {
        for form in FORMS {
            let inp = randn(20 + s as u64, b * t * 3 * c, 1.0);
            let dout = randn(30 + s as u64, b * t * c, 1.0);
            let dinp0 = randn(40 + s as u64, b * t * 3 * c, 1.0);
            let g = upload(&gpu, &inp, &dout, &dinp0, b, t, c, nh);
            let mut plan = Plan::new();
            plan.extend(forward_with(form, &gpu, &g, b, t, c, nh));
            plan.extend(backward_with(form, &gpu, &g, b, t, c, nh));
            plan.submit(&gpu);
            let tt = b * nh * t * t;
            let (mut out, mut preatt, mut att) = (vec![0.0; b * t * c], vec![0.0; tt], vec![0.0; tt]);
            cpu::attention_forward(&mut out, &mut preatt, &mut att, &inp, b, t, c, nh);
            let (mut dinp, mut dpreatt, mut datt) = (dinp0.clone(), randn(98, tt, 1.0), randn(99, tt, 1.0));
            cpu::attention_backward(&mut dinp, &mut dpreatt, &mut datt, &dout, &inp, &att, b, t, c, nh);
            let what = format!("{form:?} (B,T,C,NH)=({b},{t},{c},{nh})");
            if form.fused {
                // The fused softmax backward keeps datt in workgroup memory: the scratch stays as uploaded.
                assert_eq!(g.datt.to_vec(&gpu).unwrap(), randn(99, tt, 1.0), "{what}: fused wrote datt");
            } else {
                assert_close(&format!("{what} datt"), &g.datt.to_vec(&gpu).unwrap(), &datt, 1e-5, 1e-4);
            }
            assert_close(&format!("{what} dpreatt"), &g.dpreatt.to_vec(&gpu).unwrap(), &dpreatt, 1e-5, 1e-4);
            assert_close(&format!("{what} dinp"), &g.dinp.to_vec(&gpu).unwrap(), &dinp, 1e-5, 1e-4);
        }
    }
}

#[test]
fn should_give_the_scalar_kernels_results_bit_for_bit_with_x4_products_or_fused_with_scalar_loads() {
    // The x4 products (4 outputs per invocation, vec4 loads where HS % 4 == 0) and the scalar fused kernels do the
    // separate scalar kernels' arithmetic in the same order (scores, workgroup softmax, values; datt, softmax backward,
    // dqkv), so att, out, dpreatt and dinp agree exactly, not just to rounding.
    let gpu = gpu();
    let separate = FORMS[0];
    for (s, &(b, t, c, nh)) in SHAPES.iter().enumerate() {
        let inp = randn(70 + s as u64, b * t * 3 * c, 1.0);
        let dout = randn(80 + s as u64, b * t * c, 1.0);
        let dinp0 = randn(90 + s as u64, b * t * 3 * c, 1.0);
        let run = |form| {
            let g = upload(&gpu, &inp, &dout, &dinp0, b, t, c, nh);
            let mut plan = Plan::new();
            plan.extend(forward_with(form, &gpu, &g, b, t, c, nh));
            plan.extend(backward_with(form, &gpu, &g, b, t, c, nh));
            plan.submit(&gpu);
            [&g.att, &g.out, &g.dpreatt, &g.dinp].map(|x| x.to_vec(&gpu).unwrap())
        };
        let want = run(separate);
        for form in [FORMS[2], ops::AttentionKernels { fused: true, ..separate }] {
            let got = run(form);
            for (name, (w, g)) in ["att", "out", "dpreatt", "dinp"].iter().zip(want.iter().zip(&got)) {
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert!(bits(w) == bits(g), "(B,T,C,NH)=({b},{t},{c},{nh}): {form:?} {name} differs from {separate:?}");
            }
        }
    }
}

#[test]
fn should_accumulate_attention_backward_twice_deterministically() {
    // Two backward passes in one plan add the gradient twice (the scratch is overwritten, not accumulated), and a
    // second run of the same plan on the same data gives bitwise the same dinp.
    let gpu = gpu();
    let (b, t, c, nh) = (2, 9, 12, 3);
    let inp = randn(50, b * t * 3 * c, 1.0);
    let dout = randn(51, b * t * c, 1.0);
    let dinp0 = randn(52, b * t * 3 * c, 1.0);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let g = upload(&gpu, &inp, &dout, &dinp0, b, t, c, nh);
        let mut plan = Plan::new();
        plan.extend(forward(&gpu, &g, b, t, c, nh));
        plan.extend(backward(&gpu, &g, b, t, c, nh));
        plan.extend(backward(&gpu, &g, b, t, c, nh));
        plan.submit(&gpu);
        runs.push(g.dinp.to_vec(&gpu).unwrap());
    }
    assert_eq!(runs[0], runs[1], "attention backward is not deterministic run to run");
    let tt = b * nh * t * t;
    let (mut out, mut preatt, mut att) = (vec![0.0; b * t * c], vec![0.0; tt], vec![0.0; tt]);
    cpu::attention_forward(&mut out, &mut preatt, &mut att, &inp, b, t, c, nh);
    let (mut dinp, mut dpreatt, mut datt) = (dinp0.clone(), vec![0.0; tt], vec![0.0; tt]);
    cpu::attention_backward(&mut dinp, &mut dpreatt, &mut datt, &dout, &inp, &att, b, t, c, nh);
    cpu::attention_backward(&mut dinp, &mut dpreatt, &mut datt, &dout, &inp, &att, b, t, c, nh);
    assert_close("dinp after two backward passes", &runs[0], &dinp, 1e-5, 1e-4);
}

#[test]
fn should_not_let_future_positions_change_earlier_outputs() {
    let gpu = gpu();
    let (b, t, c, nh) = (2, 11, 8, 2);
    let s = 6; // perturb position s of every sequence (its q, k and v)
    let inp = randn(60, b * t * 3 * c, 1.0);
    let mut inp2 = inp.clone();
    for bi in 0..b {
        for x in &mut inp2[(bi * t + s) * 3 * c..(bi * t + s + 1) * 3 * c] {
            *x += 3.0;
        }
    }
    let run = |x: &[f32]| {
        let g = upload(&gpu, x, &vec![0.0; b * t * c], &vec![0.0; b * t * 3 * c], b, t, c, nh);
        let mut plan = Plan::new();
        plan.extend(forward(&gpu, &g, b, t, c, nh));
        plan.submit(&gpu);
        g.out.to_vec(&gpu).unwrap()
    };
    let cpu_run = |x: &[f32]| {
        let (mut out, mut preatt, mut att) =
            (vec![0.0; b * t * c], vec![0.0; b * nh * t * t], vec![0.0; b * nh * t * t]);
        cpu::attention_forward(&mut out, &mut preatt, &mut att, x, b, t, c, nh);
        out
    };
    for (what, o1, o2) in [("gpu", run(&inp), run(&inp2)), ("reference", cpu_run(&inp), cpu_run(&inp2))] {
        for bi in 0..b {
            for ti in 0..t {
                let row = (bi * t + ti) * c..(bi * t + ti + 1) * c;
                let same = o1[row.clone()] == o2[row];
                if ti < s {
                    assert!(same, "{what}: out at t={ti} changed when position {s} changed");
                } else {
                    assert!(!same, "{what}: out at t={ti} ignored a change at position {s}");
                }
            }
        }
    }
}

/// Independent f64 forward: masked scores, softmax with -inf for the future, weighted values. Returns out (B, T, C).
fn forward_f64(inp: &[f64], b: usize, t: usize, c: usize, nh: usize) -> Vec<f64> {
    let hs = c / nh;
    let at = |bi: usize, ti: usize, part: usize, h: usize, i: usize| inp[(bi * t + ti) * 3 * c + part * c + h * hs + i];
    let mut out = vec![0.0; b * t * c];
    for bi in 0..b {
        for h in 0..nh {
            for tq in 0..t {
                let scores: Vec<f64> = (0..t)
                    .map(|tk| {
                        if tk > tq {
                            f64::NEG_INFINITY
                        } else {
                            (0..hs).map(|i| at(bi, tq, 0, h, i) * at(bi, tk, 1, h, i)).sum::<f64>() / (hs as f64).sqrt()
                        }
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for i in 0..hs {
                    out[(bi * t + tq) * c + h * hs + i] = (0..t).map(|tk| e[tk] / z * at(bi, tk, 2, h, i)).sum();
                }
            }
        }
    }
    out
}

#[test]
fn should_match_finite_differences_attention_reference_backward() {
    // loss = sum(out * r); its gradient wrt inp by f64 central differences vs the f32 reference backward.
    let (b, t, c, nh) = (2, 4, 6, 2);
    let inp = randn(70, b * t * 3 * c, 1.0);
    let r = randn(71, b * t * c, 1.0);
    let inp64: Vec<f64> = inp.iter().map(|&x| x as f64).collect();
    let tt = b * nh * t * t;
    let (mut out, mut preatt, mut att) = (vec![0.0; b * t * c], vec![0.0; tt], vec![0.0; tt]);
    cpu::attention_forward(&mut out, &mut preatt, &mut att, &inp, b, t, c, nh);
    let out64: Vec<f32> = forward_f64(&inp64, b, t, c, nh).iter().map(|&x| x as f32).collect();
    assert_close("reference out vs f64 forward", &out, &out64, 1e-5, 1e-5);
    let (mut dinp, mut dpreatt, mut datt) = (vec![0.0; b * t * 3 * c], vec![0.0; tt], vec![0.0; tt]);
    cpu::attention_backward(&mut dinp, &mut dpreatt, &mut datt, &r, &inp, &att, b, t, c, nh);
    let loss = |x: &[f64]| forward_f64(x, b, t, c, nh).iter().zip(&r).map(|(o, &w)| o * w as f64).sum::<f64>();
    let eps = 1e-5;
    let mut fd = vec![0.0f32; inp.len()];
    for i in 0..inp.len() {
        let mut x = inp64.clone();
        x[i] += eps;
        let lp = loss(&x);
        x[i] -= 2.0 * eps;
        let lm = loss(&x);
        fd[i] = ((lp - lm) / (2.0 * eps)) as f32;
    }
    assert_close("reference dinp vs finite differences", &dinp, &fd, 1e-4, 1e-3);
    // the first query sees one key only, so its softmax is constant and dq vanishes there
    assert!(dinp[..c].iter().all(|&g| g.abs() < 1e-6), "dq at t=0 should vanish");
}

/// A KV-cached decode step gives the forward's output at each row's own position, reads nothing at or after that
/// position from the cache, and writes the new key and value there (the q slot stays as it was).
#[test]
fn should_match_the_forward_at_each_rows_position_when_decoding_with_a_kv_cache() {
    let gpu = gpu();
    // (B, T, C, NH): the forward's shapes, plus T over two rounds of the 64 lanes, a head size of 1, and head sizes of
    // 16 and 32 (one and two 16-channel chunks for `Rows16`).
    let shapes = SHAPES.iter().copied().chain([(2, 130, 8, 2), (3, 9, 5, 5), (3, 21, 64, 2), (2, 70, 32, 2)]);
    for (s, (b, t, c, nh)) in shapes.enumerate() {
        let c3 = 3 * c;
        let inp = randn(40 + s as u64, b * t * c3, 1.0);
        let (mut out, mut preatt, mut att) =
            (vec![0.0; b * t * c], vec![0.0; b * nh * t * t], vec![0.0; b * nh * t * t]);
        cpu::attention_forward(&mut out, &mut preatt, &mut att, &inp, b, t, c, nh);
        // Row b decodes at pos_b: first, last, and in between.
        let pos: Vec<u32> = (0..b).map(|r| [t - 1, 0, t / 2][r % 3] as u32).collect();
        // The cache holds the forward's qkv before each row's position and garbage from it on.
        let garbage = randn(60 + s as u64, b * t * c3, 1e3);
        let mut cache = inp.clone();
        for (r, &pr) in pos.iter().enumerate() {
            let from = (r * t + pr as usize) * c3;
            cache[from..(r + 1) * t * c3].copy_from_slice(&garbage[from..(r + 1) * t * c3]);
        }
        let new: Vec<f32> = (0..b).flat_map(|r| inp[(r * t + pos[r] as usize) * c3..][..c3].to_vec()).collect();
        let want: Vec<f32> = (0..b).flat_map(|r| out[(r * t + pos[r] as usize) * c..][..c].to_vec()).collect();
        let mut want_cache = cache.clone();
        for (r, &pr) in pos.iter().enumerate() {
            let at = (r * t + pr as usize) * c3;
            want_cache[at + c..at + c3].copy_from_slice(&inp[at + c..at + c3]);
        }
        // Every form (the vec4 ones where the head size allows them), and whichever the tuner picks.
        let forms: Vec<Option<ops::DecodeForm>> =
            ops::DecodeForm::ALL.into_iter().filter(|f| f.supports(c / nh)).map(Some).chain([None]).collect();
        for form in forms {
            let tcache = Tensor::from_f32(&gpu, "cache", &cache).unwrap();
            let tnew = Tensor::from_f32(&gpu, "qkv", &new).unwrap();
            let (tpos, tout) =
                (Tensor::from_u32(&gpu, "pos", &pos).unwrap(), Tensor::zeros(&gpu, "out", b * c).unwrap());
            let mut plan = Plan::new();
            plan.push(match form {
                Some(f) => ops::attention_decode_with(&gpu, f, &tout, &tcache, &tnew, &tpos, b, t, c, nh),
                None => ops::attention_decode(&gpu, &tout, &tcache, &tnew, &tpos, b, t, c, nh),
            });
            plan.submit(&gpu);
            let what = format!("{form:?} (B,T,C,NH)=({b},{t},{c},{nh}) pos {pos:?}");
            assert_close(&format!("{what} out"), &tout.to_vec(&gpu).unwrap(), &want, 1e-5, 1e-4);
            assert_eq!(tcache.to_vec(&gpu).unwrap(), want_cache, "{what}: the cache after the step");
        }
    }
}
