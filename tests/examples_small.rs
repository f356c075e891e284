//! The examples' workflows at small budgets (the whole file runs in well under a minute on lavapipe): SFT on the toy
//! corpus learns, a trained GPT survives a checkpoint round trip through the GPU bit for bit, DPO after a short SFT
//! raises the reward margins and accuracies, and `Gpt::full_logprobs` (what `examples/logprobs.rs` prints) gives
//! normalised rows equal to the reference GPT's log-softmax.

mod common;
use common::*;
use dpo3d::checkpoint::{load_gpt, save_gpt};
use dpo3d::data::{collate_preferences, collate_sft, toy_corpus, toy_preferences, PreferencePair, SftExample};
use dpo3d::model::init::gpt_params;
use dpo3d::model::{Gpt, GptConfig};
use dpo3d::objectives::PreferenceLoss;
use dpo3d::reference::{gpt::GptRef, logprobs as ref_logprobs};
use dpo3d::train::{sft::SftTrainer, OptimConfig, PreferenceTrainer, ReferenceMode};
use dpo3d::Gpu;

const PAD: u32 = 0;

/// Byte-level (V = 256) and small enough that a step takes a few milliseconds on lavapipe.
fn tiny_cfg() -> GptConfig {
    GptConfig { vocab_size: 256, context: dpo3d::data::TOY_MAX_LEN, layers: 1, heads: 2, width: 32, scalar_head: false }
}

/// The T that fits every example (shorter than the context, so the test runs faster).
fn fit_t(lens: impl Iterator<Item = usize>) -> usize {
    lens.max().unwrap()
}

/// Batch `step` of a fixed list, cycling through it in order.
fn cycle<T: Clone>(items: &[T], b: usize, step: usize) -> Vec<T> {
    (0..b).map(|i| items[(step * b + i) % items.len()].clone()).collect()
}

/// A tiny GPT trained `steps` SFT steps on `examples`; returns the trainer and the loss of every step.
fn sft(
    gpu: &Gpu,
    cfg: &GptConfig,
    examples: &[SftExample],
    b: usize,
    t: usize,
    steps: usize,
    lr: f32,
) -> (SftTrainer, Vec<f32>) {
    let params = gpt_params(cfg, 1).unwrap();
    let opt = OptimConfig { lr, ..Default::default() };
    let mut tr = SftTrainer::new(gpu, cfg, &params, b, t, &opt).unwrap();
    let losses = (0..steps)
        .map(|s| {
            let batch = collate_sft(&cycle(examples, b, s), t, PAD).unwrap();
            pollster::block_on(tr.step(gpu, &batch)).unwrap().loss
        })
        .collect();
    (tr, losses)
}

fn mean(x: &[f32]) -> f32 {
    x.iter().sum::<f32>() / x.len() as f32
}

#[test]
fn should_lower_the_sft_loss_on_the_toy_corpus() {
    let gpu = gpu();
    let cfg = tiny_cfg();
    let examples = toy_corpus(512, 7);
    let t = fit_t(examples.iter().map(|e| e.len()));
    let (_, losses) = sft(&gpu, &cfg, &examples, 8, t, 30, 1e-2);
    assert!(losses.iter().all(|l| l.is_finite()), "non-finite SFT loss: {losses:?}");
    let (first, last) = (losses[0], mean(&losses[losses.len() - 5..]));
    // An untrained GPT-2 init predicts nearly uniformly over 256 bytes: ln 256 = 5.55.
    assert!((first - 256f32.ln()).abs() < 0.3, "initial loss {first} should be close to ln 256");
    assert!(last < 0.7 * first, "SFT loss went from {first} to {last} (mean of the last 5 steps): expected below 0.7x");
}

#[test]
fn should_give_identical_logps_after_a_checkpoint_round_trip() {
    let gpu = gpu();
    let cfg = tiny_cfg();
    let examples = toy_corpus(64, 3);
    let t = fit_t(examples.iter().map(|e| e.len()));
    let (tr, _) = sft(&gpu, &cfg, &examples, 4, t, 5, 1e-2);
    let params = pollster::block_on(tr.gpt.download_params(&gpu)).unwrap();

    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("examples_small-roundtrip");
    let _ = std::fs::remove_dir_all(&dir);
    save_gpt(&dir, &cfg, &params).unwrap();
    let (cfg2, params2) = load_gpt(&dir).unwrap();
    assert_eq!(cfg2, cfg);
    assert!(params.iter().zip(&params2).all(|(a, b)| a.to_bits() == b.to_bits()), "parameters changed on disk");

    // The same ids through the trained model and through a fresh model built from the checkpoint.
    let batch = collate_sft(&examples[..4], t, PAD).unwrap();
    let logps = |gpt: &Gpt| {
        gpt.set_batch(&gpu, &batch.tokens, &batch.targets).unwrap();
        pollster::block_on(dpo3d::train::run_step(&gpu, &[&gpt.forward], None)).unwrap();
        gpt.logps.to_vec(&gpu).unwrap()
    };
    let before = logps(&tr.gpt);
    let loaded = Gpt::new(&gpu, &cfg2, 4, t, &params2).unwrap();
    let after = logps(&loaded);
    assert!(before.iter().all(|x| x.is_finite()));
    assert!(
        before.iter().zip(&after).all(|(a, b)| a.to_bits() == b.to_bits()),
        "logps differ after save_gpt/load_gpt: {:?} vs {:?}",
        &before[..4],
        &after[..4]
    );
}

#[test]
fn should_raise_dpo_margins_and_accuracies_after_sft() {
    let gpu = gpu();
    let cfg = tiny_cfg();
    // A fixed set of 16 pairs, revisited every 4 steps (full-batch-like, as the paper's toy): in 20 SFT steps the tiny
    // model learns some of the format but not the arithmetic, so on ever-new pairs DPO's margins are noise at this
    // budget; on pairs it revisits they rise steadily.
    let pairs = toy_preferences(16, 11);
    let t = fit_t(pairs.iter().map(PreferencePair::max_len));
    // pi0: a short SFT on the chosen responses.
    let chosen: Vec<SftExample> =
        pairs.iter().map(|p| SftExample { prompt: p.prompt.clone(), completion: p.chosen.clone() }).collect();
    let n = 4; // pairs per batch: 2N = 8 rows
    let (sft_tr, _) = sft(&gpu, &cfg, &chosen, 2 * n, t, 20, 1e-2);
    let pi0 = pollster::block_on(sft_tr.gpt.download_params(&gpu)).unwrap();

    let policy = Gpt::new(&gpu, &cfg, 2 * n, t, &pi0).unwrap();
    let reference = Gpt::new(&gpu, &cfg, 2 * n, t, &pi0).unwrap();
    let loss = PreferenceLoss::Dpo { beta: 0.1 };
    let opt = OptimConfig { lr: 1e-3, ..Default::default() };
    let mut tr = PreferenceTrainer::new(&gpu, policy, Some(reference), &loss, &opt, ReferenceMode::EveryStep).unwrap();
    let (mut margins, mut accs) = (Vec::new(), Vec::new());
    for s in 0..24 {
        let batch = collate_preferences(&cycle(&pairs, n, s), t, PAD).unwrap();
        tr.policy.set_batch(&gpu, &batch.tokens, &batch.targets).unwrap();
        tr.reference.as_ref().unwrap().set_batch(&gpu, &batch.tokens, &batch.targets).unwrap();
        tr.objective.set_mask(&gpu, &batch.mask).unwrap();
        let (m, norm) = pollster::block_on(tr.step(&gpu)).unwrap();
        for (name, v) in &m.values {
            assert!(v.is_finite(), "step {s}: {name} = {v}");
        }
        assert!(norm.is_finite() && norm > 0.0, "step {s}: grad norm {norm}");
        if s == 0 {
            // The policy starts at the reference: every log-ratio is zero and the loss is ln 2.
            assert!(m.get("rewards/margins").abs() < 1e-5, "first margin {}", m.get("rewards/margins"));
            assert!((m.get("loss") - 2f32.ln()).abs() < 1e-5, "first loss {}", m.get("loss"));
        }
        margins.push(m.get("rewards/margins"));
        accs.push(m.get("rewards/accuracies"));
    }
    let (m0, m1) = (mean(&margins[..5]), mean(&margins[margins.len() - 5..]));
    let (a0, a1) = (mean(&accs[..5]), mean(&accs[accs.len() - 5..]));
    assert!(m1 > m0 + 0.05, "rewards/margins did not rise: first 5 steps {m0}, last 5 {m1}; all {margins:?}");
    assert!(a1 > a0 && a1 >= 0.75, "rewards/accuracies did not rise: first 5 steps {a0}, last 5 {a1}; all {accs:?}");
}

#[test]
fn should_return_full_logprob_rows_matching_the_reference_log_softmax() {
    let gpu = gpu();
    let cfg = GptConfig { context: 16, ..tiny_cfg() };
    let reference = GptRef::from_params(&cfg, gpt_params(&cfg, 5).unwrap());
    // Enlarge the embeddings so the rows are far from uniform and a wrong row would show.
    let mut reference = reference;
    for x in reference.tensor_mut("transformer.wte.weight") {
        *x *= 50.0;
    }
    let ids: Vec<u32> = "the cat sat".bytes().map(u32::from).collect();
    let t = ids.len();
    let gpt = Gpt::new(&gpu, &cfg, 1, t, &reference.params).unwrap();
    let got = pollster::block_on(gpt.full_logprobs(&gpu, &ids)).unwrap();
    let v = cfg.vocab_size;
    assert_eq!(got.len(), t * v);
    for (i, row) in got.chunks(v).enumerate() {
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
        assert!(lse.abs() < 1e-5, "row {i}: logsumexp {lse}, expected 0");
    }
    let targets = vec![0u32; t];
    let acts = reference.forward(&ids, &targets, 1, t);
    let mut want = vec![0f32; t * v];
    ref_logprobs::log_softmax(&mut want, &acts.logits, t, v);
    let spread = want.iter().cloned().fold(0f32, |m, x| m.max(-x));
    assert!(spread > 1.0, "test rows are too flat to tell anything apart (max -logp {spread})");
    assert_close("full logprobs", &got, &want, 1e-4, 1e-4);
}

#[test]
fn should_complete_greedily_like_the_reference_argmax() {
    let gpu = gpu();
    let cfg = GptConfig { context: 16, ..tiny_cfg() };
    let mut reference = GptRef::from_params(&cfg, gpt_params(&cfg, 9).unwrap());
    // Sharpen the logits so that float rounding cannot flip an argmax (checked below).
    for x in reference.tensor_mut("transformer.wte.weight") {
        *x *= 50.0;
    }
    let prompt: Vec<u32> = "where".bytes().map(u32::from).collect();
    let t = 12;
    let gpt = Gpt::new(&gpu, &cfg, 1, t, &reference.params).unwrap();
    let got = pollster::block_on(gpt.greedy_completion(&gpu, &prompt, None)).unwrap();

    // Reference: the CPU GPT's argmax, one position at a time (checking the GPU, not a fallback).
    let v = cfg.vocab_size;
    let mut seq = prompt.clone();
    while seq.len() < t {
        let n = seq.len();
        let acts = reference.forward(&seq, &vec![0; n], 1, n);
        let row = &acts.logits[(n - 1) * v..n * v];
        let mut order: Vec<usize> = (0..v).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        assert!(row[order[0]] - row[order[1]] > 1e-3, "near-tie at position {n}: the test needs sharper logits");
        seq.push(order[0] as u32);
    }
    assert_eq!(got, seq[prompt.len()..].to_vec(), "greedy GPU completion differs from the reference argmax");

    // A stop token ends the completion (and is included).
    let stop = seq[prompt.len() + 2];
    let short = pollster::block_on(gpt.greedy_completion(&gpu, &prompt, Some(stop))).unwrap();
    let end = seq[prompt.len()..].iter().position(|&x| x == stop).unwrap();
    assert_eq!(short, seq[prompt.len()..prompt.len() + end + 1].to_vec());
}
