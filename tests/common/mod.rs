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

/// Assert |a - b| <= atol + rtol * |b| elementwise; on failure name the tensor, index and values.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs {}", got.len(), want.len());
    let mut worst = (0usize, 0.0f32);
    for i in 0..got.len() {
        assert!(got[i].is_finite(), "{what}[{i}] = {} is not finite", got[i]);
        let err = (got[i] - want[i]).abs() - rtol * want[i].abs();
        if err > worst.1 {
            worst = (i, err);
        }
    }
    let i = worst.0;
    assert!(worst.1 <= atol, "{what}: element {i}: got {} want {} (excess error {})", got[i], want[i], worst.1);
}
