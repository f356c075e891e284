//! The library under the `dpo3d` command line: `data::Batcher` (seeded per-epoch shuffles, drop or top-up, resumable
//! state), TRL's truncation, the LR schedules (against transformers' formulas, evaluated by hand), gradient
//! accumulation (k micro-batches = one batch k times larger, on the GPU) and `TrainerState` (a run saved and
//! restored continues bit-for-bit).

mod common;

use dpo3d::data::{
    collate_preferences, collate_sft, truncate_pair, truncate_sft, Batcher, LastBatch, PreferencePair, SftExample,
};
use dpo3d::model::{Gpt, GptConfig};
use dpo3d::objectives::PreferenceLoss;
use dpo3d::rng::Rng;
use dpo3d::train::sft::SftTrainer;
use dpo3d::train::state::TrainerState;
use dpo3d::train::{accumulation_config, LrSchedule, LrSchedulerType, OptimConfig, PreferenceTrainer, ReferenceMode};

#[test]
fn batcher_visits_every_row_once_per_epoch_in_a_new_order() {
    let mut b = Batcher::new(10, 3, 5, true, LastBatch::TopUp).unwrap();
    assert_eq!(b.batches_per_epoch(), 4);
    let mut epochs = Vec::new();
    for _ in 0..2 {
        let idx: Vec<usize> = (0..4).flat_map(|_| b.next_indices()).collect();
        assert_eq!(idx.len(), 12);
        let mut first10 = idx[..10].to_vec();
        first10.sort_unstable();
        assert_eq!(first10, (0..10).collect::<Vec<_>>(), "each row once per epoch");
        assert_eq!(idx[10..], idx[..2], "the short last batch is topped up from the epoch's start");
        epochs.push(idx);
    }
    assert_ne!(epochs[0], epochs[1], "reshuffled each epoch");
    let mut d = Batcher::new(10, 3, 5, true, LastBatch::Drop).unwrap();
    assert_eq!(d.batches_per_epoch(), 3);
    let idx: Vec<usize> = (0..3).flat_map(|_| d.next_indices()).collect();
    assert_eq!(idx, epochs[0][..9], "same seed, same order");
    assert!(Batcher::new(2, 3, 0, true, LastBatch::Drop).is_err());
    let mut plain = Batcher::new(4, 2, 9, false, LastBatch::Drop).unwrap();
    assert_eq!([plain.next_indices(), plain.next_indices()].concat(), vec![0, 1, 2, 3]);
}

#[test]
fn batcher_state_continues_the_same_sequence() {
    let mut a = Batcher::new(7, 2, 11, true, LastBatch::TopUp).unwrap();
    let all: Vec<Vec<usize>> = (0..13).map(|_| a.next_indices()).collect();
    let mut b = Batcher::new(7, 2, 11, true, LastBatch::TopUp).unwrap();
    for _ in 0..6 {
        b.next_indices();
    }
    let saved = b.state();
    let mut c = Batcher::new(7, 2, 11, true, LastBatch::TopUp).unwrap();
    c.set_state(saved);
    let rest: Vec<Vec<usize>> = (6..13).map(|_| c.next_indices()).collect();
    assert_eq!(rest, all[6..]);
}

#[test]
fn truncation_keeps_the_prompt_end_and_the_response_start() {
    let mut p = PreferencePair { prompt: (0..10).collect(), chosen: vec![20, 21, 22], rejected: vec![30, 31, 32, 33] };
    assert!(truncate_pair(&mut p, 8, Some(5)));
    assert_eq!(p.prompt, vec![5, 6, 7, 8, 9]);
    assert_eq!(p.chosen, vec![20, 21, 22]);
    assert_eq!(p.rejected, vec![30, 31, 32]);
    let mut q = p.clone();
    assert!(!truncate_pair(&mut q, 8, None), "a pair that fits is left alone");
    let mut e = SftExample { prompt: vec![1, 2, 3], completion: vec![4, 5, 6, 7] };
    assert!(truncate_sft(&mut e, 5));
    assert_eq!((e.prompt, e.completion), (vec![1, 2, 3], vec![4, 5]));
}

/// Expected values are transformers' lr_lambda formulas evaluated by hand (warmup 2, 10 steps).
#[test]
fn lr_schedules_follow_transformers() {
    let s = |kind| LrSchedule { kind, base_lr: 1.0, warmup_steps: 2, total_steps: 10 };
    let f = |kind, step| s(kind).factor(step);
    assert_eq!(f(LrSchedulerType::Constant, 0), 1.0);
    assert_eq!(f(LrSchedulerType::ConstantWithWarmup, 1), 0.5);
    assert_eq!(f(LrSchedulerType::ConstantWithWarmup, 7), 1.0);
    for kind in [LrSchedulerType::Linear, LrSchedulerType::Cosine] {
        assert_eq!(f(kind, 0), 0.0);
        assert_eq!(f(kind, 1), 0.5);
        assert_eq!(f(kind, 2), 1.0);
        assert_eq!(f(kind, 10), 0.0);
    }
    assert_eq!(f(LrSchedulerType::Linear, 6), 0.5); // (10 - 6) / (10 - 2)
    assert!((f(LrSchedulerType::Cosine, 6) - 0.5).abs() < 1e-12); // 0.5 (1 + cos(pi / 2))
    assert!((f(LrSchedulerType::Cosine, 4) - 0.853_553_390_593_273_8).abs() < 1e-12); // 0.5 (1 + cos(pi / 4))
    assert_eq!(LrSchedule::warmup_from(0, 0.1, 25), 3);
    assert_eq!(LrSchedule::warmup_from(4, 0.1, 25), 4);
    assert!("cosine_with_restarts".parse::<LrSchedulerType>().is_err());
}

fn tiny() -> GptConfig {
    GptConfig { vocab_size: 37, context: 16, layers: 2, heads: 2, width: 32, scalar_head: false }
}

/// Rows of equal shape (prompt 3, completion 5), so a batch's mean loss is the mean of its halves' means.
fn rows(n: usize, seed: u64) -> Vec<SftExample> {
    let mut r = Rng::new(seed);
    (0..n)
        .map(|_| SftExample {
            prompt: (0..3).map(|_| r.below(37)).collect(),
            completion: (0..5).map(|_| r.below(37)).collect(),
        })
        .collect()
}

/// Two micro-batches of 2 accumulated = one batch of 4, over `steps` AdamW steps; returns both trainers' weights.
/// With `check`, also asserts that each step's loss and gradient norm agree.
fn accumulate_vs_big(
    opt: &OptimConfig,
    small_opt: &OptimConfig,
    steps: usize,
    check: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let gpu = common::gpu();
    let cfg = tiny();
    let params = dpo3d::model::init::gpt_params(&cfg, 3).unwrap();
    let data = rows(12, 8);
    let (t, pad) = (8, 0);
    let mut big = SftTrainer::new(&gpu, &cfg, &params, 4, t, opt).unwrap();
    let mut small = SftTrainer::new(&gpu, &cfg, &params, 2, t, small_opt).unwrap();
    for step in 0..steps {
        let batch = &data[4 * step..4 * step + 4];
        let mb = pollster::block_on(big.step(&gpu, &collate_sft(batch, t, pad).unwrap())).unwrap();
        small.set_batch(&gpu, &collate_sft(&batch[..2], t, pad).unwrap()).unwrap();
        let (l1, n1) = pollster::block_on(small.micro_step(&gpu, true, false)).unwrap();
        small.set_batch(&gpu, &collate_sft(&batch[2..], t, pad).unwrap()).unwrap();
        let (l2, n2) = pollster::block_on(small.micro_step(&gpu, false, true)).unwrap();
        assert!(n1.is_none());
        if !check {
            continue;
        }
        common::assert_close("loss", &[(l1 + l2) / 2.0], &[mb.loss], 1e-5, 1e-5);
        common::assert_close("grad norm", &[n2.unwrap() / 2.0], &[mb.grad_norm], 1e-5, 1e-4);
    }
    let a = pollster::block_on(big.gpt.download_params(&gpu)).unwrap();
    let b = pollster::block_on(small.gpt.download_params(&gpu)).unwrap();
    (params, a, b)
}

/// A large eps makes Adam's update depend on the gradient's scale (summing the micro-batches instead of averaging
/// them would show), first without clipping, then with a threshold the mean gradient stays under but the sum of
/// two would exceed. Each case also checks that the unscaled optimizer config would differ, so the test can fail.
#[test]
fn gradient_accumulation_equals_one_larger_batch() {
    let base = OptimConfig { lr: 1e-2, eps: 1e-2, grad_clip: 0.0, ..Default::default() };
    let probe = {
        let gpu = common::gpu();
        let cfg = tiny();
        let mut tr =
            SftTrainer::new(&gpu, &cfg, &dpo3d::model::init::gpt_params(&cfg, 3).unwrap(), 4, 8, &base).unwrap();
        pollster::block_on(tr.step(&gpu, &collate_sft(&rows(12, 8)[..4], 8, 0).unwrap())).unwrap().grad_norm
    };
    for (opt, steps) in [(base.clone(), 3), (OptimConfig { grad_clip: 1.5 * probe, ..base.clone() }, 1)] {
        let (init, a, b) = accumulate_vs_big(&opt, &accumulation_config(&opt, 2).unwrap(), steps, true);
        assert!(a.iter().zip(&init).any(|(x, y)| (x - y).abs() > 1e-3), "training moved the weights");
        common::assert_close("params", &b, &a, 2e-6, 1e-4);
        let (_, a, unscaled) = accumulate_vs_big(&opt, &opt, steps, false);
        let worst = a.iter().zip(&unscaled).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(worst > 1e-4, "summed gradients without the scaled config should differ (max diff {worst})");
    }
}

/// Four steps straight = two steps, TrainerState saved, a fresh trainer restored from it, two more steps: the
/// same weights to the bit.
#[test]
fn trainer_state_restores_a_run_bit_for_bit() {
    let gpu = common::gpu();
    let cfg = tiny();
    let params = dpo3d::model::init::gpt_params(&cfg, 4).unwrap();
    let opt = OptimConfig { lr: 3e-3, ..Default::default() };
    let data = rows(40, 9);
    let t = 8;
    let batches = |b: &mut Batcher| collate_sft(&b.next_rows(&data), t, 0).unwrap();
    let mut straight = SftTrainer::new(&gpu, &cfg, &params, 4, t, &opt).unwrap();
    let mut order = Batcher::new(data.len(), 4, 1, true, LastBatch::Drop).unwrap();
    for _ in 0..4 {
        pollster::block_on(straight.step(&gpu, &batches(&mut order))).unwrap();
    }
    let want = pollster::block_on(straight.gpt.download_params(&gpu)).unwrap();

    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("trainer_state_roundtrip");
    std::fs::create_dir_all(&dir).unwrap();
    let mut first = SftTrainer::new(&gpu, &cfg, &params, 4, t, &opt).unwrap();
    let mut order = Batcher::new(data.len(), 4, 1, true, LastBatch::Drop).unwrap();
    for _ in 0..2 {
        pollster::block_on(first.step(&gpu, &batches(&mut order))).unwrap();
    }
    let state = TrainerState {
        global_step: 2,
        epoch: order.epoch_progress(),
        batcher: order.state(),
        rng: None,
        optimizer_step: first.opt.step,
        gradient_accumulation_steps: 1,
        seed: 1,
        value_optimizer_step: None,
    };
    pollster::block_on(state.save(&gpu, &first.opt, &dir)).unwrap();
    let mid = pollster::block_on(first.gpt.download_params(&gpu)).unwrap();
    drop(first);

    let loaded = TrainerState::load(&dir).unwrap();
    assert_eq!(loaded, state);
    let mut second = SftTrainer::new(&gpu, &cfg, &mid, 4, t, &opt).unwrap();
    loaded.restore_optimizer(&gpu, &mut second.opt, &dir).unwrap();
    let mut order = Batcher::new(data.len(), 4, 1, true, LastBatch::Drop).unwrap();
    order.set_state(loaded.batcher);
    for _ in 0..2 {
        pollster::block_on(second.step(&gpu, &batches(&mut order))).unwrap();
    }
    let got = pollster::block_on(second.gpt.download_params(&gpu)).unwrap();
    assert!(got == want, "restored run differs from the straight one");
}

/// `set_batch` uploads policy, reference and mask together, and refuses a batch of another shape.
#[test]
fn preference_set_batch_fills_policy_reference_and_mask() {
    let gpu = common::gpu();
    let cfg = tiny();
    let params = dpo3d::model::init::gpt_params(&cfg, 5).unwrap();
    let (b, t) = (2, 8);
    let policy = Gpt::new(&gpu, &cfg, 2 * b, t, &params).unwrap();
    let reference = Gpt::new(&gpu, &cfg, 2 * b, t, &params).unwrap();
    let loss = PreferenceLoss::Dpo { beta: 0.1 };
    let tr =
        PreferenceTrainer::new(&gpu, policy, Some(reference), &loss, &OptimConfig::default(), ReferenceMode::EveryStep)
            .unwrap();
    let pairs = vec![
        PreferencePair { prompt: vec![1, 2], chosen: vec![3, 4], rejected: vec![5] },
        PreferencePair { prompt: vec![6], chosen: vec![7, 8, 9], rejected: vec![10, 11] },
    ];
    let batch = collate_preferences(&pairs, t, 0).unwrap();
    tr.set_batch(&gpu, &batch).unwrap();
    let toks = |g: &Gpt| g.tokens.to_vec_u32(&gpu).unwrap();
    assert_eq!(toks(&tr.policy), batch.tokens);
    assert_eq!(toks(tr.reference.as_ref().unwrap()), batch.tokens);
    // Identical policy and reference on the same batch: every implicit reward is exactly 0.
    let m = pollster::block_on(tr.evaluate(&gpu)).unwrap();
    assert_eq!(m.get("rewards/chosen"), 0.0);
    assert!(m.get("logps/chosen") < 0.0, "the mask selects response tokens: {}", m.get("logps/chosen"));
    let wrong = collate_preferences(&pairs[..1], t, 0).unwrap();
    assert!(tr.set_batch(&gpu, &wrong).is_err());
}
