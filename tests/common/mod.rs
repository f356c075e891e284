//! Shared test helpers: the GPU (honouring WGPU_BACKEND; CI sets it to vulkan so a missing driver fails loudly),
//! seeded random data, and closeness checks that print the worst element.
#![allow(dead_code)]

use dpo3d::rng::Rng;
use dpo3d::Gpu;

pub fn gpu() -> Gpu {
    match Gpu::new_blocking() {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    }
}

pub fn randn(seed: u64, n: usize, std: f32) -> Vec<f32> {
    let mut r = Rng::new(seed);
    let mut v = vec![0.0; n];
    r.fill_normal(&mut v, std);
    v
}

/// Assert |got - want| <= atol + rtol * |want| elementwise; on failure name the tensor, index and values. Both sides
/// must be finite: a NaN or infinite expectation fails (a reference that produced NaN must not make every comparison
/// pass). Where an infinity is expected by design, say so with `assert_close_allowing_inf`.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    check_close(what, got, want, atol, rtol, false)
}

/// `assert_close`, except that an element where `want` is +inf or -inf passes iff `got` is the same infinity (e.g.
/// a masked logit). NaN still fails on either side.
pub fn assert_close_allowing_inf(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    check_close(what, got, want, atol, rtol, true)
}

fn check_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32, allow_inf: bool) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs {}", got.len(), want.len());
    let mut worst = (0usize, 0.0f32);
    for i in 0..got.len() {
        let (g, w) = (got[i], want[i]);
        if allow_inf && w.is_infinite() {
            assert!(g == w, "{what}[{i}]: got {g}, want {w}");
            continue;
        }
        assert!(w.is_finite(), "{what}[{i}]: expected value {w} is not finite (got {g})");
        assert!(g.is_finite(), "{what}[{i}] = {g} is not finite (want {w})");
        let err = (g - w).abs() - rtol * w.abs();
        if err > worst.1 {
            worst = (i, err);
        }
    }
    let i = worst.0;
    assert!(worst.1 <= atol, "{what}: element {i}: got {} want {} (excess error {})", got[i], want[i], worst.1);
}
