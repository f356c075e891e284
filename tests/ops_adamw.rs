//! GPU gradient norm (two-pass deterministic reduction, clip scale) and AdamW update against the CPU reference:
//! norms over sizes that need one, several and strided workgroups; bit-identical norms on a rerun; and three
//! consecutive AdamW steps with and without clipping and weight decay.

mod common;
use common::*;
use dpo3d::gpu::{Plan, Tensor};
use dpo3d::ops::adamw as ops;
use dpo3d::ops::adamw::AdamHyper;
use dpo3d::reference::adamw as cpu;

fn norm_plan(gpu: &dpo3d::Gpu, grads: &Tensor, n: usize, max_norm: f32) -> (Plan, Tensor) {
    let scratch = Tensor::zeros(gpu, "scratch", ops::grad_norm_scratch_len(n)).unwrap();
    let norm = Tensor::zeros(gpu, "norm", 2).unwrap();
    let mut plan = Plan::new();
    plan.extend(ops::grad_norm(gpu, &norm, grads, &scratch, n, max_norm));
    (plan, norm)
}

#[test]
fn should_match_reference_grad_norm_and_clip_scale() {
    let gpu = gpu();
    // 300_001 > 1024 workgroups * 256 threads: threads loop over several elements.
    for &n in &[1usize, 1000, 300_001] {
        let g = randn(20 + n as u64, n, 0.5);
        let want = cpu::grad_norm(&g);
        let tg = Tensor::from_f32(&gpu, "grads", &g).unwrap();
        for &max_norm in &[0.0f32, want * 2.0, want * 0.25] {
            let (plan, tnorm) = norm_plan(&gpu, &tg, n, max_norm);
            plan.submit(&gpu);
            let got = tnorm.to_vec(&gpu).unwrap();
            assert!((got[0] - want).abs() <= 1e-5 * want, "n={n}: norm {} vs reference {want}", got[0]);
            let scale = cpu::clip_scale(got[0], max_norm);
            assert!((got[1] - scale).abs() <= 1e-6 * scale, "n={n} max_norm={max_norm}: scale {} vs {scale}", got[1]);
            if max_norm < want {
                if max_norm > 0.0 {
                    assert!((got[1] - 0.25).abs() < 1e-5, "clipping to a quarter of the norm: scale {}", got[1]);
                } else {
                    assert_eq!(got[1], 1.0, "max_norm 0 disables clipping");
                }
            } else {
                assert_eq!(got[1], 1.0, "a norm under max_norm is not clipped");
            }
        }
    }
}

#[test]
fn should_compute_bit_identical_grad_norm_on_rerun() {
    let gpu = gpu();
    let n = 300_001;
    let g = randn(30, n, 1.0);
    let tg = Tensor::from_f32(&gpu, "grads", &g).unwrap();
    let (plan, tnorm) = norm_plan(&gpu, &tg, n, 1.0);
    plan.submit(&gpu);
    let a = tnorm.to_vec(&gpu).unwrap();
    plan.submit(&gpu);
    let b = tnorm.to_vec(&gpu).unwrap();
    let (plan2, tnorm2) = norm_plan(&gpu, &tg, n, 1.0);
    plan2.submit(&gpu);
    let c = tnorm2.to_vec(&gpu).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b), "same plan, two runs");
    assert_eq!(bits(&a), bits(&c), "two plans over the same gradients");
}

#[test]
fn should_match_reference_adamw_over_three_steps() {
    let gpu = gpu();
    let n = 1001;
    let (lr, beta1, beta2, eps) = (1e-2f32, 0.9f32, 0.95f32, 1e-8f32);
    // grads have norm ~ 0.5 * sqrt(1001) ~ 16: max_norm 1 clips, 0 does not.
    for &(max_norm, weight_decay) in &[(0.0f32, 0.0f32), (0.0, 0.1), (1.0, 0.0), (1.0, 0.1)] {
        let params0 = randn(40, n, 1.0);
        let tparams = Tensor::from_f32(&gpu, "params", &params0).unwrap();
        let tgrads = Tensor::zeros(&gpu, "grads", n).unwrap();
        let (tm, tv) = (Tensor::zeros(&gpu, "m", n).unwrap(), Tensor::zeros(&gpu, "v", n).unwrap());
        let thyper = Tensor::uniform(&gpu, "hyper", 8).unwrap();
        let (mut plan, tnorm) = norm_plan(&gpu, &tgrads, n, max_norm);
        plan.push(ops::adamw_update(&gpu, &tparams, &tgrads, &tm, &tv, &thyper, &tnorm, n));
        let (mut params, mut m, mut v) = (params0.clone(), vec![0.0; n], vec![0.0; n]);
        for step in 1..=3u32 {
            let g = randn(50 + step as u64, n, 0.5);
            tgrads.write_f32(&gpu, &g);
            thyper.write_f32(&gpu, AdamHyper::for_step(step, lr, beta1, beta2, eps, weight_decay).as_f32s());
            plan.submit(&gpu);
            let scale = cpu::clip_scale(cpu::grad_norm(&g), max_norm);
            cpu::adamw_update(&mut params, &g, &mut m, &mut v, step, lr, beta1, beta2, eps, weight_decay, scale);
            let what = format!("step {step} max_norm={max_norm} wd={weight_decay}");
            assert_close(&format!("{what} m"), &tm.to_vec(&gpu).unwrap(), &m, 1e-7, 1e-5);
            assert_close(&format!("{what} v"), &tv.to_vec(&gpu).unwrap(), &v, 1e-9, 1e-5);
            assert_close(&format!("{what} params"), &tparams.to_vec(&gpu).unwrap(), &params, 1e-6, 1e-5);
        }
        // the optimizer moved every parameter
        let p = tparams.to_vec(&gpu).unwrap();
        assert!(p.iter().zip(&params0).all(|(a, b)| a != b));
    }
}

#[test]
fn should_match_reference_sgd_over_three_steps() {
    let gpu = gpu();
    let n = 1001;
    let lr = 5e-2f32;
    for &(max_norm, weight_decay) in &[(0.0f32, 0.0f32), (1.0, 0.1)] {
        let params0 = randn(60, n, 1.0);
        let tparams = Tensor::from_f32(&gpu, "params", &params0).unwrap();
        let tgrads = Tensor::zeros(&gpu, "grads", n).unwrap();
        let thyper = Tensor::uniform(&gpu, "hyper", 8).unwrap();
        let (mut plan, tnorm) = norm_plan(&gpu, &tgrads, n, max_norm);
        plan.push(ops::sgd_update(&gpu, &tparams, &tgrads, &thyper, &tnorm, n));
        let mut params = params0.clone();
        for step in 1..=3u32 {
            let g = randn(70 + step as u64, n, 0.5);
            tgrads.write_f32(&gpu, &g);
            thyper.write_f32(&gpu, AdamHyper::for_step(step, lr, 0.9, 0.999, 1e-8, weight_decay).as_f32s());
            plan.submit(&gpu);
            let scale = cpu::clip_scale(cpu::grad_norm(&g), max_norm);
            cpu::sgd_update(&mut params, &g, lr, weight_decay, scale);
            let what = format!("step {step} max_norm={max_norm} wd={weight_decay}");
            assert_close(&format!("{what} params"), &tparams.to_vec(&gpu).unwrap(), &params, 1e-6, 1e-5);
        }
    }
}

/// Groups (independent models packed back to back, as a replicated model's arena): each gets its own norm and clip
/// scale, the reference's per group, and bit-for-bit what the same gradients give as a lone model; AdamW and SGD
/// then apply each group's own scale.
#[test]
fn should_clip_each_group_by_its_own_norm() {
    let gpu = gpu();
    for &(groups, len) in &[(3usize, 1000usize), (2, 300_001), (5, 64)] {
        let n = groups * len;
        // Group g's gradients are scaled by g + 1, so with max_norm between the norms some groups clip, some not.
        let mut g = randn(60 + len as u64, n, 0.5);
        for (i, x) in g.iter_mut().enumerate() {
            *x *= (i / len + 1) as f32;
        }
        let norms: Vec<f32> = g.chunks(len).map(cpu::grad_norm).collect();
        let max_norm = 0.5 * (norms[0] + norms[1]);
        let tg = Tensor::from_f32(&gpu, "grads", &g).unwrap();
        let scratch = Tensor::zeros(&gpu, "scratch", groups * ops::grad_norm_scratch_len(len)).unwrap();
        let tnorm = Tensor::zeros(&gpu, "norm", 2 * groups).unwrap();
        let params0 = randn(70, n, 1.0);
        let tparams = Tensor::from_f32(&gpu, "params", &params0).unwrap();
        let (tm, tv) = (Tensor::zeros(&gpu, "m", n).unwrap(), Tensor::zeros(&gpu, "v", n).unwrap());
        let sgd_params = Tensor::from_f32(&gpu, "sgd params", &params0).unwrap();
        let thyper = Tensor::uniform(&gpu, "hyper", 8).unwrap();
        thyper.write_f32(&gpu, AdamHyper::for_step(1, 1e-2, 0.9, 0.999, 1e-8, 0.0).as_f32s());
        let mut plan = Plan::new();
        plan.extend(ops::grad_norm_groups(&gpu, &tnorm, &tg, &scratch, n, groups, max_norm));
        plan.push(ops::adamw_update_groups(&gpu, &tparams, &tg, &tm, &tv, &thyper, &tnorm, n, groups));
        plan.push(ops::sgd_update_groups(&gpu, &sgd_params, &tg, &thyper, &tnorm, n, groups));
        plan.submit(&gpu);
        let got = tnorm.to_vec(&gpu).unwrap();
        let (params, sgd) = (tparams.to_vec(&gpu).unwrap(), sgd_params.to_vec(&gpu).unwrap());
        let mut clipped = 0;
        for k in 0..groups {
            let what = format!("groups={groups} len={len} group {k}");
            let want = norms[k];
            assert!((got[2 * k] - want).abs() <= 1e-5 * want, "{what}: norm {} vs {want}", got[2 * k]);
            let scale = cpu::clip_scale(got[2 * k], max_norm);
            assert!((got[2 * k + 1] - scale).abs() <= 1e-6, "{what}: scale {} vs {scale}", got[2 * k + 1]);
            clipped += (scale < 1.0) as usize;
            // The same gradients as a lone model: identical bits.
            let lone = Tensor::from_f32(&gpu, "lone", &g[k * len..(k + 1) * len]).unwrap();
            let (lplan, lnorm) = norm_plan(&gpu, &lone, len, max_norm);
            lplan.submit(&gpu);
            assert_eq!(lnorm.to_vec(&gpu).unwrap(), got[2 * k..2 * k + 2], "{what}: lone model's norm");
            // Each group's update used its own scale.
            let r = k * len..(k + 1) * len;
            let (mut p, mut m, mut v) = (params0[r.clone()].to_vec(), vec![0.0; len], vec![0.0; len]);
            cpu::adamw_update(&mut p, &g[r.clone()], &mut m, &mut v, 1, 1e-2, 0.9, 0.999, 1e-8, 0.0, scale);
            assert_close(&format!("{what} adamw"), &params[r.clone()], &p, 1e-6, 1e-5);
            let mut p = params0[r.clone()].to_vec();
            cpu::sgd_update(&mut p, &g[r.clone()], 1e-2, 0.0, scale);
            assert_close(&format!("{what} sgd"), &sgd[r], &p, 1e-6, 1e-5);
        }
        assert!(clipped >= 1 && clipped < groups, "max_norm between the norms clips some groups: {clipped}");
    }
}
