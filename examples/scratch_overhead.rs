use dpo3d::gpu::{Plan, Tensor};
use dpo3d::ops::elementwise;
use std::time::Instant;
fn main() {
    let gpu = dpo3d::Gpu::new_blocking().unwrap();
    for &(n, count) in &[(64usize, 1usize), (64, 75), (64, 150), (4096, 75), (65536, 75)] {
        let a = Tensor::zeros(&gpu, "a", n).unwrap();
        let b = Tensor::zeros(&gpu, "b", n).unwrap();
        let mut plan = Plan::new();
        for i in 0..count {
            if i % 2 == 0 {
                plan.push(elementwise::gelu_forward(&gpu, &b, &a, n));
            } else {
                plan.push(elementwise::gelu_forward(&gpu, &a, &b, n));
            }
        }
        plan.submit(&gpu);
        gpu.wait();
        let mut best = f64::MAX;
        for _ in 0..20 {
            let t = Instant::now();
            plan.submit(&gpu);
            gpu.wait();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "n {n} dispatches {count}: {:.1} us total, {:.1} us per dispatch",
            best * 1e6,
            best * 1e6 / count as f64
        );
    }
}
