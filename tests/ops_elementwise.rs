//! GPU elementwise kernels (GELU, ReLU, residual, fill) against the CPU reference, forward and backward, on odd
//! sizes (not multiples of the workgroup) and on one size large enough to need a 2-D grid.

mod common;
use common::*;
use dpo3d::gpu::{Plan, Tensor};
use dpo3d::ops::elementwise as ops;
use dpo3d::reference::elementwise as cpu;

const SIZES: &[usize] = &[1, 7, 255, 257, 1000];

#[test]
fn should_match_reference_gelu() {
    let gpu = gpu();
    for &n in SIZES {
        let x = randn(1, n, 2.0);
        let dout = randn(2, n, 1.0);
        let dinp0 = randn(3, n, 1.0);
        let (tx, tout, tdout) = (
            Tensor::from_f32(&gpu, "x", &x).unwrap(),
            Tensor::zeros(&gpu, "o", n).unwrap(),
            Tensor::from_f32(&gpu, "do", &dout).unwrap(),
        );
        let tdinp = Tensor::from_f32(&gpu, "dx", &dinp0).unwrap();
        let mut plan = Plan::new();
        plan.push(ops::gelu_forward(&gpu, &tout, &tx, n));
        plan.push(ops::gelu_backward(&gpu, &tdinp, &tx, &tdout, n));
        plan.submit(&gpu);
        let mut want = vec![0.0; n];
        cpu::gelu_forward(&mut want, &x);
        let mut dwant = dinp0.clone();
        cpu::gelu_backward(&mut dwant, &x, &dout);
        assert_close("gelu out", &tout.to_vec(&gpu).unwrap(), &want, 1e-5, 1e-5);
        assert_close("gelu dinp", &tdinp.to_vec(&gpu).unwrap(), &dwant, 1e-5, 1e-4);
    }
}

#[test]
fn should_match_hand_computed_gelu_values() {
    // Independent of src/reference: GELU's tanh approximation (Hendrycks & Gimpel 2016, as GPT-2 and the kernel
    // use it), gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) and its derivative
    // 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2), u = sqrt(2/pi) (x + 0.044715 x^3),
    // evaluated in Python f64 (math.tanh); the derivative agrees with a central difference (h = 1e-6) to 1e-10.
    let x = [-3.0f32, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0];
    let want = [
        -0.0036373920817729943f64,
        -0.15880800939172324,
        -0.15428599017485606,
        0.0,
        0.34571400982514394,
        0.8411919906082768,
        1.954597694087775,
        2.996362607918227,
    ];
    let dwant = [
        -0.011584166630969516f64,
        -0.08296408384578255,
        0.13263009646535764,
        0.5,
        0.8673699035346424,
        1.0829640838457826,
        1.0860992566236183,
        1.0115841666309695,
    ];
    let gpu = gpu();
    let n = x.len();
    let tx = Tensor::from_f32(&gpu, "x", &x).unwrap();
    let tout = Tensor::zeros(&gpu, "o", n).unwrap();
    let tdout = Tensor::from_f32(&gpu, "do", &vec![1.0; n]).unwrap();
    let tdinp = Tensor::zeros(&gpu, "dx", n).unwrap();
    let mut plan = Plan::new();
    plan.push(ops::gelu_forward(&gpu, &tout, &tx, n));
    plan.push(ops::gelu_backward(&gpu, &tdinp, &tx, &tdout, n));
    plan.submit(&gpu);
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
    assert_close("gelu(x) vs formula", &tout.to_vec(&gpu).unwrap(), &f32s(&want), 1e-6, 1e-5);
    assert_close("gelu'(x) vs formula", &tdinp.to_vec(&gpu).unwrap(), &f32s(&dwant), 1e-6, 1e-5);
}

#[test]
fn should_match_reference_relu_and_residual() {
    let gpu = gpu();
    for &n in SIZES {
        let a = randn(4, n, 1.0);
        let b = randn(5, n, 1.0);
        let dout = randn(6, n, 1.0);
        let d1 = randn(7, n, 1.0);
        let d2 = randn(8, n, 1.0);
        let t = |v: &[f32]| Tensor::from_f32(&gpu, "t", v).unwrap();
        let (ta, tb, tdout, td1, td2) = (t(&a), t(&b), t(&dout), t(&d1), t(&d2));
        let (trelu, tres) = (Tensor::zeros(&gpu, "r", n).unwrap(), Tensor::zeros(&gpu, "s", n).unwrap());
        let trd = t(&d1);
        let mut plan = Plan::new();
        plan.push(ops::relu_forward(&gpu, &trelu, &ta, n));
        plan.push(ops::relu_backward(&gpu, &trd, &ta, &tdout, n));
        plan.push(ops::residual_forward(&gpu, &tres, &ta, &tb, n));
        plan.push(ops::residual_backward(&gpu, &td1, &td2, &tdout, n));
        plan.submit(&gpu);
        let (mut relu, mut rd, mut res, mut w1, mut w2) =
            (vec![0.0; n], d1.clone(), vec![0.0; n], d1.clone(), d2.clone());
        cpu::relu_forward(&mut relu, &a);
        cpu::relu_backward(&mut rd, &a, &dout);
        cpu::residual_forward(&mut res, &a, &b);
        cpu::residual_backward(&mut w1, &mut w2, &dout);
        assert_close("relu out", &trelu.to_vec(&gpu).unwrap(), &relu, 0.0, 0.0);
        assert_close("relu dinp", &trd.to_vec(&gpu).unwrap(), &rd, 0.0, 0.0);
        assert_close("residual out", &tres.to_vec(&gpu).unwrap(), &res, 0.0, 0.0);
        assert_close("residual dinp1", &td1.to_vec(&gpu).unwrap(), &w1, 0.0, 0.0);
        assert_close("residual dinp2", &td2.to_vec(&gpu).unwrap(), &w2, 0.0, 0.0);
    }
}

#[test]
fn should_fill_beyond_one_grid_row() {
    // 65535 * 256 + 3 elements need a second row of workgroups.
    let gpu = gpu();
    let n = 65535 * 256 + 3;
    let t = Tensor::zeros(&gpu, "big", n).unwrap();
    let mut plan = Plan::new();
    plan.push(ops::fill(&gpu, &t, 1.5));
    plan.submit(&gpu);
    let v = t.to_vec(&gpu).unwrap();
    assert!(v.iter().all(|&x| x == 1.5), "fill left {} elements unset", v.iter().filter(|&&x| x != 1.5).count());
}

/// transpose4 against a transposition by index, on shapes of 1 to 25 blocks per side; the output's every element is
/// written (it starts as NaN).
#[test]
fn should_transpose_by_4x4_blocks() {
    let gpu = gpu();
    for (s, &(m, n)) in [(4, 4), (8, 12), (20, 36), (4, 100), (100, 4)].iter().enumerate() {
        let inp = randn(70 + s as u64, m * n, 1.0);
        let want: Vec<f32> = (0..n * m).map(|k| inp[(k % m) * n + k / m]).collect();
        let tinp = Tensor::from_f32(&gpu, "inp", &inp).unwrap();
        let tout = Tensor::from_f32(&gpu, "out", &vec![f32::NAN; m * n]).unwrap();
        let mut plan = Plan::new();
        plan.push(ops::transpose4(&gpu, &tout, &tinp, m, n));
        plan.submit(&gpu);
        assert_eq!(tout.to_vec(&gpu).unwrap(), want, "transpose4 {m}x{n}");
    }
}
