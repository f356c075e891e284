//! The fused toy MLP (`FusedMlp`, shaders/toy_mlp.wgsl) against the CPU reference (`reference::mlp`) and against the
//! generic GPU path (`Mlp` + `Optimizer`): forward table and row log-probs, every gradient (fc2.weight's
//! materialised from its factors), the gradient norm's partial sums, and whole training steps (Adam with clipping and
//! weight decay, SGD), on odd shapes; the vec4 and scalar kernel forms to the same bits; replicas bit for bit equal
//! to lone models; a non-finite gradient skipped.

mod common;
use common::*;
use dpo3d::gpu::Readback;
use dpo3d::model::init::mlp_params;
use dpo3d::model::{FusedMlp, Mlp, MlpConfig, Policy};
use dpo3d::objectives::PreferenceLoss;
use dpo3d::reference::mlp::MlpRef;
use dpo3d::train::{run_step, OptimConfig, OptimizerKind, PreferenceTrainer, ReferenceMode};

fn cfg(prompts: usize, hidden: usize, responses: usize, first_bias: bool) -> MlpConfig {
    MlpConfig { prompts, hidden, responses, first_bias, scalar_head: false, depth: 2 }
}

fn deep(c: MlpConfig, depth: usize) -> MlpConfig {
    MlpConfig { depth, ..c }
}

/// (prompts, responses) of B rows, every prompt used, some twice.
fn rows(p: usize, r: usize, b: usize, seed: u32) -> (Vec<u32>, Vec<u32>) {
    let prompts = (0..b as u32).map(|i| i % p as u32).collect();
    let responses = (0..b as u32).map(|i| (i * 7 + seed) % r as u32).collect();
    (prompts, responses)
}

#[test]
fn should_match_the_reference_forward_backward_and_norm_on_odd_shapes() {
    let gpu = gpu();
    // (P, H, R, first_bias, B, depth): the toy's shape with a bias, odd ones (H not a multiple of 64, P < 4), and
    // deeper models (their extra H -> H layers' gradients are materialised by the backward).
    for (p, h, r, bias, b, depth) in [
        (4, 37, 10, true, 8, 2),
        (3, 70, 7, false, 5, 2),
        (1, 64, 16, true, 3, 2),
        (4, 129, 5, false, 12, 2),
        (4, 37, 10, true, 8, 3),
        (2, 45, 6, false, 7, 4),
    ] {
        let c = deep(cfg(p, h, r, bias), depth);
        let n = 2;
        let inits: Vec<Vec<f32>> = (0..n).map(|k| mlp_params(&c, 7 + k as u64).unwrap()).collect();
        let m = FusedMlp::replicated(&gpu, &c, n, b, &inits.concat()).unwrap();
        let (prompts, responses) = rows(p, r, b, 3);
        m.set_batch(&gpu, &prompts, &responses).unwrap();
        let dlogps: Vec<Vec<f32>> = (0..n).map(|k| randn(100 + k as u64, b, 1.0)).collect();
        m.dlogps.write_f32(&gpu, &dlogps.concat());
        let rb = Readback::new(&gpu, &[&m.log_probs, &m.logps, &m.partials]);
        let out =
            pollster::block_on(run_step(&gpu, &[&m.forward, &m.backward, &m.w2_grad], Some(&rb))).unwrap().unwrap();
        let grads = pollster::block_on(m.grads.download_contiguous(&gpu)).unwrap();
        let what = format!("P {p} H {h} R {r} bias {bias} B {b} depth {depth}");
        let per = grads.len() / n;
        let np = out[2].len() / n;
        for k in 0..n {
            let reference = MlpRef::from_params(&c, inits[k].clone());
            let want_table: Vec<f32> = reference.probs().iter().map(|x| x.ln()).collect();
            assert_close(
                &format!("{what} replica {k}: table"),
                &out[0][k * p * r..(k + 1) * p * r],
                &want_table,
                1e-5,
                1e-5,
            );
            let acts = reference.forward(&prompts, &responses);
            assert_close(&format!("{what} replica {k}: logps"), &out[1][k * b..(k + 1) * b], &acts.logps, 1e-5, 1e-5);
            let want = reference.backward(&acts, &prompts, &responses, &dlogps[k], None);
            assert_close(&format!("{what} replica {k}: grads"), &grads[k * per..(k + 1) * per], &want, 1e-5, 1e-4);
            let ss: f64 = out[2][k * np..(k + 1) * np].iter().map(|&x| x as f64).sum();
            let want_ss: f64 = want.iter().map(|&g| (g as f64) * (g as f64)).sum();
            assert!(want_ss > 1e-3, "{what}: gradient too small to test the norm");
            assert!(((ss - want_ss) / want_ss).abs() < 1e-4, "{what} replica {k}: sum of squares {ss} vs {want_ss}");
        }
    }
}

fn pair_rows(p: usize, r: usize, pairs: usize) -> (Vec<u32>, Vec<u32>) {
    let prompts: Vec<u32> = (0..2 * pairs as u32).map(|i| (i % pairs as u32) % p as u32).collect();
    let chosen = (0..pairs as u32).map(|i| i % r as u32);
    let rejected = (0..pairs as u32).map(|i| (i + 3) % r as u32);
    (prompts, chosen.chain(rejected).collect())
}

fn trainers(
    gpu: &dpo3d::Gpu,
    c: &MlpConfig,
    n: usize,
    pairs: usize,
    params: &[f32],
    loss: &PreferenceLoss,
    opt: &OptimConfig,
) -> (PreferenceTrainer<FusedMlp>, PreferenceTrainer<Mlp>) {
    let (prompts, responses) = pair_rows(c.prompts, c.responses, pairs);
    let b = prompts.len();
    let fused = || {
        let m = FusedMlp::replicated(gpu, c, n, b, params).unwrap();
        m.set_batch(gpu, &prompts, &responses).unwrap();
        m
    };
    let plain = || {
        let m = Mlp::replicated(gpu, c, n, b, params).unwrap();
        m.set_batch(gpu, &prompts, &responses).unwrap();
        m
    };
    let f = PreferenceTrainer::new(gpu, fused(), Some(fused()), loss, opt, ReferenceMode::Precomputed).unwrap();
    let g = PreferenceTrainer::new(gpu, plain(), Some(plain()), loss, opt, ReferenceMode::Precomputed).unwrap();
    for mask in [&f.objective, &g.objective] {
        mask.set_mask(gpu, &vec![1.0; n * b]).unwrap();
    }
    pollster::block_on(f.precompute_reference(gpu)).unwrap();
    pollster::block_on(g.precompute_reference(gpu)).unwrap();
    (f, g)
}

/// SGD with momentum, clipping and weight decay: the deeper models' optimizer in the tests below.
fn sgd_momentum() -> OptimConfig {
    OptimConfig {
        kind: OptimizerKind::Sgd,
        lr: 0.5,
        momentum: 0.5,
        grad_clip: 0.02,
        weight_decay: 0.01,
        ..Default::default()
    }
}

#[test]
fn should_train_like_the_generic_mlp_and_optimizer() {
    let gpu = gpu();
    let c = cfg(4, 45, 10, true);
    let n = 2;
    let params: Vec<f32> = (0..n).flat_map(|k| mlp_params(&c, 20 + k as u64).unwrap()).collect();
    let cases = [
        (
            PreferenceLoss::FlexDpo { beta_pos: 0.1, beta_neg: 0.05 },
            OptimConfig { lr: 2e-2, grad_clip: 0.05, weight_decay: 0.01, ..Default::default() },
        ),
        (
            PreferenceLoss::Dpo { beta: 0.5 },
            OptimConfig { kind: OptimizerKind::Sgd, lr: 0.5, grad_clip: 0.0, ..Default::default() },
        ),
    ];
    let c3 = deep(cfg(4, 33, 10, false), 3);
    let params3: Vec<f32> = (0..n).flat_map(|k| mlp_params(&c3, 30 + k as u64).unwrap()).collect();
    // SGD: Adam's normalised step would turn float noise in near-zero gradient elements into full-size steps.
    let deeper = (PreferenceLoss::Dpo { beta: 0.1 }, sgd_momentum());
    for (i, (loss, opt)) in cases.into_iter().chain([deeper]).enumerate() {
        let (c, params) = if i == 3 { (&c3, &params3) } else { (&c, &params) };
        let (mut f, mut g) = trainers(&gpu, c, n, 4, params, &loss, &opt);
        let mut clipped = false;
        for step in 0..6 {
            let (mf, nf) = pollster::block_on(f.step(&gpu)).unwrap();
            let (mg, ng) = pollster::block_on(g.step(&gpu)).unwrap();
            let what = format!("{} {:?} step {step}", loss.name(), opt.kind);
            assert_close(&format!("{what}: loss"), &[mf.get("loss")], &[mg.get("loss")], 1e-5, 1e-4);
            assert_close(&format!("{what}: grad norm"), &[nf], &[ng], 1e-6, 1e-4);
            clipped |= opt.grad_clip > 0.0 && ng > opt.grad_clip;
        }
        assert!(opt.grad_clip == 0.0 || clipped, "{}: clipping never triggered", loss.name());
        let pf = pollster::block_on(f.policy.download_replica_params(&gpu)).unwrap();
        let pg = pollster::block_on(g.policy.download_replica_params(&gpu)).unwrap();
        let moved: f32 = pg[0].iter().zip(params.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(moved > 1e-3, "{}: parameters barely moved ({moved})", loss.name());
        for k in 0..n {
            assert_close(&format!("{} replica {k}: parameters after 6 steps", loss.name()), &pf[k], &pg[k], 2e-6, 2e-4);
        }
    }
}

/// Pin every fused-MLP kernel of shape class (H, N) to its vec4 form (`toy_forward4`, ...) or its scalar one.
fn pin_toy_forms(gpu: &dpo3d::Gpu, h: usize, n: usize, vec4: bool) {
    let pairs = [
        ("toy_forward4", "toy_forward"),
        ("toy_forward4_bias", "toy_forward_bias"),
        ("toy_hidden_forward4", "toy_hidden_forward"),
        ("toy_hidden_backward4", "toy_hidden_backward"),
        ("toy_mid_backward4", "toy_mid_backward"),
        ("toy_update4", "toy_update"),
        ("toy_update4_sgd", "toy_update_sgd"),
    ];
    let class = dpo3d::gpu::tune::classes(&[h, n]);
    gpu.tuner.pin(
        &pairs.iter().map(|&(v, s)| (format!("toy {s} {class}"), (if vec4 { v } else { s }).to_string())).collect(),
    );
}

/// H a multiple of 4 has two forms of the forward, backward and update kernels (fc2.weight read as vec4s or as
/// scalars), either of which the tuner may pick: both must train to the same bits (replicas stay bit for bit what
/// they are alone whichever form a group size gets), and match the generic path. P = 4 with a bias reads fc1 as
/// vec4s too; P = 3 and depth 3 take the other branches (the extra layer's forward and backward), with SGD.
#[test]
fn should_train_to_the_same_bits_in_the_vec4_and_scalar_forms() {
    let n = 2;
    let adam = OptimConfig { lr: 2e-2, grad_clip: 0.05, weight_decay: 0.01, ..Default::default() };
    let sgd = sgd_momentum();
    let flex = PreferenceLoss::FlexDpo { beta_pos: 0.1, beta_neg: 0.05 };
    let dpo = PreferenceLoss::Dpo { beta: 0.1 };
    for (c, opt, loss) in [(cfg(4, 68, 10, true), adam, flex), (deep(cfg(3, 68, 7, false), 3), sgd, dpo)] {
        let params: Vec<f32> = (0..n).flat_map(|k| mlp_params(&c, 40 + k as u64).unwrap()).collect();
        let mut trained = vec![];
        for vec4 in [false, true] {
            let gpu = gpu();
            pin_toy_forms(&gpu, c.hidden, n, vec4);
            let (mut f, mut g) = trainers(&gpu, &c, n, 4, &params, &loss, &opt);
            let labels: Vec<&str> = [f.policy.forward_plan(), f.policy.backward_plan(), &f.opt.plan]
                .iter()
                .flat_map(|p| p.dispatches.iter().map(|d| d.label))
                .filter(|l| l.starts_with("toy_") && !l.starts_with("toy_head") && *l != "toy_w2_grad")
                .collect();
            let want = if c.depth == 3 { 5 } else { 3 };
            assert_eq!(labels.len(), want, "{labels:?}");
            for l in &labels {
                assert_eq!(
                    l.contains('4'),
                    vec4,
                    "{c:?}: kernel {l} in the {} form",
                    if vec4 { "vec4" } else { "scalar" }
                );
            }
            for _ in 0..4 {
                pollster::block_on(f.step(&gpu)).unwrap();
                pollster::block_on(g.step(&gpu)).unwrap();
            }
            let pf = pollster::block_on(f.policy.download_replica_params(&gpu)).unwrap();
            let pg = pollster::block_on(g.policy.download_replica_params(&gpu)).unwrap();
            let moved: f32 = pf[0].iter().zip(params.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(moved > 1e-3, "{c:?}: parameters barely moved ({moved})");
            for k in 0..n {
                assert_close(&format!("{c:?} vec4 {vec4} replica {k}"), &pf[k], &pg[k], 2e-6, 2e-4);
            }
            trained.push(pf);
        }
        assert_eq!(trained[0], trained[1], "{c:?}: the vec4 and scalar forms trained to different parameters");
    }
}

#[test]
fn should_train_replicas_bit_identical_to_lone_fused_models() {
    let gpu = gpu();
    let c = cfg(4, 70, 10, false);
    let n = 3;
    let inits: Vec<Vec<f32>> = (0..n).map(|k| mlp_params(&c, 60 + k as u64).unwrap()).collect();
    let loss = PreferenceLoss::Dpo { beta: 0.1 };
    let opt = OptimConfig { lr: 1e-2, grad_clip: 0.0, ..Default::default() };
    let run = |params: &[f32], replicas: usize| {
        let (mut f, _) = trainers(&gpu, &c, replicas, 4, params, &loss, &opt);
        for _ in 0..4 {
            pollster::block_on(f.step(&gpu)).unwrap();
        }
        pollster::block_on(f.policy.download_replica_params(&gpu)).unwrap()
    };
    let together = run(&inits.concat(), n);
    for k in 0..n {
        assert_eq!(together[k], run(&inits[k], 1)[0], "replica {k}: parameters after 4 steps");
    }
}

#[test]
fn should_skip_a_non_finite_step_for_that_replica_only() {
    let gpu = gpu();
    let c = cfg(4, 40, 10, false);
    let mut params: Vec<f32> = (0..2).flat_map(|k| mlp_params(&c, 80 + k as u64).unwrap()).collect();
    let loss = PreferenceLoss::Dpo { beta: 0.1 };
    let opt = OptimConfig { lr: 1e-2, ..Default::default() };
    let (mut f, _) = trainers(&gpu, &c, 2, 4, &params, &loss, &opt);
    // Poison replica 1's fc3.bias after the reference was taken: its loss and gradient become NaN.
    let per = params.len() / 2;
    params[2 * per - 1] = f32::NAN;
    f.policy.params.upload_contiguous(&gpu, &params);
    let err = pollster::block_on(f.step(&gpu)).expect_err("NaN gradient").to_string();
    assert!(err.contains("replica 1"), "{err}");
    let after = pollster::block_on(f.policy.download_replica_params(&gpu)).unwrap();
    assert_eq!(after[1][..per - 1], params[per..2 * per - 1], "replica 1 must keep its parameters");
    assert_ne!(after[0], params[..per], "replica 0 must have been updated");
}

#[test]
fn should_refuse_gradient_accumulation_and_unsupported_shapes() {
    let gpu = gpu();
    let c = cfg(4, 16, 10, false);
    let params = mlp_params(&c, 1).unwrap();
    let (mut f, _) = trainers(&gpu, &c, 1, 4, &params, &PreferenceLoss::Dpo { beta: 0.1 }, &OptimConfig::default());
    let err = pollster::block_on(f.micro_step(&gpu, true, false)).expect_err("accumulation").to_string();
    assert!(err.contains("micro-batches"), "{err}");
    for (c, b) in [(cfg(5, 8, 10, false), 4), (cfg(4, 8, 17, false), 4), (cfg(4, 8, 10, false), 65)] {
        let p = mlp_params(&c, 1).unwrap();
        assert!(FusedMlp::replicated(&gpu, &c, 1, b, &p).is_err(), "{c:?} B {b} must be refused");
    }
    let m = FusedMlp::replicated(&gpu, &c, 1, 2, &params).unwrap();
    assert!(m.set_batch(&gpu, &[0, 4], &[0, 1]).is_err(), "prompt out of range");
    assert!(m.set_batch(&gpu, &[0, 1], &[0, 10]).is_err(), "response out of range");
}
