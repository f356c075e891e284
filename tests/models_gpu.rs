//! The GPU models end to end against the CPU reference models: GPT and MLP forward (log-probs, scalar head) and
//! backward (every parameter gradient), several SFT + AdamW steps, determinism (same seed, bit-identical numbers),
//! and the one-submit step's dispatch count.

mod common;
use common::*;
use dpo3d::gpu::Tensor;
use dpo3d::model::init::{gpt_params, mlp_params};
use dpo3d::model::{Gpt, GptConfig, Mlp, MlpConfig};
use dpo3d::ops::attention;
use dpo3d::reference::{adamw as ref_adamw, gpt::GptRef, mlp::MlpRef};
use dpo3d::rng::Rng;
use dpo3d::train::{run_step, sft::SftTrainer, OptimConfig};

fn tiny_gpt(scalar_head: bool) -> GptConfig {
    GptConfig { vocab_size: 13, context: 9, layers: 2, heads: 2, width: 16, scalar_head }
}

fn tokens(seed: u64, n: usize, v: usize) -> Vec<u32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.below(v as u32)).collect()
}

#[test]
fn should_match_reference_gpt_forward_and_backward() {
    // Both forms of the linear layers' forward (`ops::matmul::ForwardForm`), pinned for this GPT's shapes (BT = 21,
    // C = 16; the tuner keys BT by its class, 24), whichever the tuner would pick here.
    for (scalar_head, form) in [(false, "direct"), (true, "direct"), (false, "transposed"), (true, "transposed")] {
        let gpu = gpu();
        let keys = ["forward 24x48x16", "forward 24x16x16", "forward 24x64x16 gelu", "forward 24x16x64"];
        gpu.tuner.pin(&keys.iter().map(|k| (format!("linear {k}"), form.to_string())).collect());
        let cfg = tiny_gpt(scalar_head);
        let (b, t) = (3, 7);
        let reference = GptRef::from_params(&cfg, gpt_params(&cfg, 7).unwrap());
        let gpt = Gpt::new(&gpu, &cfg, b, t, &reference.params).unwrap();
        let (tok, tgt) = (tokens(1, b * t, cfg.vocab_size), tokens(2, b * t, cfg.vocab_size));
        gpt.set_batch(&gpu, &tok, &tgt).unwrap();
        let dlogps = randn(3, b * t, 1.0);
        let dscalar = randn(4, b * t, 1.0);
        gpt.dlogps.write_f32(&gpu, &dlogps);
        if let Some(ds) = &gpt.dscalar {
            ds.write_f32(&gpu, &dscalar);
        }
        // The forward alone first: the backward replaces the logits by their gradient.
        pollster::block_on(run_step(&gpu, &[&gpt.forward], None)).unwrap();
        let acts = reference.forward(&tok, &tgt, b, t);
        assert_close("gpt logits", &gpt.logits.to_vec(&gpu).unwrap(), &acts.logits, 1e-4, 1e-3);
        assert_close("gpt logps", &gpt.logps.to_vec(&gpu).unwrap(), &acts.logps, 1e-4, 1e-4);
        if let Some(s) = &gpt.scalar {
            assert_close("gpt scalar", &s.to_vec(&gpu).unwrap(), acts.scalar.as_ref().unwrap(), 1e-4, 1e-3);
        }
        pollster::block_on(run_step(&gpu, &[&gpt.backward], None)).unwrap();
        let want = reference.backward(&acts, &tok, &tgt, &dlogps, scalar_head.then_some(&dscalar[..]), b, t);
        let got = pollster::block_on(gpt.grads.download_contiguous(&gpu)).unwrap();
        let mut off = 0;
        for (name, shape) in cfg.param_shapes() {
            let n: usize = shape.iter().product();
            let scale = want[off..off + n].iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-3);
            assert_close(&format!("{form}: d{name}"), &got[off..off + n], &want[off..off + n], 2e-4 * scale, 2e-3);
            off += n;
        }
        // Every linear layer found its pinned form: none was measured under a key of its own.
        let linear: Vec<_> = gpu.tuner.choices().into_iter().filter(|(k, _)| k.starts_with("linear ")).collect();
        assert!(linear.iter().all(|(_, c)| c.source == "pinned" && c.kernel == form), "{form}: {linear:?}");
    }
}

#[test]
fn should_match_reference_mlp_forward_and_backward() {
    let gpu = gpu();
    for (first_bias, scalar_head, depth) in [(false, false, 2), (true, true, 2), (true, false, 3), (false, true, 1)] {
        let cfg = MlpConfig { prompts: 4, hidden: 33, responses: 10, first_bias, scalar_head, depth };
        let reference = MlpRef::from_params(&cfg, mlp_params(&cfg, 11).unwrap());
        let prompts = vec![0u32, 1, 2, 3, 0, 1, 2, 3, 2];
        let responses = vec![0u32, 1, 2, 3, 4, 6, 7, 5, 9];
        let b = prompts.len();
        let mlp = Mlp::new(&gpu, &cfg, b, &reference.params).unwrap();
        mlp.set_batch(&gpu, &prompts, &responses).unwrap();
        let dlogps = randn(5, b, 1.0);
        let dscalar = randn(6, b, 1.0);
        mlp.dlogps.write_f32(&gpu, &dlogps);
        if let Some(ds) = &mlp.dscalar {
            ds.write_f32(&gpu, &dscalar);
        }
        pollster::block_on(run_step(&gpu, &[&mlp.forward, &mlp.backward], None)).unwrap();
        let acts = reference.forward(&prompts, &responses);
        assert_close("mlp logps", &mlp.logps.to_vec(&gpu).unwrap(), &acts.logps, 1e-5, 1e-5);
        if let Some(s) = &mlp.scalar {
            assert_close("mlp scalar", &s.to_vec(&gpu).unwrap(), acts.scalar.as_ref().unwrap(), 1e-5, 1e-4);
        }
        let want = reference.backward(&acts, &prompts, &responses, &dlogps, scalar_head.then_some(&dscalar[..]));
        let got = pollster::block_on(mlp.grads.download_contiguous(&gpu)).unwrap();
        assert_close("mlp grads", &got, &want, 1e-5, 1e-4);
        // The full log-softmax rows agree with the reference probabilities for each prompt.
        let lp = mlp.log_probs.to_vec(&gpu).unwrap();
        let probs = reference.probs();
        for (row, &p) in prompts.iter().enumerate().take(4) {
            let got: Vec<f32> = lp[row * 10..row * 10 + 10].iter().map(|x| x.exp()).collect();
            assert_close("mlp probs", &got, &probs[p as usize * 10..p as usize * 10 + 10], 1e-6, 1e-4);
        }
    }
}

fn sft_batch(cfg: &GptConfig, b: usize, t: usize, seed: u64) -> dpo3d::data::SftBatch {
    let toks = tokens(seed, b * (t + 1), cfg.vocab_size);
    let mut tokens_ = Vec::new();
    let mut targets = Vec::new();
    for r in 0..b {
        tokens_.extend_from_slice(&toks[r * (t + 1)..r * (t + 1) + t]);
        targets.extend_from_slice(&toks[r * (t + 1) + 1..(r + 1) * (t + 1)]);
    }
    let mask: Vec<f32> = (0..b * t).map(|i| if i % t >= 2 { 1.0 } else { 0.0 }).collect();
    dpo3d::data::SftBatch { b, t, tokens: tokens_, targets, mask }
}

#[test]
fn should_match_reference_sft_adamw_steps() {
    let gpu = gpu();
    let cfg = tiny_gpt(false);
    let (b, t) = (2, 6);
    let opt = OptimConfig { lr: 1e-2, weight_decay: 0.1, grad_clip: 0.5, ..Default::default() };
    let mut reference = GptRef::from_params(&cfg, gpt_params(&cfg, 3).unwrap());
    let mut trainer = SftTrainer::new(&gpu, &cfg, &reference.params, b, t, &opt).unwrap();
    let n = reference.params.len();
    let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
    let mut state = ref_adamw::StepState::default();
    for step in 1..=4u32 {
        let batch = sft_batch(&cfg, b, t, 100 + step as u64);
        let got = pollster::block_on(trainer.step(&gpu, &batch)).unwrap();
        let (loss, grads) = reference.sft_loss_and_grads(&batch.tokens, &batch.targets, &batch.mask, b, t);
        let norm = ref_adamw::grad_norm(&grads);
        assert!((got.loss - loss).abs() < 1e-4, "step {step}: loss {} vs reference {loss}", got.loss);
        assert!(
            (got.grad_norm - norm).abs() < 1e-4 * norm.max(1.0),
            "step {step}: grad norm {} vs {norm}",
            got.grad_norm
        );
        assert!(ref_adamw::adamw_step(
            &mut reference.params,
            &grads,
            &mut m,
            &mut v,
            &mut state,
            opt.lr,
            opt.beta1,
            opt.beta2,
            opt.eps,
            opt.weight_decay,
            opt.grad_clip,
        ));
    }
    let got = pollster::block_on(trainer.gpt.download_params(&gpu)).unwrap();
    assert_close("params after 4 AdamW steps", &got, &reference.params, 2e-5, 1e-3);
}

#[test]
fn should_repeat_bit_identical_training_for_the_same_seed() {
    let gpu = gpu();
    let cfg = tiny_gpt(false);
    let run = || {
        let params = gpt_params(&cfg, 42).unwrap();
        let mut tr = SftTrainer::new(&gpu, &cfg, &params, 2, 6, &OptimConfig::default()).unwrap();
        let losses: Vec<u32> = (0..5)
            .map(|s| pollster::block_on(tr.step(&gpu, &sft_batch(&cfg, 2, 6, s))).unwrap().loss.to_bits())
            .collect();
        (
            losses,
            pollster::block_on(tr.gpt.download_params(&gpu)).unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        )
    };
    let (a, pa) = run();
    let (b, pb) = run();
    assert_eq!(a, b, "loss sequences differ between two runs with the same seed");
    assert!(pa == pb, "parameters differ between two runs with the same seed");
}

#[test]
fn should_record_a_step_as_one_submit_with_counted_dispatches() {
    let gpu = gpu();
    let cfg = GptConfig { vocab_size: 13, context: 8, layers: 3, heads: 2, width: 16, scalar_head: false };
    let params = gpt_params(&cfg, 1).unwrap();
    let tr = SftTrainer::new(&gpu, &cfg, &params, 2, 8, &OptimConfig::default()).unwrap();
    // Dispatches are all prebuilt: forward + loss + backward + (grad norm 2 + update 1).
    let n = tr.dispatches_per_step();
    assert_eq!(n, tr.gpt.forward.len() + 1 + tr.gpt.backward.len() + 3);
    // Each transformer block (llm.c's gpt2_forward / gpt2_backward), counted from the block's structure:
    // forward: ln_1 (fused with the previous block's residual add), c_attn, attention, attn.c_proj, residual + ln_2
    //   (fused), c_fc (GELU in its epilogue), mlp.c_proj = 6 + attention's.
    // backward (the residual adds' gradients live in one buffer, no dispatch): mlp.c_proj (dinp with GELU's backward
    //   in its epilogue, dweight, dbias: 3), c_fc (3), ln_2 (dinp, params: 2), attn.c_proj (3), attention, c_attn (3),
    //   ln_1 (2) = 16 + attention's.
    // Attention is 3 + 3 dispatches separately (scores, softmax, values; datt, softmax backward, dqkv) or 1 + 2 fused,
    // whichever the tuner picked on this adapter at this shape (the same choice the model got: it is cached).
    let (b, t, c, nh) = (2, 8, cfg.width, cfg.heads);
    let z = |n| Tensor::zeros(&gpu, "z", n).unwrap();
    let (qkv, out, tt) = (z(b * t * 3 * c), z(b * t * c), b * nh * t * t);
    let (pre, att, datt) = (z(tt), z(tt), z(tt));
    let attn_fwd = attention::attention_forward(&gpu, &out, &pre, &att, &qkv, b, t, c, nh).len();
    let attn_bwd = attention::attention_backward(&gpu, &qkv, &pre, &datt, &out, &qkv, &att, b, t, c, nh).len();
    assert!([(3, 3), (1, 2)].contains(&(attn_fwd, attn_bwd)), "attention: {attn_fwd} + {attn_bwd} dispatches");
    let per_layer_fwd = 6 + attn_fwd;
    let per_layer_bwd = 16 + attn_bwd;
    let cfg1 = GptConfig { layers: 1, ..cfg.clone() };
    let tr1 = SftTrainer::new(&gpu, &cfg1, &gpt_params(&cfg1, 1).unwrap(), 2, 8, &OptimConfig::default()).unwrap();
    assert_eq!(tr.gpt.forward.len() - tr1.gpt.forward.len(), 2 * per_layer_fwd, "forward dispatches per layer");
    assert_eq!(tr.gpt.backward.len() - tr1.gpt.backward.len(), 2 * per_layer_bwd, "backward dispatches per layer");
    assert_eq!(n - tr1.dispatches_per_step(), 2 * (per_layer_fwd + per_layer_bwd));
}

#[test]
fn should_reject_impossible_configs_with_clear_errors() {
    let gpu = gpu();
    let bad = GptConfig { vocab_size: 13, context: 8, layers: 1, heads: 3, width: 16, scalar_head: false };
    let e = Gpt::new(&gpu, &bad, 1, 8, &[]).err().expect("heads not dividing width must fail").to_string();
    assert!(e.contains("heads (3) must divide width (16)"), "{e}");
    let cfg = GptConfig { heads: 2, ..bad };
    let params = gpt_params(&cfg, 1).unwrap();
    let e = Gpt::new(&gpu, &cfg, 1, 9, &params).err().expect("T beyond context must fail").to_string();
    assert!(e.contains("context"), "{e}");
    // A buffer over the device's binding limit is refused before anything is allocated.
    let e = Tensor::zeros(&gpu, "huge", (gpu.limits.max_storage_buffer_binding_size as usize) / 4 + 1)
        .expect_err("too big")
        .to_string();
    assert!(e.contains("huge"), "{e}");
    let gpt = Gpt::new(&gpu, &cfg, 1, 8, &params).unwrap();
    let e = gpt.set_batch(&gpu, &[99; 8], &[0; 8]).expect_err("token out of vocab").to_string();
    assert!(e.contains("99"), "{e}");
}
