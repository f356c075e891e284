//! GPU LayerNorm (forward, alone and fused with the residual add, and the two-pass backward) against the CPU reference on odd shapes (rows and channels
//! that are not multiples of the workgroup, C above 256 so a thread loops over channels), accumulation onto nonzero
//! gradients, run-to-run determinism, and a finite-difference check of the reference backward.

mod common;
use common::*;
use dpo3d::gpu::{Plan, Tensor};
use dpo3d::ops::layernorm as ops;
use dpo3d::reference::layernorm as cpu;
use dpo3d::Gpu;

const ROWS: &[usize] = &[1, 5, 37];
const CHANNELS: &[usize] = &[3, 17, 64, 300];

fn t(gpu: &Gpu, v: &[f32]) -> Tensor {
    Tensor::from_f32(gpu, "t", v).unwrap()
}

/// Inputs with a nonzero mean and a spread, so the normalisation does something.
fn inputs(seed: u64, n: usize, c: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let inp: Vec<f32> = randn(seed, n * c, 2.0).iter().map(|x| x + 0.5).collect();
    let weight: Vec<f32> = randn(seed + 1, c, 0.5).iter().map(|x| x + 1.0).collect();
    let bias = randn(seed + 2, c, 0.5);
    (inp, weight, bias)
}

#[test]
fn should_match_reference_layernorm_forward() {
    let gpu = gpu();
    for form in [ops::RowForm::Workgroup, ops::RowForm::Invocation] {
        for &n in ROWS {
            for &c in CHANNELS {
                let (inp, weight, bias) = inputs(10, n, c);
                let (tout, tmean, trstd) = (
                    Tensor::zeros(&gpu, "out", n * c).unwrap(),
                    Tensor::zeros(&gpu, "mean", n).unwrap(),
                    Tensor::zeros(&gpu, "rstd", n).unwrap(),
                );
                let mut plan = Plan::new();
                plan.push(ops::layernorm_forward_with(
                    &gpu,
                    form,
                    &tout,
                    &tmean,
                    &trstd,
                    &t(&gpu, &inp),
                    &t(&gpu, &weight),
                    &t(&gpu, &bias),
                    n,
                    c,
                ));
                plan.submit(&gpu);
                let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
                cpu::layernorm_forward(&mut out, &mut mean, &mut rstd, &inp, &weight, &bias, n, c);
                let what = format!("{form:?} n={n} c={c}");
                assert_close(&format!("{what} out"), &tout.to_vec(&gpu).unwrap(), &out, 1e-5, 1e-5);
                assert_close(&format!("{what} mean"), &tmean.to_vec(&gpu).unwrap(), &mean, 1e-5, 1e-5);
                assert_close(&format!("{what} rstd"), &trstd.to_vec(&gpu).unwrap(), &rstd, 1e-5, 1e-5);
            }
        }
    }
}

/// The fused residual add + LayerNorm against the reference's residual_forward then layernorm_forward, and bit for
/// bit against the two unfused GPU dispatches in the same row form (the same arithmetic in the same order).
#[test]
fn should_match_reference_residual_layernorm_forward_and_the_unfused_pair() {
    use dpo3d::ops::elementwise;
    let gpu = gpu();
    for form in [ops::RowForm::Workgroup, ops::RowForm::Invocation] {
        for &n in ROWS {
            for &c in CHANNELS {
                let (a, weight, bias) = inputs(20, n, c);
                let b = randn(23, n * c, 1.5);
                let z = |len: usize| Tensor::zeros(&gpu, "z", len).unwrap();
                let (ta, tb, tw, tbias) = (t(&gpu, &a), t(&gpu, &b), t(&gpu, &weight), t(&gpu, &bias));
                let (res, out, mean, rstd) = (z(n * c), z(n * c), z(n), z(n));
                let (res2, out2, mean2, rstd2) = (z(n * c), z(n * c), z(n), z(n));
                let mut plan = Plan::new();
                plan.push(ops::residual_layernorm_forward_with(
                    &gpu, form, &res, &out, &mean, &rstd, &ta, &tb, &tw, &tbias, n, c,
                ));
                plan.push(elementwise::residual_forward(&gpu, &res2, &ta, &tb, n * c));
                plan.push(ops::layernorm_forward_with(&gpu, form, &out2, &mean2, &rstd2, &res2, &tw, &tbias, n, c));
                plan.submit(&gpu);

                let want_res: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
                let (mut want, mut wmean, mut wrstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
                cpu::layernorm_forward(&mut want, &mut wmean, &mut wrstd, &want_res, &weight, &bias, n, c);
                let what = format!("{form:?} n={n} c={c}");
                let got = |x: &Tensor| x.to_vec(&gpu).unwrap();
                assert_eq!(got(&res), want_res, "{what} res");
                assert_close(&format!("{what} out"), &got(&out), &want, 1e-5, 1e-5);
                assert_close(&format!("{what} mean"), &got(&mean), &wmean, 1e-5, 1e-5);
                assert_close(&format!("{what} rstd"), &got(&rstd), &wrstd, 1e-5, 1e-5);
                for (name, fused, pair) in
                    [("res", &res, &res2), ("out", &out, &out2), ("mean", &mean, &mean2), ("rstd", &rstd, &rstd2)]
                {
                    let (f, u) = (got(fused), got(pair));
                    assert!(
                        f.iter().zip(&u).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{what} {name}: fused and unfused differ"
                    );
                }
            }
        }
    }
}

/// Run the GPU backward onto the given initial gradients; returns (dinp, dweight, dbias).
#[allow(clippy::too_many_arguments)]
fn gpu_backward(
    gpu: &Gpu,
    form: ops::RowForm,
    init: (&[f32], &[f32], &[f32]),
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
    n: usize,
    c: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (tdinp, tdw, tdb) = (t(gpu, init.0), t(gpu, init.1), t(gpu, init.2));
    let mut plan = Plan::new();
    plan.extend(ops::layernorm_backward_with(
        gpu,
        form,
        &tdinp,
        &tdw,
        &tdb,
        &t(gpu, dout),
        &t(gpu, inp),
        &t(gpu, weight),
        &t(gpu, mean),
        &t(gpu, rstd),
        n,
        c,
    ));
    plan.submit(gpu);
    (tdinp.to_vec(gpu).unwrap(), tdw.to_vec(gpu).unwrap(), tdb.to_vec(gpu).unwrap())
}

#[test]
fn should_match_reference_layernorm_backward_accumulating() {
    let gpu = gpu();
    for form in [ops::RowForm::Workgroup, ops::RowForm::Invocation] {
        for &n in ROWS {
            for &c in CHANNELS {
                let (inp, weight, bias) = inputs(20, n, c);
                let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
                cpu::layernorm_forward(&mut out, &mut mean, &mut rstd, &inp, &weight, &bias, n, c);
                let dout = randn(23, n * c, 1.0);
                // Nonzero initial gradients: the backward must add to them, not overwrite them.
                let (dinp0, dw0, db0) = (randn(24, n * c, 1.0), randn(25, c, 1.0), randn(26, c, 1.0));
                let (got_dinp, got_dw, got_db) =
                    gpu_backward(&gpu, form, (&dinp0, &dw0, &db0), &dout, &inp, &weight, &mean, &rstd, n, c);
                let (mut dinp, mut dw, mut db) = (dinp0.clone(), dw0.clone(), db0.clone());
                cpu::layernorm_backward(&mut dinp, &mut dw, &mut db, &dout, &inp, &weight, &mean, &rstd, n, c);
                let what = format!("{form:?} n={n} c={c}");
                assert_close(&format!("{what} dinp"), &got_dinp, &dinp, 2e-5, 1e-4);
                assert_close(&format!("{what} dweight"), &got_dw, &dw, 2e-5, 1e-4);
                assert_close(&format!("{what} dbias"), &got_db, &db, 2e-5, 1e-4);
                // The channels kernel's two forms (a workgroup with a tree in workgroup memory; an invocation per 4
                // channels where C is a multiple of 4) add the same partial sums in the same order.
                if form == ops::RowForm::Invocation {
                    let (_, wg_dw, wg_db) = gpu_backward(
                        &gpu,
                        ops::RowForm::Workgroup,
                        (&dinp0, &dw0, &db0),
                        &dout,
                        &inp,
                        &weight,
                        &mean,
                        &rstd,
                        n,
                        c,
                    );
                    assert_eq!((&got_dw, &got_db), (&wg_dw, &wg_db), "{what}: dweight/dbias differ between forms");
                }
            }
        }
    }
}

#[test]
fn should_give_identical_layernorm_gradients_run_to_run() {
    let gpu = gpu();
    let (n, c) = (37, 300);
    let (inp, weight, bias) = inputs(30, n, c);
    let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    cpu::layernorm_forward(&mut out, &mut mean, &mut rstd, &inp, &weight, &bias, n, c);
    let dout = randn(33, n * c, 1.0);
    let zeros = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
    for form in [ops::RowForm::Workgroup, ops::RowForm::Invocation] {
        let z = (&zeros.0[..], &zeros.1[..], &zeros.2[..]);
        let first = gpu_backward(&gpu, form, z, &dout, &inp, &weight, &mean, &rstd, n, c);
        let second = gpu_backward(&gpu, form, z, &dout, &inp, &weight, &mean, &rstd, n, c);
        assert!(first == second, "{form:?}: layernorm backward differs between two identical runs");
    }
}

/// loss = sum(out * r), accumulated in f64 over the reference forward.
fn loss(inp: &[f32], weight: &[f32], bias: &[f32], r: &[f32], n: usize, c: usize) -> f64 {
    let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    cpu::layernorm_forward(&mut out, &mut mean, &mut rstd, inp, weight, bias, n, c);
    out.iter().zip(r).map(|(&o, &ri)| o as f64 * ri as f64).sum()
}

/// Central difference of `loss` in element `i` of the vector that `which` selects (0 inp, 1 weight, 2 bias).
fn numeric(params: &mut [Vec<f32>; 3], which: usize, i: usize, r: &[f32], n: usize, c: usize) -> f64 {
    let h = 1e-2f32;
    let x = params[which][i];
    params[which][i] = x + h;
    let up = loss(&params[0], &params[1], &params[2], r, n, c);
    let xu = params[which][i] as f64;
    params[which][i] = x - h;
    let down = loss(&params[0], &params[1], &params[2], r, n, c);
    let xd = params[which][i] as f64;
    params[which][i] = x;
    (up - down) / (xu - xd)
}

#[test]
fn should_match_finite_differences_reference_layernorm_backward() {
    for &(n, c) in &[(1usize, 3usize), (3, 5), (2, 8)] {
        let (inp, weight, bias) = inputs(40 + c as u64, n, c);
        let r = randn(50, n * c, 1.0);
        let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        cpu::layernorm_forward(&mut out, &mut mean, &mut rstd, &inp, &weight, &bias, n, c);
        // d loss / d out = r
        let (mut dinp, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
        cpu::layernorm_backward(&mut dinp, &mut dw, &mut db, &r, &inp, &weight, &mean, &rstd, n, c);
        let mut params = [inp, weight, bias];
        for (which, name, analytic) in [(0, "dinp", &dinp), (1, "dweight", &dw), (2, "dbias", &db)] {
            for (i, &a) in analytic.iter().enumerate() {
                let num = numeric(&mut params, which, i, &r, n, c);
                let err = (num - a as f64).abs();
                assert!(err <= 2e-3 + 2e-3 * num.abs(), "n={n} c={c} {name}[{i}]: analytic {a} numeric {num}");
            }
        }
    }
}

#[test]
fn should_normalise_rows_beyond_one_grid_row() {
    // 65537 rows need a second row of workgroups (one workgroup per LayerNorm row, at most 65535 per dimension).
    // Forward only: on lavapipe this alone takes about 2 s; the backward's row kernel finds its row the same way.
    let gpu = gpu();
    let (n, c) = (65537, 3);
    let (inp, weight, bias) = inputs(60, n, c);
    let (tout, tmean, trstd) = (
        Tensor::zeros(&gpu, "out", n * c).unwrap(),
        Tensor::zeros(&gpu, "mean", n).unwrap(),
        Tensor::zeros(&gpu, "rstd", n).unwrap(),
    );
    let mut plan = Plan::new();
    plan.push(ops::layernorm_forward(
        &gpu,
        &tout,
        &tmean,
        &trstd,
        &t(&gpu, &inp),
        &t(&gpu, &weight),
        &t(&gpu, &bias),
        n,
        c,
    ));
    plan.submit(&gpu);
    let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    cpu::layernorm_forward(&mut out, &mut mean, &mut rstd, &inp, &weight, &bias, n, c);
    assert_close("out", &tout.to_vec(&gpu).unwrap(), &out, 1e-5, 1e-5);
    assert_close("mean", &tmean.to_vec(&gpu).unwrap(), &mean, 1e-5, 1e-5);
    assert_close("rstd", &trstd.to_vec(&gpu).unwrap(), &rstd, 1e-5, 1e-5);
}
