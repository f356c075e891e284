//! GPU gradient norm (two-pass deterministic reduction, clip scale) and AdamW update against the CPU reference:
//! norms over sizes that need one, several and strided workgroups; bit-identical norms on a rerun; three
//! consecutive AdamW steps with and without clipping and weight decay; Adam's step counter on the GPU (several steps
//! in one submit); and a NaN in the gradients: the step is skipped on the GPU (parameters, moments and t untouched,
//! the skip counted), in the op and in the SFT and preference trainers, which return an error naming the step.

mod common;
use common::*;
use dpo3d::gpu::{Plan, Tensor};
use dpo3d::ops::adamw as ops;
use dpo3d::ops::adamw::AdamHyper;
use dpo3d::reference::adamw as cpu;

/// The hyper block with betas (0.9, 0.999) and lr, weight decay as given.
fn hyper(gpu: &dpo3d::Gpu, lr: f32, beta1: f32, beta2: f32, weight_decay: f32) -> Tensor {
    let t = Tensor::uniform(gpu, "hyper", 8).unwrap();
    t.write_f32(gpu, AdamHyper::new(lr, beta1, beta2, 1e-8, weight_decay).as_f32s());
    t
}

/// The norm plan over `grads` and its norm buffer (6 f32, from `norm_init`).
fn norm_plan_with(gpu: &dpo3d::Gpu, grads: &Tensor, hyper: &Tensor, n: usize, max_norm: f32) -> (Plan, Tensor) {
    let scratch = Tensor::zeros(gpu, "scratch", ops::grad_norm_scratch_len(n)).unwrap();
    let norm = Tensor::from_f32(gpu, "norm", &ops::norm_init(1)).unwrap();
    let mut plan = Plan::new();
    plan.extend(ops::grad_norm(gpu, &norm, grads, &scratch, hyper, n, max_norm));
    (plan, norm)
}

fn norm_plan(gpu: &dpo3d::Gpu, grads: &Tensor, n: usize, max_norm: f32) -> (Plan, Tensor) {
    let h = hyper(gpu, 1e-3, 0.9, 0.999, 0.0);
    norm_plan_with(gpu, grads, &h, n, max_norm)
}

/// The GPU step state [t, beta1^t, beta2^t, skipped] of group g as the reference's `StepState`.
fn gpu_state(norm: &[f32], groups: usize, g: usize) -> cpu::StepState {
    let [t, b1, b2, skipped] = ops::step_state(norm, groups, g);
    cpu::StepState { t: t as u32, beta1_pow: b1, beta2_pow: b2, skipped: skipped as u32 }
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
    // [norm, scale] only: the step state after it counts the runs (t = 2 after the second)
    let bits = |v: &[f32]| v[..2].iter().map(|x| x.to_bits()).collect::<Vec<_>>();
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
        thyper.write_f32(&gpu, AdamHyper::new(lr, beta1, beta2, eps, weight_decay).as_f32s());
        let (mut plan, tnorm) = norm_plan_with(&gpu, &tgrads, &thyper, n, max_norm);
        plan.push(ops::adamw_update(&gpu, &tparams, &tgrads, &tm, &tv, &thyper, &tnorm, n));
        let (mut params, mut m, mut v) = (params0.clone(), vec![0.0; n], vec![0.0; n]);
        let mut state = cpu::StepState::default();
        for step in 1..=3u32 {
            let g = randn(50 + step as u64, n, 0.5);
            tgrads.write_f32(&gpu, &g);
            plan.submit(&gpu);
            let applied = cpu::adamw_step(
                &mut params,
                &g,
                &mut m,
                &mut v,
                &mut state,
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
                max_norm,
            );
            assert!(applied);
            let what = format!("step {step} max_norm={max_norm} wd={weight_decay}");
            // t and the running powers are the reference's bit for bit (the same f32 products)
            assert_eq!(gpu_state(&tnorm.to_vec(&gpu).unwrap(), 1, 0), state, "{what}: step state");
            assert_eq!(state.t, step);
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
        let thyper = hyper(&gpu, lr, 0.9, 0.999, weight_decay);
        let (mut plan, tnorm) = norm_plan_with(&gpu, &tgrads, &thyper, n, max_norm);
        plan.push(ops::sgd_update(&gpu, &tparams, &tgrads, &thyper, &tnorm, n));
        let mut params = params0.clone();
        let mut state = cpu::StepState::default();
        for step in 1..=3u32 {
            let g = randn(70 + step as u64, n, 0.5);
            tgrads.write_f32(&gpu, &g);
            plan.submit(&gpu);
            assert!(cpu::sgd_step(&mut params, &g, &mut state, lr, weight_decay, max_norm));
            let what = format!("step {step} max_norm={max_norm} wd={weight_decay}");
            assert_close(&format!("{what} params"), &tparams.to_vec(&gpu).unwrap(), &params, 1e-6, 1e-5);
        }
    }
}

#[test]
fn should_match_reference_sgd_with_momentum_per_group() {
    let gpu = gpu();
    let (groups, len) = (3usize, 333usize);
    let n = groups * len;
    let (lr, momentum, weight_decay, max_norm) = (5e-2f32, 0.9f32, 0.01f32, 2.0f32);
    let params0 = randn(61, n, 1.0);
    let tparams = Tensor::from_f32(&gpu, "params", &params0).unwrap();
    let tgrads = Tensor::zeros(&gpu, "grads", n).unwrap();
    let tbuf = Tensor::zeros(&gpu, "momentum buffer", n).unwrap();
    let thyper = Tensor::uniform(&gpu, "hyper", 8).unwrap();
    let h = AdamHyper { momentum, ..AdamHyper::new(lr, 0.9, 0.999, 1e-8, weight_decay) };
    thyper.write_f32(&gpu, h.as_f32s());
    let scratch = Tensor::zeros(&gpu, "scratch", groups * ops::grad_norm_scratch_len(len)).unwrap();
    let tnorm = Tensor::from_f32(&gpu, "norm", &ops::norm_init(groups)).unwrap();
    let mut plan = Plan::new();
    plan.extend(ops::grad_norm_groups(&gpu, &tnorm, &tgrads, &scratch, &thyper, n, groups, max_norm));
    plan.push(ops::sgd_momentum_update_groups(&gpu, &tparams, &tgrads, &tbuf, &thyper, &tnorm, n, groups));
    let mut params = params0.clone();
    let mut buf = vec![0.0f32; n];
    for step in 1..=3u64 {
        // Group 1's gradients are large enough to be clipped, the others' are not.
        let mut g = randn(80 + step, n, 0.05);
        g[len..2 * len].iter_mut().for_each(|x| *x *= 100.0);
        tgrads.write_f32(&gpu, &g);
        plan.submit(&gpu);
        for k in 0..groups {
            let r = k * len..(k + 1) * len;
            let scale = cpu::clip_scale(cpu::grad_norm(&g[r.clone()]), max_norm);
            assert_eq!(scale < 1.0, k == 1, "group {k} clipping");
            cpu::sgd_momentum_update(
                &mut params[r.clone()],
                &g[r.clone()],
                &mut buf[r],
                lr,
                momentum,
                weight_decay,
                scale,
            );
        }
        assert_close(&format!("step {step} params"), &tparams.to_vec(&gpu).unwrap(), &params, 1e-6, 1e-5);
        assert_close(&format!("step {step} buffer"), &tbuf.to_vec(&gpu).unwrap(), &buf, 1e-6, 1e-5);
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
        let tnorm = Tensor::from_f32(&gpu, "norm", &ops::norm_init(groups)).unwrap();
        let params0 = randn(70, n, 1.0);
        let tparams = Tensor::from_f32(&gpu, "params", &params0).unwrap();
        let (tm, tv) = (Tensor::zeros(&gpu, "m", n).unwrap(), Tensor::zeros(&gpu, "v", n).unwrap());
        let sgd_params = Tensor::from_f32(&gpu, "sgd params", &params0).unwrap();
        let thyper = hyper(&gpu, 1e-2, 0.9, 0.999, 0.0);
        let mut plan = Plan::new();
        plan.extend(ops::grad_norm_groups(&gpu, &tnorm, &tg, &scratch, &thyper, n, groups, max_norm));
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
            assert_eq!(lnorm.to_vec(&gpu).unwrap()[..2], got[2 * k..2 * k + 2], "{what}: lone model's norm");
            // Each group's update used its own scale.
            let r = k * len..(k + 1) * len;
            let (mut p, mut m, mut v) = (params0[r.clone()].to_vec(), vec![0.0; len], vec![0.0; len]);
            let mut state = cpu::StepState::default();
            assert!(state.advance(got[2 * k], 0.9, 0.999));
            assert_eq!(gpu_state(&got, groups, k), state, "{what}: step state");
            cpu::adamw_update(&mut p, &g[r.clone()], &mut m, &mut v, &state, 1e-2, 0.9, 0.999, 1e-8, 0.0, scale);
            assert_close(&format!("{what} adamw"), &params[r.clone()], &p, 1e-6, 1e-5);
            let mut p = params0[r.clone()].to_vec();
            cpu::sgd_update(&mut p, &g[r.clone()], 1e-2, 0.0, scale);
            assert_close(&format!("{what} sgd"), &sgd[r], &p, 1e-6, 1e-5);
        }
        assert!(clipped >= 1 && clipped < groups, "max_norm between the norms clips some groups: {clipped}");
    }
}

/// A NaN (or an infinity) in one group's gradients: that group's step is skipped on the GPU (parameters, moments and
/// t bit-for-bit as before, the skip counted), the other group steps as the reference does; the next finite step
/// applies again with t advanced by one only.
#[test]
fn should_skip_a_step_whose_gradient_norm_is_not_finite() {
    let gpu = gpu();
    let (groups, len) = (2usize, 1000usize);
    let n = groups * len;
    let (lr, beta1, beta2, wd) = (1e-2f32, 0.9f32, 0.95f32, 0.1f32);
    for bad in [f32::NAN, f32::INFINITY] {
        let params0 = randn(80, n, 1.0);
        let tparams = Tensor::from_f32(&gpu, "params", &params0).unwrap();
        let sgd_params = Tensor::from_f32(&gpu, "sgd params", &params0).unwrap();
        let tg = Tensor::zeros(&gpu, "grads", n).unwrap();
        let (tm, tv) = (Tensor::zeros(&gpu, "m", n).unwrap(), Tensor::zeros(&gpu, "v", n).unwrap());
        let thyper = hyper(&gpu, lr, beta1, beta2, wd);
        let scratch = Tensor::zeros(&gpu, "scratch", groups * ops::grad_norm_scratch_len(len)).unwrap();
        let tnorm = Tensor::from_f32(&gpu, "norm", &ops::norm_init(groups)).unwrap();
        let mut plan = Plan::new();
        plan.extend(ops::grad_norm_groups(&gpu, &tnorm, &tg, &scratch, &thyper, n, groups, 1.0));
        plan.push(ops::adamw_update_groups(&gpu, &tparams, &tg, &tm, &tv, &thyper, &tnorm, n, groups));
        plan.push(ops::sgd_update_groups(&gpu, &sgd_params, &tg, &thyper, &tnorm, n, groups));
        // per group: the reference's (AdamW params, m, v, SGD params, step state)
        type Want = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, cpu::StepState);
        let mut want: Vec<Want> = (0..groups)
            .map(|k| {
                let p = params0[k * len..(k + 1) * len].to_vec();
                (p.clone(), vec![0.0; len], vec![0.0; len], p, cpu::StepState::default())
            })
            .collect();
        for step in 1..=3u64 {
            let mut g = randn(90 + step, n, 0.5);
            if step == 2 {
                g[len + 17] = bad; // one element of group 1
            }
            tg.write_f32(&gpu, &g);
            let before = (tparams.to_vec(&gpu).unwrap(), tm.to_vec(&gpu).unwrap(), tv.to_vec(&gpu).unwrap());
            let sgd_before = sgd_params.to_vec(&gpu).unwrap();
            plan.submit(&gpu);
            let norm = tnorm.to_vec(&gpu).unwrap();
            let (params, m, v, sgd) = (
                tparams.to_vec(&gpu).unwrap(),
                tm.to_vec(&gpu).unwrap(),
                tv.to_vec(&gpu).unwrap(),
                sgd_params.to_vec(&gpu).unwrap(),
            );
            for (k, w) in want.iter_mut().enumerate() {
                let r = k * len..(k + 1) * len;
                let what = format!("{bad} step {step} group {k}");
                let gk = &g[r.clone()];
                let mut sgd_state = w.4;
                let applied =
                    cpu::adamw_step(&mut w.0, gk, &mut w.1, &mut w.2, &mut w.4, lr, beta1, beta2, 1e-8, wd, 1.0);
                assert_eq!(cpu::sgd_step(&mut w.3, gk, &mut sgd_state, lr, wd, 1.0), applied);
                assert_eq!(applied, !(step == 2 && k == 1), "{what}: reference applies the step");
                assert_eq!(gpu_state(&norm, groups, k), w.4, "{what}: step state");
                if applied {
                    assert_close(&format!("{what} params"), &params[r.clone()], &w.0, 1e-6, 1e-5);
                    assert_close(&format!("{what} m"), &m[r.clone()], &w.1, 1e-7, 1e-5);
                    assert_close(&format!("{what} sgd"), &sgd[r.clone()], &w.3, 1e-6, 1e-5);
                } else {
                    assert!(!norm[2 * k].is_finite(), "{what}: the norm shows the non-finite gradient");
                    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&params[r.clone()]), bits(&before.0[r.clone()]), "{what}: params untouched");
                    assert_eq!(bits(&m[r.clone()]), bits(&before.1[r.clone()]), "{what}: m untouched");
                    assert_eq!(bits(&v[r.clone()]), bits(&before.2[r.clone()]), "{what}: v untouched");
                    assert_eq!(bits(&sgd[r.clone()]), bits(&sgd_before[r.clone()]), "{what}: sgd params untouched");
                }
            }
        }
        // group 0 applied all three steps, group 1 two of them and skipped one
        assert_eq!((want[0].4.t, want[0].4.skipped, want[1].4.t, want[1].4.skipped), (3, 0, 2, 1));
    }
}

/// The optimizer plan recorded three times into one submit is three steps: t reaches 3 on the GPU and the
/// parameters match three reference steps (with the same gradients each time).
#[test]
fn should_take_several_steps_in_one_submit() {
    let gpu = gpu();
    let n = 777;
    let (lr, beta1, beta2, wd) = (1e-2f32, 0.9f32, 0.999f32, 0.0f32);
    let params0 = randn(100, n, 1.0);
    let g = randn(101, n, 0.5);
    let tparams = Tensor::from_f32(&gpu, "params", &params0).unwrap();
    let tg = Tensor::from_f32(&gpu, "grads", &g).unwrap();
    let (tm, tv) = (Tensor::zeros(&gpu, "m", n).unwrap(), Tensor::zeros(&gpu, "v", n).unwrap());
    let thyper = hyper(&gpu, lr, beta1, beta2, wd);
    let (mut plan, tnorm) = norm_plan_with(&gpu, &tg, &thyper, n, 1.0);
    plan.push(ops::adamw_update(&gpu, &tparams, &tg, &tm, &tv, &thyper, &tnorm, n));
    pollster::block_on(dpo3d::train::run_step(&gpu, &[&plan, &plan, &plan], None)).unwrap();
    let (mut params, mut m, mut v, mut state) =
        (params0.clone(), vec![0.0; n], vec![0.0; n], cpu::StepState::default());
    for _ in 0..3 {
        assert!(cpu::adamw_step(&mut params, &g, &mut m, &mut v, &mut state, lr, beta1, beta2, 1e-8, wd, 1.0));
    }
    assert_eq!(gpu_state(&tnorm.to_vec(&gpu).unwrap(), 1, 0), state);
    assert_eq!(state.t, 3);
    assert_close("params after 3 steps in one submit", &tparams.to_vec(&gpu).unwrap(), &params, 1e-6, 1e-5);
}

/// Trainer level: a NaN in the SFT loss mask makes the loss and every gradient NaN; `SftTrainer::step` returns an
/// error naming the step, the parameters stay those of the last good step, and the next good step trains on.
#[test]
fn should_stop_sft_at_a_nan_step_with_the_last_good_parameters() {
    use dpo3d::model::GptConfig;
    use dpo3d::train::sft::SftTrainer;
    let gpu = gpu();
    let cfg = GptConfig { vocab_size: 11, context: 8, layers: 1, heads: 2, width: 16, scalar_head: false };
    let (b, t) = (2, 5);
    let params = dpo3d::model::init::gpt_params(&cfg, 7).unwrap();
    let mut tr = SftTrainer::new(&gpu, &cfg, &params, b, t, &dpo3d::train::OptimConfig::default()).unwrap();
    let tokens: Vec<u32> = (0..b * t).map(|i| (i * 7 % 11) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|i| (i * 5 % 11) as u32).collect();
    let batch = |mask: Vec<f32>| dpo3d::data::SftBatch { b, t, tokens: tokens.clone(), targets: targets.clone(), mask };
    pollster::block_on(tr.step(&gpu, &batch(vec![1.0; b * t]))).unwrap();
    let good = pollster::block_on(tr.gpt.download_params(&gpu)).unwrap();
    let mut nan_mask = vec![1.0; b * t];
    nan_mask[3] = f32::NAN;
    let err = pollster::block_on(tr.step(&gpu, &batch(nan_mask))).unwrap_err().to_string();
    assert!(err.contains("SFT step 2") && err.contains("not finite"), "{err}");
    let after = pollster::block_on(tr.gpt.download_params(&gpu)).unwrap();
    assert_eq!(after, good, "parameters stay those of step 1");
    pollster::block_on(tr.step(&gpu, &batch(vec![1.0; b * t]))).unwrap();
    assert_ne!(pollster::block_on(tr.gpt.download_params(&gpu)).unwrap(), good, "step 3 trains");
    assert_eq!(pollster::block_on(tr.opt.applied_steps(&gpu, 0)).unwrap(), 2, "Adam's t counts applied steps only");
}

/// Trainer level, replicated: a NaN in replica 1's preference mask; `PreferenceTrainer::step` returns an error naming
/// the step and the replica; replica 1 keeps its parameters, replica 0 (finite) took the step.
#[test]
fn should_stop_preference_training_at_a_nan_step_naming_the_replica() {
    use dpo3d::model::{Mlp, MlpConfig};
    use dpo3d::objectives::PreferenceLoss;
    use dpo3d::train::{OptimConfig, PreferenceTrainer, ReferenceMode};
    let gpu = gpu();
    let cfg = MlpConfig { prompts: 3, hidden: 8, responses: 5, first_bias: false, scalar_head: false, depth: 2 };
    let replicas = 2;
    let p0 = dpo3d::model::init::mlp_params(&cfg, 5).unwrap();
    let params: Vec<f32> = p0.iter().chain(&p0).copied().collect();
    let (prompts, responses) = (vec![0u32, 1, 2, 0, 1, 2], vec![0u32, 1, 2, 3, 4, 3]); // 3 pairs: chosen, rejected
    let make = || {
        let m = Mlp::replicated(&gpu, &cfg, replicas, prompts.len(), &params).unwrap();
        m.set_batch(&gpu, &prompts, &responses).unwrap();
        m
    };
    let loss = PreferenceLoss::Dpo { beta: 0.1 };
    let mut tr =
        PreferenceTrainer::new(&gpu, make(), Some(make()), &loss, &OptimConfig::default(), ReferenceMode::Precomputed)
            .unwrap();
    let b = prompts.len();
    tr.objective.set_mask(&gpu, &vec![1.0; replicas * b]).unwrap();
    pollster::block_on(tr.precompute_reference(&gpu)).unwrap();
    pollster::block_on(tr.step(&gpu)).unwrap();
    let good = pollster::block_on(tr.policy.download_params(&gpu)).unwrap();
    let mut mask = vec![1.0; replicas * b];
    mask[b + 1] = f32::NAN; // replica 1
    tr.objective.set_mask(&gpu, &mask).unwrap();
    let err = pollster::block_on(tr.step(&gpu)).unwrap_err().to_string();
    assert!(err.contains("step 2 replica 1") && err.contains("not finite"), "{err}");
    assert!(!err.contains("replica 0"), "{err}");
    let after = pollster::block_on(tr.policy.download_params(&gpu)).unwrap();
    let half = after.len() / 2;
    assert_eq!(after[half..], good[half..], "replica 1 keeps the parameters of step 1");
    assert_ne!(after[..half], good[..half], "replica 0 took step 2");
    // A skip in a step that reads nothing back (the toy study's unlogged epochs) is reported by the next checked step.
    pollster::block_on(tr.step_with(&gpu, None)).unwrap();
    tr.objective.set_mask(&gpu, &vec![1.0; replicas * b]).unwrap();
    let err = pollster::block_on(tr.step(&gpu)).unwrap_err().to_string();
    assert!(err.contains("step 4 replica 1: 1 update(s) since the last check"), "{err}");
    pollster::block_on(tr.step(&gpu)).unwrap();
}
