//! Replicated models: N independent toy MLPs evaluated by one set of dispatches must compute, bit for bit, what each
//! computes alone: forward (log-probs and the scalar head), preference training with per-replica gradient clipping,
//! and the SFT objective. This is what lets the toy study train its seeds together without changing any run.

mod common;
use common::*;
use dpo3d::gpu::Readback;
use dpo3d::model::init::mlp_params;
use dpo3d::model::{Mlp, MlpConfig, Policy};
use dpo3d::objectives::{PreferenceLoss, Sft};
use dpo3d::ops::preference::STATS;
use dpo3d::toy::{PAIRS, PROMPTS, RESPONSES};
use dpo3d::train::{run_step, OptimConfig, Optimizer, PreferenceTrainer, ReferenceMode};

/// An odd hidden width, a first-layer bias and a scalar head, so every parameter kind is replicated.
fn cfg() -> MlpConfig {
    MlpConfig { prompts: PROMPTS, hidden: 37, responses: RESPONSES, first_bias: true, scalar_head: true, depth: 2 }
}

fn pair_batch() -> (Vec<u32>, Vec<u32>) {
    let prompts = PAIRS.iter().chain(PAIRS.iter()).map(|p| p.0 as u32).collect();
    let responses = PAIRS.iter().map(|p| p.1 as u32).chain(PAIRS.iter().map(|p| p.2 as u32)).collect();
    (prompts, responses)
}

fn trainer(gpu: &dpo3d::Gpu, replicas: usize, params: &[f32], opt: &OptimConfig) -> PreferenceTrainer<Mlp> {
    let (prompts, responses) = pair_batch();
    let b = prompts.len();
    let make = || {
        let m = Mlp::replicated(gpu, &cfg(), replicas, b, params).unwrap();
        m.set_batch(gpu, &prompts, &responses).unwrap();
        m
    };
    let loss = PreferenceLoss::FlexDpo { beta_pos: 0.1, beta_neg: 0.05 };
    let t = PreferenceTrainer::new(gpu, make(), Some(make()), &loss, opt, ReferenceMode::Precomputed).unwrap();
    t.objective.set_mask(gpu, &vec![1.0; replicas * b]).unwrap();
    pollster::block_on(t.precompute_reference(gpu)).unwrap();
    t
}

#[test]
fn should_train_replicas_bit_identical_to_lone_models() {
    let gpu = gpu();
    let n = 3;
    // The log-prob kernels' two row forms sum a row in different orders, and the tuner chooses a form per row count;
    // pinned here to differ between a lone model's rows and all the replicas' rows, the replicas must still use the
    // lone model's form (a cold tuner cache once chose so on its own, and this test failed).
    let (b, r) = (2 * PAIRS.len(), RESPONSES);
    let mut pins = std::collections::BTreeMap::new();
    for what in ["forward", "log_softmax"] {
        pins.insert(format!("logprobs {what} {b}x{r}"), "workgroup".to_string());
        pins.insert(format!("logprobs {what} {}x{r}", n * b), "invocation".to_string());
    }
    gpu.tuner.pin(&pins);
    let inits: Vec<Vec<f32>> = (0..n).map(|k| mlp_params(&cfg(), 40 + k as u64).unwrap()).collect();
    // A learning rate large enough to move things in 6 steps, and a clip threshold that some replicas' gradient norms
    // exceed and others do not (checked below), so per-replica clipping is exercised.
    let opt = OptimConfig { lr: 3e-2, grad_clip: 0.02, weight_decay: 0.01, ..Default::default() };
    let mut rep = trainer(&gpu, n, &inits.concat(), &opt);
    let mut lone: Vec<_> = inits.iter().map(|p| trainer(&gpu, 1, p, &opt)).collect();
    let read = |t: &PreferenceTrainer<Mlp>| {
        Readback::new(
            &gpu,
            &[&t.policy.log_probs, t.policy.scalar.as_ref().unwrap(), &t.objective.metrics, &t.opt.norm],
        )
    };
    let rep_rb = read(&rep);
    let lone_rb: Vec<_> = lone.iter().map(read).collect();
    let mut clipped = vec![false; n];
    for step in 0..6 {
        let got = pollster::block_on(rep.step_with(&gpu, Some(&rep_rb))).unwrap().unwrap();
        for k in 0..n {
            let want = pollster::block_on(lone[k].step_with(&gpu, Some(&lone_rb[k]))).unwrap().unwrap();
            let what = format!("step {step} replica {k}");
            assert_eq!(got[0][k * b * r..(k + 1) * b * r], want[0][..], "{what}: log-probs");
            assert_eq!(got[1][k * b..(k + 1) * b], want[1][..], "{what}: scalar head");
            assert_eq!(got[2][k * STATS..(k + 1) * STATS], want[2][..], "{what}: metrics");
            assert_eq!(got[3][2 * k..2 * k + 2], want[3][..2], "{what}: gradient norm and clip scale");
            let state = |norm: &[f32], groups, g| dpo3d::ops::adamw::step_state(norm, groups, g);
            assert_eq!(state(&got[3], n, k), state(&want[3], 1, 0), "{what}: optimizer step state");
            clipped[k] |= want[3][1] < 1.0;
        }
        // The replicas really are different runs (at step 0 every loss is ln 2: policy = reference).
        if step > 0 {
            assert_ne!(got[2][0], got[2][STATS], "step {step}: replicas 0 and 1 have the same loss");
        }
    }
    let norms: Vec<f32> = (0..n).map(|k| pollster::block_on(lone[k].opt.norm.read_f32(&gpu)).unwrap()[0]).collect();
    assert!(clipped.iter().any(|&c| c), "no replica was clipped: norms {norms:?}");
    let params = pollster::block_on(rep.policy.download_replica_params(&gpu)).unwrap();
    for (k, t) in lone.iter().enumerate() {
        assert_eq!(params[k], pollster::block_on(t.policy.download_params(&gpu)).unwrap(), "replica {k} parameters");
        assert_ne!(params[k], inits[k], "replica {k} trained");
    }
}

#[test]
fn should_give_each_replica_its_own_sft_loss() {
    let gpu = gpu();
    let n = 4;
    let b = PROMPTS * RESPONSES;
    let inits: Vec<Vec<f32>> = (0..n).map(|k| mlp_params(&cfg(), 70 + k as u64).unwrap()).collect();
    let prompts: Vec<u32> = (0..b).map(|i| (i / RESPONSES) as u32).collect();
    let responses: Vec<u32> = (0..b).map(|i| (i % RESPONSES) as u32).collect();
    // Different soft targets per replica (like the study's four data scenarios).
    let weights: Vec<Vec<f32>> = (0..n).map(|k| (0..b).map(|i| ((i * (k + 2)) % 7) as f32 / 7.0).collect()).collect();
    let opt = OptimConfig { lr: 1e-2, grad_clip: 0.0, ..Default::default() };
    let run = |params: &[f32], replicas: usize, w: &[f32]| {
        let m = Mlp::replicated(&gpu, &cfg(), replicas, b, params).unwrap();
        m.set_batch(&gpu, &prompts, &responses).unwrap();
        let sft = Sft::new(&gpu, &m).unwrap();
        sft.set_mask(&gpu, w).unwrap();
        let mut o = Optimizer::with_groups(&gpu, m.params(), m.grads(), &opt, m.replicas()).unwrap();
        let rb = Readback::new(&gpu, &[&sft.loss]);
        let mut losses = Vec::new();
        for _ in 0..4 {
            o.prepare(&gpu);
            let out = pollster::block_on(run_step(&gpu, &[&m.forward, &sft.plan, &m.backward, &o.plan], Some(&rb)));
            losses.push(out.unwrap().unwrap().remove(0));
        }
        (losses, pollster::block_on(m.download_replica_params(&gpu)).unwrap())
    };
    let (rep_losses, rep_params) = run(&inits.concat(), n, &weights.concat());
    for k in 0..n {
        let (losses, params) = run(&inits[k], 1, &weights[k]);
        for (step, (g, w)) in rep_losses.iter().zip(&losses).enumerate() {
            assert_eq!(g[k], w[0], "replica {k} step {step}: SFT loss");
        }
        assert_eq!(rep_params[k], params[0], "replica {k}: parameters after 4 SFT steps");
    }
}

#[test]
fn should_reject_batches_that_do_not_split_into_replicas() {
    let gpu = gpu();
    let p = mlp_params(&cfg(), 1).unwrap();
    let err = Mlp::replicated(&gpu, &cfg(), 2, 8, &p).err().expect("one replica's parameters for two").to_string();
    assert!(err.contains("2 replicas"), "{err}");
    let m = Mlp::replicated(&gpu, &cfg(), 2, 3, &[p.clone(), p].concat()).unwrap();
    let err = m.set_batch(&gpu, &[0, 1], &[0, 1]).expect_err("2 rows for 3 per replica").to_string();
    assert!(err.contains("3 (or 6)"), "{err}");
    // 3 rows per replica cannot hold chosen/rejected pairs.
    let loss = PreferenceLoss::Dpo { beta: 0.1 };
    let err = dpo3d::objectives::Preference::new(&gpu, &m, &loss).err().expect("odd rows per replica").to_string();
    assert!(err.contains("per replica"), "{err}");
}
