//! GPU encoder (token + position embedding) against the CPU reference: forward and backward on odd shapes with
//! repeated tokens, more than 256 positions (several token chunks per vocabulary row), vocabulary rows no token
//! uses, accumulation onto nonzero gradients, and a finite-difference check of the reference backward.

mod common;
use common::*;
use dpo3d::gpu::{Plan, Tensor};
use dpo3d::ops::encoder as ops;
use dpo3d::reference::encoder as cpu;
use dpo3d::rng::Rng;
use dpo3d::Gpu;

/// (B, T, C, V): odd sizes; V is small next to B*T so tokens repeat; the last has B*T = 291 > 256.
const SHAPES: &[(usize, usize, usize, usize)] = &[(1, 1, 3, 5), (2, 7, 17, 11), (3, 5, 64, 4), (3, 97, 300, 37)];

fn t(gpu: &Gpu, v: &[f32]) -> Tensor {
    Tensor::from_f32(gpu, "t", v).unwrap()
}

/// Tokens drawn from the first `used` of V rows, so rows `used..V` never appear.
fn tokens(seed: u64, n: usize, used: usize) -> Vec<u32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.below(used as u32)).collect()
}

#[test]
fn should_match_reference_encoder_forward() {
    let gpu = gpu();
    for &(b, t_, c, v) in SHAPES {
        let toks = tokens(1, b * t_, v);
        let (wte, wpe) = (randn(2, v * c, 1.0), randn(3, t_ * c, 1.0));
        let tout = Tensor::zeros(&gpu, "out", b * t_ * c).unwrap();
        let ttok = Tensor::from_u32(&gpu, "tokens", &toks).unwrap();
        let mut plan = Plan::new();
        plan.push(ops::encoder_forward(&gpu, &tout, &ttok, &t(&gpu, &wte), &t(&gpu, &wpe), b, t_, c));
        plan.submit(&gpu);
        let mut out = vec![0.0; b * t_ * c];
        cpu::encoder_forward(&mut out, &toks, &wte, &wpe, b, t_, c);
        assert_close(&format!("b={b} t={t_} c={c} out"), &tout.to_vec(&gpu).unwrap(), &out, 0.0, 0.0);
    }
}

/// Run the GPU backward onto the given initial gradients; returns (dwte, dwpe).
#[allow(clippy::too_many_arguments)]
fn gpu_backward(
    gpu: &Gpu,
    form: ops::RowForm,
    dwte0: &[f32],
    dwpe0: &[f32],
    dout: &[f32],
    toks: &[u32],
    b: usize,
    t_: usize,
    c: usize,
    v: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (tdwte, tdwpe) = (t(gpu, dwte0), t(gpu, dwpe0));
    let ttok = Tensor::from_u32(gpu, "tokens", toks).unwrap();
    let mut plan = Plan::new();
    plan.extend(ops::encoder_backward_with(gpu, form, &tdwte, &tdwpe, &t(gpu, dout), &ttok, b, t_, c, v));
    plan.submit(gpu);
    (tdwte.to_vec(gpu).unwrap(), tdwpe.to_vec(gpu).unwrap())
}

#[test]
fn should_match_reference_encoder_backward_accumulating() {
    let gpu = gpu();
    for form in FORMS {
        for &(b, t_, c, v) in SHAPES {
            // Only the first V/2 + 1 rows are used: the rest must keep their initial gradient exactly.
            let used = (v / 2 + 1).min(v);
            let toks = tokens(4, b * t_, used);
            let dout = randn(5, b * t_ * c, 1.0);
            let (dwte0, dwpe0) = (randn(6, v * c, 1.0), randn(7, t_ * c, 1.0));
            let (got_dwte, got_dwpe) = gpu_backward(&gpu, form, &dwte0, &dwpe0, &dout, &toks, b, t_, c, v);
            let (mut dwte, mut dwpe) = (dwte0.clone(), dwpe0.clone());
            cpu::encoder_backward(&mut dwte, &mut dwpe, &dout, &toks, b, t_, c);
            let what = format!("{form:?} b={b} t={t_} c={c} v={v}");
            // Same additions in the same order as the reference: equal up to (at most) rounding.
            assert_close(&format!("{what} dwte"), &got_dwte, &dwte, 1e-6, 1e-6);
            assert_close(&format!("{what} dwpe"), &got_dwpe, &dwpe, 1e-6, 1e-6);
            assert_eq!(&got_dwte[used * c..], &dwte0[used * c..], "{what}: unused vocabulary rows changed");
        }
    }
}

/// Both forms of the dwte pass, whatever the tuner would pick here.
const FORMS: [ops::RowForm; 2] = [ops::RowForm::Workgroup, ops::RowForm::Invocation];

#[test]
fn should_give_identical_encoder_gradients_run_to_run() {
    let gpu = gpu();
    let (b, t_, c, v) = (3, 97, 300, 37);
    let toks = tokens(8, b * t_, v);
    let dout = randn(9, b * t_ * c, 1.0);
    let (z1, z2) = (vec![0.0; v * c], vec![0.0; t_ * c]);
    for form in FORMS {
        let first = gpu_backward(&gpu, form, &z1, &z2, &dout, &toks, b, t_, c, v);
        let second = gpu_backward(&gpu, form, &z1, &z2, &dout, &toks, b, t_, c, v);
        assert!(first == second, "{form:?}: encoder backward differs between two identical runs");
    }
    // The same additions in the same order: the two forms agree bit for bit.
    let w = gpu_backward(&gpu, FORMS[0], &z1, &z2, &dout, &toks, b, t_, c, v);
    let i = gpu_backward(&gpu, FORMS[1], &z1, &z2, &dout, &toks, b, t_, c, v);
    assert!(w == i, "the two forms of the dwte pass differ");
}

/// loss = sum(out * r), accumulated in f64 over the reference forward.
#[allow(clippy::too_many_arguments)]
fn loss(wte: &[f32], wpe: &[f32], toks: &[u32], r: &[f32], b: usize, t_: usize, c: usize) -> f64 {
    let mut out = vec![0.0; b * t_ * c];
    cpu::encoder_forward(&mut out, toks, wte, wpe, b, t_, c);
    out.iter().zip(r).map(|(&o, &ri)| o as f64 * ri as f64).sum()
}

#[test]
fn should_match_finite_differences_reference_encoder_backward() {
    let (b, t_, c, v) = (2, 3, 4, 5);
    let toks = vec![1u32, 3, 1, 3, 3, 0]; // repeats, within and across sequences; rows 2 and 4 unused
    let (wte, wpe) = (randn(10, v * c, 1.0), randn(11, t_ * c, 1.0));
    let r = randn(12, b * t_ * c, 1.0);
    let (mut dwte, mut dwpe) = (vec![0.0; v * c], vec![0.0; t_ * c]);
    cpu::encoder_backward(&mut dwte, &mut dwpe, &r, &toks, b, t_, c); // d loss / d out = r
    let mut params = [wte, wpe];
    for (which, name, analytic) in [(0, "dwte", &dwte), (1, "dwpe", &dwpe)] {
        for (i, &a) in analytic.iter().enumerate() {
            let h = 1e-2f32;
            let x = params[which][i];
            params[which][i] = x + h;
            let (up, xu) = (loss(&params[0], &params[1], &toks, &r, b, t_, c), params[which][i] as f64);
            params[which][i] = x - h;
            let (down, xd) = (loss(&params[0], &params[1], &toks, &r, b, t_, c), params[which][i] as f64);
            params[which][i] = x;
            let num = (up - down) / (xu - xd);
            assert!((num - a as f64).abs() <= 1e-4 + 1e-4 * num.abs(), "{name}[{i}]: analytic {a} numeric {num}");
        }
    }
}

/// The input of a KV-cached decode step: each row's token at its own position lens_b - 1 + step (clamped to T - 1),
/// embedded as the forward embeds it there, and that position written to `pos`.
#[test]
fn should_embed_each_rows_newest_token_like_the_forward_when_decoding() {
    let gpu = gpu();
    for &(b, t_, c, v) in SHAPES {
        let toks = tokens(4, b * t_, v);
        let (wte, wpe) = (randn(5, v * c, 1.0), randn(6, t_ * c, 1.0));
        let mut full = vec![0.0; b * t_ * c];
        cpu::encoder_forward(&mut full, &toks, &wte, &wpe, b, t_, c);
        let lens: Vec<u32> = (0..b).map(|r| (1 + (r * 5) % t_) as u32).collect();
        let (ttok, tlens) =
            (Tensor::from_u32(&gpu, "tokens", &toks).unwrap(), Tensor::from_u32(&gpu, "lens", &lens).unwrap());
        let (twte, twpe) = (t(&gpu, &wte), t(&gpu, &wpe));
        for step in [0usize, 1, t_] {
            let (tout, tpos) = (Tensor::zeros(&gpu, "out", b * c).unwrap(), Tensor::zeros(&gpu, "pos", b).unwrap());
            let mut plan = Plan::new();
            plan.push(ops::encoder_decode(&gpu, &tout, &tpos, &ttok, &tlens, &twte, &twpe, b, t_, c, step));
            plan.submit(&gpu);
            let pos: Vec<u32> = lens.iter().map(|&l| (l as usize - 1 + step).min(t_ - 1) as u32).collect();
            let want: Vec<f32> = (0..b).flat_map(|r| full[(r * t_ + pos[r] as usize) * c..][..c].to_vec()).collect();
            let what = format!("b={b} t={t_} c={c} step {step}");
            assert_eq!(tpos.to_vec_u32(&gpu).unwrap(), pos, "{what} pos");
            assert_close(&format!("{what} out"), &tout.to_vec(&gpu).unwrap(), &want, 0.0, 0.0);
        }
    }
}
