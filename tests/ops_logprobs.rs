//! GPU log-probability kernels (target log-probs, their backward, log-softmax, SFT loss, per-sequence sums) against
//! the CPU reference on odd shapes; finite-difference checks of the reference gradients (where d logps / d logits and
//! d loss / d logps are first defined); and the log-space case of a target 200 nats below the row max.

mod common;
use common::*;
use dpo3d::gpu::{Plan, Tensor};
use dpo3d::ops::logprobs as ops;
use dpo3d::reference::logprobs as cpu;
use dpo3d::rng::Rng;

const NS: &[usize] = &[1, 3, 37];
const VS: &[usize] = &[2, 10, 257, 1000];

fn targets(seed: u64, n: usize, v: usize) -> Vec<u32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.below(v as u32)).collect()
}

/// A 0/1 mask with about `keep` of the positions set.
fn mask(seed: u64, n: usize, keep: f32) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| if r.uniform() < keep { 1.0 } else { 0.0 }).collect()
}

#[test]
fn should_match_reference_logprobs_forward_and_backward() {
    let gpu = gpu();
    let forms = [ops::RowForm::Workgroup, ops::RowForm::Invocation];
    let backward_forms = [ops::BackwardForm::Rows, ops::BackwardForm::Elements];
    for (form, bform) in forms.iter().flat_map(|&f| backward_forms.map(|b| (f, b))) {
        for &n in NS {
            for &v in VS {
                let logits = randn(1, n * v, 3.0);
                let tg = targets(2, n, v);
                let dlogps = randn(3, n, 1.0);
                let tlogits = Tensor::from_f32(&gpu, "logits", &logits).unwrap();
                let ttg = Tensor::from_u32(&gpu, "targets", &tg).unwrap();
                let (tlogps, tlse) = (Tensor::zeros(&gpu, "logps", n).unwrap(), Tensor::zeros(&gpu, "lse", n).unwrap());
                let tdlogps = Tensor::from_f32(&gpu, "dlogps", &dlogps).unwrap();
                let mut plan = Plan::new();
                plan.push(ops::logprobs_forward_with(&gpu, form, &tlogps, &tlse, &tlogits, &ttg, n, v));
                // In place: every logit must be replaced by its gradient (a logit left over fails the comparison).
                plan.push(ops::logprobs_backward_with(&gpu, bform, &tlogits, &tdlogps, &tlse, &ttg, n, v));
                plan.submit(&gpu);
                let (mut logps, mut lse, mut dlogits) = (vec![0.0; n], vec![0.0; n], vec![0.0; n * v]);
                cpu::logprobs_forward(&mut logps, &mut lse, &logits, &tg, n, v);
                cpu::logprobs_backward(&mut dlogits, &dlogps, &logits, &lse, &tg, n, v);
                let what = format!("{form:?} {bform:?} N={n} V={v}");
                assert_close(&format!("{what} lse"), &tlse.to_vec(&gpu).unwrap(), &lse, 1e-5, 1e-5);
                assert_close(&format!("{what} logps"), &tlogps.to_vec(&gpu).unwrap(), &logps, 1e-5, 1e-5);
                assert_close(&format!("{what} dlogits"), &tlogits.to_vec(&gpu).unwrap(), &dlogits, 1e-5, 1e-5);
            }
        }
    }
}

/// More rows than one grid dimension holds (65535): the rows form folds them into (y, z), and the last row, in the
/// second z slice, must be written too (a row left alone keeps its logits, which differ from their gradient).
#[test]
fn should_fold_rows_past_one_grid_dimension_in_logprobs_backward_rows() {
    let gpu = gpu();
    let (n, v) = (65537, 3);
    let logits = randn(7, n * v, 2.0);
    let tg = targets(8, n, v);
    let dlogps = randn(9, n, 1.0);
    let (mut logps, mut lse, mut want) = (vec![0.0; n], vec![0.0; n], vec![0.0; n * v]);
    cpu::logprobs_forward(&mut logps, &mut lse, &logits, &tg, n, v);
    cpu::logprobs_backward(&mut want, &dlogps, &logits, &lse, &tg, n, v);
    let tlogits = Tensor::from_f32(&gpu, "logits", &logits).unwrap();
    let ttg = Tensor::from_u32(&gpu, "targets", &tg).unwrap();
    let tlse = Tensor::from_f32(&gpu, "lse", &lse).unwrap();
    let tdlogps = Tensor::from_f32(&gpu, "dlogps", &dlogps).unwrap();
    let mut plan = Plan::new();
    plan.push(ops::logprobs_backward_with(&gpu, ops::BackwardForm::Rows, &tlogits, &tdlogps, &tlse, &ttg, n, v));
    plan.submit(&gpu);
    assert_close("rows past 65535", &tlogits.to_vec(&gpu).unwrap(), &want, 1e-5, 1e-5);
}

#[test]
fn should_match_reference_log_softmax() {
    let gpu = gpu();
    for form in [ops::RowForm::Workgroup, ops::RowForm::Invocation] {
        for &n in NS {
            for &v in VS {
                let logits = randn(5, n * v, 3.0);
                let tlogits = Tensor::from_f32(&gpu, "logits", &logits).unwrap();
                let tout = Tensor::zeros(&gpu, "out", n * v).unwrap();
                let mut plan = Plan::new();
                plan.push(ops::log_softmax_with(&gpu, form, &tout, &tlogits, n, v));
                plan.submit(&gpu);
                let mut want = vec![0.0; n * v];
                cpu::log_softmax(&mut want, &logits, n, v);
                let got = tout.to_vec(&gpu).unwrap();
                assert_close(&format!("{form:?} N={n} V={v} log_softmax"), &got, &want, 1e-5, 1e-5);
                // each row's probabilities sum to 1
                for i in 0..n {
                    let s: f64 = got[i * v..(i + 1) * v].iter().map(|&x| (x as f64).exp()).sum();
                    assert!((s - 1.0).abs() < 1e-5, "{form:?}: row {i} of N={n} V={v} sums to {s}");
                }
            }
        }
    }
}

#[test]
fn should_keep_logprobs_finite_200_nats_below_the_max() {
    // Row 0: the target's logit sits 200 below the row max; row 1: a logit of +200 dominates and the target is an
    // ordinary one. exp(-200) underflows f32, so only a log-space computation gives logp ~ -200 instead of -inf.
    let gpu = gpu();
    let (n, v) = (2, 257);
    let mut logits = randn(6, n * v, 0.1);
    logits[17] = 200.0; // row 0 max, not the target
    logits[3] = 0.0; // row 0 target
    logits[v + 100] = 200.0; // row 1 max
    logits[v + 5] = 0.0; // row 1 target
    let tg = vec![3u32, 5u32];
    let dlogps = vec![1.0f32, -0.5];
    let tlogits = Tensor::from_f32(&gpu, "logits", &logits).unwrap();
    let ttg = Tensor::from_u32(&gpu, "targets", &tg).unwrap();
    let (tlogps, tlse) = (Tensor::zeros(&gpu, "logps", n).unwrap(), Tensor::zeros(&gpu, "lse", n).unwrap());
    let tdlogps = Tensor::from_f32(&gpu, "dlogps", &dlogps).unwrap();
    let tls = Tensor::zeros(&gpu, "log_softmax", n * v).unwrap();
    let mut plan = Plan::new();
    plan.push(ops::logprobs_forward(&gpu, &tlogps, &tlse, &tlogits, &ttg, n, v));
    plan.push(ops::log_softmax(&gpu, &tls, &tlogits, n, v));
    // Last: the backward replaces the logits by their gradient. (The tuner times it on a buffer of its own.)
    plan.push(ops::logprobs_backward(&gpu, &tlogits, &tdlogps, &tlse, &ttg, n, v));
    plan.submit(&gpu);
    let (mut logps, mut lse) = (vec![0.0; n], vec![0.0; n]);
    cpu::logprobs_forward(&mut logps, &mut lse, &logits, &tg, n, v);
    let got = tlogps.to_vec(&gpu).unwrap();
    for i in 0..n {
        assert!((got[i] + 200.0).abs() < 1e-3, "GPU logp[{i}] = {} (want ~ -200)", got[i]);
        assert!((logps[i] + 200.0).abs() < 1e-3, "reference logp[{i}] = {} (want ~ -200)", logps[i]);
    }
    assert_close("logps", &got, &logps, 1e-4, 1e-6);
    // The gradient at the target is dlogps * (1 - p) = dlogps; at the max it is -dlogps * (p ~ 1).
    let dl = tlogits.to_vec(&gpu).unwrap();
    assert!(dl.iter().all(|x| x.is_finite()));
    assert!((dl[3] - 1.0).abs() < 1e-6 && (dl[17] + 1.0).abs() < 1e-5, "row 0: {} {}", dl[3], dl[17]);
    assert!((dl[v + 5] + 0.5).abs() < 1e-6 && (dl[v + 100] - 0.5).abs() < 1e-5, "row 1: {} {}", dl[v + 5], dl[v + 100]);
    let ls = tls.to_vec(&gpu).unwrap();
    assert!(ls.iter().all(|x| x.is_finite()), "log_softmax produced a non-finite value");
    assert!((ls[3] - got[0]).abs() < 1e-4 && (ls[v + 5] - got[1]).abs() < 1e-4);
}

#[test]
fn should_match_finite_differences_logprobs_backward() {
    // L = sum_i w_i logps_i; dL/dlogits from the reference backward vs central differences (in f64 of f32 values).
    let (n, v) = (3, 7);
    let logits = randn(7, n * v, 1.5);
    let tg = targets(8, n, v);
    let w = randn(9, n, 1.0);
    let loss = |x: &[f32]| -> f64 {
        let (mut lp, mut lse) = (vec![0.0; n], vec![0.0; n]);
        cpu::logprobs_forward(&mut lp, &mut lse, x, &tg, n, v);
        lp.iter().zip(&w).map(|(&a, &b)| a as f64 * b as f64).sum()
    };
    let (mut lp, mut lse) = (vec![0.0; n], vec![0.0; n]);
    cpu::logprobs_forward(&mut lp, &mut lse, &logits, &tg, n, v);
    let mut grad = vec![0.0; n * v];
    cpu::logprobs_backward(&mut grad, &w, &logits, &lse, &tg, n, v);
    let h = 1e-2f32;
    for k in 0..n * v {
        let mut xp = logits.clone();
        xp[k] += h;
        let mut xm = logits.clone();
        xm[k] -= h;
        let fd = (loss(&xp) - loss(&xm)) / (2.0 * h as f64);
        assert!((fd - grad[k] as f64).abs() < 1e-3, "dlogits[{k}]: finite difference {fd} vs backward {}", grad[k]);
    }
}

#[test]
fn should_match_finite_differences_sft_loss() {
    let n = 11;
    let logps = randn(10, n, 2.0).iter().map(|x| -x.abs()).collect::<Vec<_>>();
    let m = mask(11, n, 0.6);
    let loss_of = |lp: &[f32]| -> f64 {
        let (mut loss, mut d) = ([0.0f32], vec![0.0; n]);
        cpu::sft_loss(&mut loss, &mut d, lp, &m, n);
        loss[0] as f64
    };
    let (mut loss, mut grad) = ([0.0f32], vec![0.0; n]);
    cpu::sft_loss(&mut loss, &mut grad, &logps, &m, n);
    let h = 1e-2f32;
    for k in 0..n {
        let mut p = logps.clone();
        p[k] += h;
        let mut q = logps.clone();
        q[k] -= h;
        let fd = (loss_of(&p) - loss_of(&q)) / (2.0 * h as f64);
        assert!((fd - grad[k] as f64).abs() < 1e-4, "dlogps[{k}]: finite difference {fd} vs {}", grad[k]);
    }
}

#[test]
fn should_match_reference_sft_loss() {
    let gpu = gpu();
    for &(n, keep) in &[(1usize, 1.0f32), (3, 0.7), (37, 0.5), (1000, 0.3), (5001, 0.9), (37, 0.0)] {
        let logps = randn(12, n, 2.0).iter().map(|x| -x.abs()).collect::<Vec<_>>();
        let m = mask(13 + n as u64, n, keep);
        let tlogps = Tensor::from_f32(&gpu, "logps", &logps).unwrap();
        let tmask = Tensor::from_f32(&gpu, "mask", &m).unwrap();
        let tloss = Tensor::from_f32(&gpu, "loss", &[7.0]).unwrap();
        let tdlogps = Tensor::from_f32(&gpu, "dlogps", &randn(14, n, 1.0)).unwrap(); // garbage: must be overwritten
        let mut plan = Plan::new();
        plan.push(ops::sft_loss(&gpu, &tloss, &tdlogps, &tlogps, &tmask, n));
        plan.submit(&gpu);
        let (mut loss, mut dlogps) = ([0.0f32], vec![0.0; n]);
        cpu::sft_loss(&mut loss, &mut dlogps, &logps, &m, n);
        let what = format!("N={n} keep={keep}");
        assert_close(&format!("{what} loss"), &tloss.to_vec(&gpu).unwrap(), &loss, 1e-6, 1e-5);
        assert_close(&format!("{what} dlogps"), &tdlogps.to_vec(&gpu).unwrap(), &dlogps, 0.0, 1e-6);
        if keep == 0.0 {
            assert_eq!(loss[0], 0.0, "an all-zero mask gives loss 0");
        }
    }
}

#[test]
fn should_match_reference_sequence_logps() {
    let gpu = gpu();
    for &(s, t) in &[(1usize, 1usize), (5, 37), (300, 3)] {
        let logps = randn(15, s * t, 2.0).iter().map(|x| -x.abs()).collect::<Vec<_>>();
        let mut m = mask(16, s * t, 0.6);
        if s > 1 {
            m[t..2 * t].iter_mut().for_each(|x| *x = 0.0); // sequence 1: nothing to score
        }
        let tlogps = Tensor::from_f32(&gpu, "logps", &logps).unwrap();
        let tmask = Tensor::from_f32(&gpu, "mask", &m).unwrap();
        let (tsum, tmean) = (Tensor::zeros(&gpu, "sum", s).unwrap(), Tensor::zeros(&gpu, "mean", s).unwrap());
        let mut plan = Plan::new();
        plan.push(ops::sequence_logps(&gpu, &tsum, &tmean, &tlogps, &tmask, s, t));
        plan.submit(&gpu);
        let (mut sum, mut mean) = (vec![0.0; s], vec![0.0; s]);
        cpu::sequence_logps(&mut sum, &mut mean, &logps, &m, s, t);
        let what = format!("S={s} T={t}");
        let (gsum, gmean) = (tsum.to_vec(&gpu).unwrap(), tmean.to_vec(&gpu).unwrap());
        assert_close(&format!("{what} seq_sum"), &gsum, &sum, 1e-6, 1e-5);
        assert_close(&format!("{what} seq_mean"), &gmean, &mean, 1e-6, 1e-5);
        if s > 1 {
            assert_eq!((gsum[1], gmean[1]), (0.0, 0.0), "an all-zero mask row gives sum 0 and mean 0");
        }
        // independent check of sequence 0
        let (mut a, mut c) = (0.0f64, 0.0f64);
        for k in 0..t {
            a += (m[k] * logps[k]) as f64;
            c += m[k] as f64;
        }
        assert!((gsum[0] as f64 - a).abs() < 1e-4 && (gmean[0] as f64 - a / c.max(1.0)).abs() < 1e-4);
    }
}

/// The online logsumexp rescales its running sum whenever a larger logit arrives: rows whose maximum comes last
/// (every value a new maximum), first, or never changes, and one spread over 300 nats, on both row forms and on rows
/// longer and shorter than a workgroup (whose idle threads merge empty partial sums).
#[test]
fn should_match_reference_logsumexp_wherever_the_row_max_arrives() {
    let gpu = gpu();
    for v in [5, 1000] {
        let rows: Vec<Vec<f32>> = vec![
            (0..v).map(|j| j as f32 * 0.37).collect(),
            (0..v).map(|j| -(j as f32) * 0.37).collect(),
            vec![-3.0; v],
            (0..v).map(|j| if j % 7 == 3 { 150.0 } else { -150.0 + j as f32 * 1e-3 }).collect(),
        ];
        let n = rows.len();
        let logits: Vec<f32> = rows.concat();
        let tg: Vec<u32> = (0..n as u32).map(|i| (i * 3) % v as u32).collect();
        let (mut logps, mut lse) = (vec![0.0; n], vec![0.0; n]);
        cpu::logprobs_forward(&mut logps, &mut lse, &logits, &tg, n, v);
        for form in [ops::RowForm::Workgroup, ops::RowForm::Invocation] {
            let tlogits = Tensor::from_f32(&gpu, "logits", &logits).unwrap();
            let ttg = Tensor::from_u32(&gpu, "targets", &tg).unwrap();
            let (tlogps, tlse) = (Tensor::zeros(&gpu, "logps", n).unwrap(), Tensor::zeros(&gpu, "lse", n).unwrap());
            let tls = Tensor::zeros(&gpu, "log_softmax", n * v).unwrap();
            let mut plan = Plan::new();
            plan.push(ops::logprobs_forward_with(&gpu, form, &tlogps, &tlse, &tlogits, &ttg, n, v));
            plan.push(ops::log_softmax_with(&gpu, form, &tls, &tlogits, n, v));
            plan.submit(&gpu);
            assert_close(&format!("{form:?} V={v} lse"), &tlse.to_vec(&gpu).unwrap(), &lse, 1e-5, 1e-6);
            assert_close(&format!("{form:?} V={v} logps"), &tlogps.to_vec(&gpu).unwrap(), &logps, 1e-5, 1e-5);
            let mut want = vec![0.0; n * v];
            cpu::log_softmax(&mut want, &logits, n, v);
            assert_close(&format!("{form:?} V={v} log_softmax"), &tls.to_vec(&gpu).unwrap(), &want, 1e-5, 1e-5);
        }
    }
}
