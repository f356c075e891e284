//! GPU PPO and sampling kernels against the CPU reference (`reference::ppo`, `reference::sampling`) on odd shapes
//! (rows not multiples of the workgroups, masks with empty and full rows, more than 256 positions), the reference's
//! loss gradients against finite differences of the loss, GAE against its closed form, and the sampler's draws
//! against the distribution it claims to sample.

mod common;
use common::*;
use dpo3d::gpu::{Plan, Tensor};
use dpo3d::ops::ppo::{self as ops, PpoParams, MB_STATS, RO, RO_ADV, RO_LOGP, RO_MASK, RO_RET, RO_REWARD, RO_VALUE};
use dpo3d::ops::sampling;
use dpo3d::reference::ppo as cpu;
use dpo3d::reference::sampling as cpu_s;
use dpo3d::rng::Rng;
use dpo3d::Gpu;

fn tf(gpu: &Gpu, v: &[f32]) -> Tensor {
    Tensor::from_f32(gpu, "t", v).unwrap()
}
fn tu(gpu: &Gpu, v: &[u32]) -> Tensor {
    Tensor::from_u32(gpu, "t", v).unwrap()
}
fn run(gpu: &Gpu, ds: Vec<dpo3d::gpu::Dispatch>) {
    let mut plan = Plan::new();
    plan.extend(ds);
    plan.submit(gpu);
}

/// A response mask (B, T) whose rows have responses of varied lengths starting at `start` (row 0 empty, row 1 full).
fn varied_mask(b: usize, t: usize, start: usize) -> Vec<f32> {
    let mut m = vec![0.0; b * t];
    for r in 0..b {
        let len = match r {
            0 => 0,
            1 => t - start,
            _ => (r * 7 + 3) % (t - start + 1),
        };
        for j in start..start + len {
            m[r * t + j] = 1.0;
        }
    }
    m
}

/// The fields the CPU mirror reads, copied into its own declaration of the shader's block.
fn cpu_params(p: &PpoParams) -> cpu::PpoParams {
    cpu::PpoParams {
        b: p.b,
        t: p.t,
        kl_estimator: p.kl_estimator,
        stats_row: p.stats_row,
        epoch: p.epoch,
        mb: p.mb,
        mb_size: p.mb_size,
        kl_coef: p.kl_coef,
        cliprange: p.cliprange,
        cliprange_value: p.cliprange_value,
        vf_coef: p.vf_coef,
        entropy_coef: p.entropy_coef,
    }
}

fn params(b: usize, t: usize, k3: bool) -> PpoParams {
    PpoParams {
        b: b as u32,
        t: t as u32,
        kl_estimator: k3 as u32,
        kl_coef: 0.07,
        gamma: 0.97,
        lam: 0.9,
        cliprange: 0.2,
        cliprange_value: 0.2,
        vf_coef: 0.1,
        entropy_coef: 0.01,
        ..Default::default()
    }
}

#[test]
fn should_match_reference_sample_categorical() {
    let gpu = gpu();
    let rng = [12345u32, 7];
    for &(b, v, positions) in &[(5usize, 7usize, 3usize), (3, 130, 2), (70, 10, 1)] {
        let stride = v * positions;
        let logits = randn(11 + v as u64, b * stride, 2.0);
        let tl = tf(&gpu, &logits);
        let trng = tu(&gpu, &rng);
        for &(temp, top_k) in &[(1.0f32, 0usize), (0.7, 3), (1.3, v + 5), (0.0, 0), (1.0, 1)] {
            let offset = (positions - 1) * v;
            let out = Tensor::zeros(&gpu, "out", b).unwrap();
            run(&gpu, vec![sampling::sample_categorical(&gpu, &out, &tl, &trng, b, v, stride, offset, temp, top_k, 5)]);
            let mut want = vec![0u32; b];
            cpu_s::sample_categorical(&mut want, &logits, rng, b, v, stride, offset, temp, top_k, 5);
            assert_eq!(out.to_vec_u32(&gpu).unwrap(), want, "B={b} V={v} temperature {temp} top_k {top_k}");
            if temp == 0.0 || top_k == 1 {
                for r in 0..b {
                    let row = &logits[r * stride + offset..r * stride + offset + v];
                    let am = (0..v).fold(0, |a, j| if row[j] > row[a] { j } else { a });
                    assert_eq!(want[r] as usize, am, "greedy / top-1 must pick the argmax");
                }
            }
        }
    }
}

#[test]
fn should_sample_the_tempered_top_k_distribution() {
    // 20000 rows of the same logits: the empirical frequencies must match softmax(logits / T) over the top-k.
    let gpu = gpu();
    let (b, v) = (20000usize, 6usize);
    let row = [0.3f32, -1.0, 1.2, 0.9, -0.2, 0.9];
    let logits: Vec<f32> = (0..b).flat_map(|_| row).collect();
    let (tl, trng) = (tf(&gpu, &logits), tu(&gpu, &sampling::rng_words(99, 3)));
    for &(temp, top_k) in &[(1.0f32, 0usize), (0.6, 4), (2.0, 2)] {
        let out = Tensor::zeros(&gpu, "out", b).unwrap();
        run(&gpu, vec![sampling::sample_categorical(&gpu, &out, &tl, &trng, b, v, v, 0, temp, top_k, 0)]);
        let got = out.to_vec_u32(&gpu).unwrap();
        let mut freq = vec![0.0f32; v];
        for &y in &got {
            freq[y as usize] += 1.0 / b as f32;
        }
        let want = cpu_s::sampling_probs(&row, temp, top_k);
        for j in 0..v {
            // 4 standard errors of a frequency at b = 20000 is at most 0.0142
            assert!(
                (freq[j] - want[j]).abs() < 0.015,
                "temperature {temp} top_k {top_k}: response {j} frequency {} vs {}",
                freq[j],
                want[j]
            );
            if want[j] == 0.0 {
                assert_eq!(freq[j], 0.0, "a filtered response was sampled");
            }
        }
    }
}

#[test]
fn should_match_reference_append_token_with_eos() {
    let gpu = gpu();
    let (b, t, lp, eos) = (5usize, 7usize, 2usize, 3u32);
    let mut tokens: Vec<u32> = (0..b * t).map(|i| (i % 5) as u32).collect();
    let mut targets = vec![0u32; b * t];
    let mut mask = vec![0.0f32; b * t];
    let (tt, ttg, tm) = (tu(&gpu, &tokens), tu(&gpu, &targets), tf(&gpu, &mask));
    for eos_opt in [Some(eos), None] {
        for pos in lp - 1..t - 1 {
            let sampled: Vec<u32> = (0..b).map(|r| ((r * 3 + pos * 5) % 6) as u32).collect();
            let ts = tu(&gpu, &sampled);
            run(&gpu, vec![sampling::append_token(&gpu, &tt, &ttg, &tm, &ts, b, t, pos, lp, eos_opt)]);
            cpu_s::append_token(&mut tokens, &mut targets, &mut mask, &sampled, b, t, pos, lp, eos_opt);
        }
        assert_eq!(tt.to_vec_u32(&gpu).unwrap(), tokens, "tokens (eos {eos_opt:?})");
        assert_eq!(ttg.to_vec_u32(&gpu).unwrap(), targets, "targets (eos {eos_opt:?})");
        assert_close("mask", &tm.to_vec(&gpu).unwrap(), &mask, 0.0, 0.0);
    }
    // With eos: after a row's first eos, every later token is eos and masked out; the eos itself is kept.
    let mut tokens2: Vec<u32> = vec![9; b * t];
    let (mut tg2, mut m2) = (vec![0u32; b * t], vec![0.0f32; b * t]);
    for pos in lp - 1..t - 1 {
        let sampled: Vec<u32> = (0..b).map(|r| if pos == lp - 1 + r { eos } else { 1 }).collect();
        cpu_s::append_token(&mut tokens2, &mut tg2, &mut m2, &sampled, b, t, pos, lp, Some(eos));
    }
    for r in 0..b {
        let first = lp + r; // the position holding row r's eos
        for j in lp..t {
            let pos = j - 1;
            if first < t {
                assert_eq!(m2[r * t + pos], if j <= first { 1.0 } else { 0.0 }, "row {r} position {pos}");
                if j >= first {
                    assert_eq!(tokens2[r * t + j], eos);
                }
            }
        }
    }
}

#[test]
fn should_match_reference_minibatch_ranks() {
    let gpu = gpu();
    for &(b, e) in &[(13usize, 3usize), (300, 2)] {
        let rng = sampling::rng_words(7, 11);
        let (trng, tr) = (tu(&gpu, &rng), Tensor::zeros(&gpu, "ranks", b * e).unwrap());
        run(&gpu, (0..e).map(|ep| sampling::minibatch_ranks(&gpu, &tr, &trng, b, ep)).collect());
        let mut want = vec![0u32; b * e];
        for ep in 0..e {
            cpu_s::minibatch_ranks(&mut want, rng, b, ep);
        }
        let got = tr.to_vec_u32(&gpu).unwrap();
        assert_eq!(got, want);
        for ep in 0..e {
            let mut r = got[ep * b..(ep + 1) * b].to_vec();
            r.sort();
            assert_eq!(r, (0..b as u32).collect::<Vec<_>>(), "epoch {ep} ranks are not a permutation");
        }
        assert_ne!(&got[..b], &got[b..2 * b], "epochs must draw different permutations");
    }
}

#[test]
fn should_match_reference_rollout_rewards_whitening_gae_and_stats() {
    let gpu = gpu();
    for &(b, t, start, k3) in &[(5usize, 7usize, 2usize, false), (5, 7, 2, true), (300, 1, 0, false), (37, 9, 3, true)]
    {
        let mut mask = varied_mask(b, t, start);
        if t == 1 {
            mask = vec![1.0; b];
        }
        let logps: Vec<f32> = randn(1, b * t, 1.0).iter().map(|x| -x.abs() - 0.1).collect();
        let ref_logps: Vec<f32> = logps.iter().zip(randn(2, b * t, 0.3)).map(|(l, d)| l + d).collect();
        let values = randn(3, b * t, 1.0);
        let scores = randn(4, b, 2.0);
        let p = params(b, t, k3);
        let (tl, tr, tv, ts, tm) =
            (tf(&gpu, &logps), tf(&gpu, &ref_logps), tf(&gpu, &values), tf(&gpu, &scores), tf(&gpu, &mask));
        let roll = Tensor::zeros(&gpu, "rollout", b * t * RO).unwrap();
        let metrics = Tensor::zeros(&gpu, "m", 5).unwrap();
        run(
            &gpu,
            vec![
                ops::ppo_rewards(&gpu, &roll, &tl, &tr, &tv, &ts, &tm, &p),
                ops::rollout_stats(&gpu, &metrics, &roll, &ts, &p),
                ops::masked_whiten(&gpu, &roll, RO_REWARD, false, &p),
                ops::gae(&gpu, &roll, &p),
                ops::masked_whiten(&gpu, &roll, RO_ADV, true, &p),
            ],
        );
        let mut want = vec![0.0f32; b * t * RO];
        cpu::ppo_rewards(&mut want, &logps, &ref_logps, &values, &scores, &mask, &cpu_params(&p));
        let mut wm = vec![0.0f32; 5];
        cpu::rollout_stats(&mut wm, &want, &scores, b, t, p.kl_coef);
        cpu::masked_whiten(&mut want, RO_REWARD, false, b, t);
        cpu::gae(&mut want, b, t, p.gamma, p.lam);
        cpu::masked_whiten(&mut want, RO_ADV, true, b, t);
        let what = format!("B={b} T={t} k3={k3}");
        assert_close(&format!("rollout {what}"), &roll.to_vec(&gpu).unwrap(), &want, 1e-5, 1e-4);
        assert_close(&format!("rollout metrics {what}"), &metrics.to_vec(&gpu).unwrap(), &wm, 1e-5, 1e-4);
        // whitened advantages: zero mean, unit (unbiased) variance over response positions
        let adv: Vec<f32> =
            (0..b * t).filter(|&i| want[i * RO + RO_MASK] > 0.0).map(|i| want[i * RO + RO_ADV]).collect();
        let n = adv.len() as f32;
        let mean = adv.iter().sum::<f32>() / n;
        let var = adv.iter().map(|a| (a - mean) * (a - mean)).sum::<f32>() / (n - 1.0);
        assert!(mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3, "{what}: whitened advantages mean {mean} var {var}");
    }
}

#[test]
fn should_match_closed_form_gae() {
    // A_t = sum_l (gamma lam)^l delta_{t+l} over the row's response positions, R_t = A_t + V_t (TRL's loop).
    let (b, t, start) = (6usize, 8usize, 2usize);
    let (gamma, lam) = (0.9f32, 0.8f32);
    let mask = varied_mask(b, t, start);
    let mut roll = vec![0.0f32; b * t * RO];
    let (rw, vals) = (randn(5, b * t, 1.0), randn(6, b * t, 1.0));
    for i in 0..b * t {
        if mask[i] > 0.0 {
            roll[i * RO + RO_MASK] = 1.0;
            roll[i * RO + RO_REWARD] = rw[i];
            roll[i * RO + RO_VALUE] = vals[i];
        }
    }
    cpu::gae(&mut roll, b, t, gamma, lam);
    for r in 0..b {
        let idx: Vec<usize> = (0..t).filter(|&j| mask[r * t + j] > 0.0).map(|j| r * t + j).collect();
        for (k, &i) in idx.iter().enumerate() {
            let mut a = 0.0f64;
            for (l, &j) in idx[k..].iter().enumerate() {
                let next_v = idx.get(k + l + 1).map_or(0.0, |&n| vals[n] as f64);
                let delta = rw[j] as f64 + gamma as f64 * next_v - vals[j] as f64;
                a += (gamma as f64 * lam as f64).powi(l as i32) * delta;
            }
            assert!(
                (roll[i * RO + RO_ADV] as f64 - a).abs() < 1e-5,
                "row {r} advantage {} vs closed form {a}",
                roll[i * RO + RO_ADV]
            );
            assert!((roll[i * RO + RO_RET] as f64 - a - vals[i] as f64).abs() < 1e-5);
        }
    }
}

/// A random rollout for the loss tests: advantages, returns, old values and old log-probs near the current ones, so
/// that some ratios and values fall outside the clip ranges and some inside.
fn loss_case(b: usize, t: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mask = if t == 1 { vec![1.0; b] } else { varied_mask(b, t, 1) };
    let logps: Vec<f32> = randn(seed, b * t, 1.0).iter().map(|x| -x.abs() - 0.2).collect();
    let values = randn(seed + 1, b * t, 1.0);
    let (dl, dv, adv, ret) = (
        randn(seed + 2, b * t, 0.4),
        randn(seed + 3, b * t, 0.3),
        randn(seed + 4, b * t, 1.0),
        randn(seed + 5, b * t, 1.0),
    );
    let mut roll = vec![0.0f32; b * t * RO];
    for i in 0..b * t {
        if mask[i] > 0.0 {
            roll[i * RO + RO_MASK] = 1.0;
            roll[i * RO + RO_LOGP] = logps[i] - dl[i];
            roll[i * RO + RO_VALUE] = values[i] - dv[i];
            roll[i * RO + RO_ADV] = adv[i];
            roll[i * RO + RO_RET] = ret[i];
        }
    }
    (logps, values, roll)
}

#[test]
fn should_match_reference_ppo_loss_and_reduce() {
    let gpu = gpu();
    for &(b, t, e, m) in &[(6usize, 5usize, 2usize, 2usize), (300, 1, 2, 3), (9, 4, 1, 1)] {
        let (logps, values, roll) = loss_case(b, t, 20 + b as u64);
        let entropy: Vec<f32> = randn(9, b * t, 1.0).iter().map(|x| x.abs()).collect();
        let rng = sampling::rng_words(3, 1);
        let mut ranks = vec![0u32; e * b];
        for ep in 0..e {
            cpu_s::minibatch_ranks(&mut ranks, rng, b, ep);
        }
        let base = PpoParams { mb_size: (b / m) as u32, ..params(b, t, false) };
        let (tl, tv, tr, trk, te) =
            (tf(&gpu, &logps), tf(&gpu, &values), tf(&gpu, &roll), tu(&gpu, &ranks), tf(&gpu, &entropy));
        let stats = Tensor::zeros(&gpu, "stats", e * m * MB_STATS).unwrap();
        let metrics = Tensor::zeros(&gpu, "metrics", 8).unwrap();
        let mut wstats = vec![0.0f32; e * m * MB_STATS];
        for ep in 0..e {
            for mb in 0..m {
                let p = PpoParams { epoch: ep as u32, mb: mb as u32, stats_row: (ep * m + mb) as u32, ..base };
                let (dl, dv) = (tf(&gpu, &randn(40, b * t, 1.0)), tf(&gpu, &randn(41, b * t, 1.0)));
                run(&gpu, vec![ops::ppo_loss(&gpu, &dl, &dv, &stats, &tl, &tv, &tr, &trk, &te, &p)]);
                let (mut wdl, mut wdv) = (vec![0.0f32; b * t], vec![0.0f32; b * t]);
                cpu::ppo_loss(
                    &mut wdl,
                    &mut wdv,
                    &mut wstats,
                    &logps,
                    &values,
                    &roll,
                    &ranks,
                    &entropy,
                    &cpu_params(&p),
                );
                let what = format!("B={b} T={t} epoch {ep} minibatch {mb}");
                assert_close(&format!("dlogps {what}"), &dl.to_vec(&gpu).unwrap(), &wdl, 1e-6, 1e-4);
                assert_close(&format!("dvalues {what}"), &dv.to_vec(&gpu).unwrap(), &wdv, 1e-6, 1e-4);
                let rows_in = (0..b).filter(|&r| cpu::in_minibatch(&ranks, r, &cpu_params(&p))).count();
                assert_eq!(rows_in, b / m, "minibatch size");
            }
        }
        assert_close("stats", &stats.to_vec(&gpu).unwrap(), &wstats, 1e-5, 1e-4);
        run(&gpu, vec![ops::ppo_reduce(&gpu, &metrics, &stats, e * m)]);
        let mut wm = vec![0.0f32; 8];
        cpu::ppo_reduce(&mut wm, &wstats, e * m);
        assert_close("train metrics", &metrics.to_vec(&gpu).unwrap(), &wm, 1e-5, 1e-4);
        eprintln!("B={b} T={t}: train metrics {wm:?}");
        // the case has clipped and unclipped tokens
        assert!(wm[2] > 0.05 && wm[2] < 0.95, "policy clip fraction {} should be strictly between 0 and 1", wm[2]);
        assert!(wm[3] > 0.05 && wm[3] < 0.95, "value clip fraction {} should be strictly between 0 and 1", wm[3]);
    }
}

#[test]
fn should_match_finite_differences_of_reference_ppo_loss() {
    let (b, t) = (5usize, 4usize);
    let (logps, values, roll) = loss_case(b, t, 70);
    let entropy = vec![0.0f32; b * t];
    let ranks: Vec<u32> = (0..b as u32).collect();
    let p = PpoParams { mb_size: b as u32, entropy_coef: 0.05, ..params(b, t, false) };
    let (mut dl, mut dv, mut stats) = (vec![0.0f32; b * t], vec![0.0f32; b * t], vec![0.0f32; MB_STATS]);
    cpu::ppo_loss(&mut dl, &mut dv, &mut stats, &logps, &values, &roll, &ranks, &entropy, &cpu_params(&p));
    let f = |l: &[f32], v: &[f32]| cpu::ppo_loss_value(l, v, &roll, &ranks, &cpu_params(&p));
    let h = 1e-3f32;
    for i in 0..b * t {
        let (mut lp, mut lm) = (logps.clone(), logps.clone());
        lp[i] += h;
        lm[i] -= h;
        let fd = (f(&lp, &values) - f(&lm, &values)) / (2.0 * h as f64);
        assert!(
            (fd - dl[i] as f64).abs() < 2e-3 + 1e-2 * fd.abs(),
            "d loss / d logp[{i}]: finite difference {fd} vs {}",
            dl[i]
        );
        let (mut vp, mut vm) = (values.clone(), values.clone());
        vp[i] += h;
        vm[i] -= h;
        let fd = (f(&logps, &vp) - f(&logps, &vm)) / (2.0 * h as f64);
        assert!(
            (fd - dv[i] as f64).abs() < 2e-3 + 1e-2 * fd.abs(),
            "d loss / d value[{i}]: finite difference {fd} vs {}",
            dv[i]
        );
    }
    // the surrogate's terms are the reported losses
    let no_ent = PpoParams { entropy_coef: 0.0, ..p };
    let total = cpu::ppo_loss_value(&logps, &values, &roll, &ranks, &cpu_params(&no_ent));
    assert!(
        (total - (stats[0] + p.vf_coef * stats[1]) as f64).abs() < 1e-4,
        "loss {total} vs policy {} + vf_coef * value {}",
        stats[0],
        stats[1]
    );
}

#[test]
fn should_match_reference_token_entropy() {
    let gpu = gpu();
    for &(n, v) in &[(7usize, 5usize), (3, 70), (65, 130)] {
        let logits = randn(30 + v as u64, n * v, 2.0);
        let (tl, out) = (tf(&gpu, &logits), Tensor::zeros(&gpu, "h", n).unwrap());
        run(&gpu, vec![ops::token_entropy(&gpu, &out, &tl, n, v)]);
        let mut want = vec![0.0f32; n];
        cpu::token_entropy(&mut want, &logits, n, v);
        assert_close(&format!("entropy N={n} V={v}"), &out.to_vec(&gpu).unwrap(), &want, 1e-5, 1e-4);
        // against the textbook -sum p log p in f64
        for r in 0..n {
            let row = &logits[r * v..(r + 1) * v];
            let mx = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let z: f64 = row.iter().map(|&x| (x as f64 - mx).exp()).sum();
            let h: f64 = row
                .iter()
                .map(|&x| {
                    let lp = x as f64 - mx - z.ln();
                    -lp.exp() * lp
                })
                .sum();
            assert!((want[r] as f64 - h).abs() < 1e-4, "row {r}: entropy {} vs {h}", want[r]);
        }
    }
}

#[test]
fn should_match_reference_reward_sources() {
    let gpu = gpu();
    let (b, p_, r) = (11usize, 4usize, 10usize);
    let prompts: Vec<u32> = (0..b).map(|i| (i % p_) as u32).collect();
    let responses: Vec<u32> = (0..b).map(|i| ((i * 7) % r) as u32).collect();
    let table = randn(50, p_ * r, 1.0);
    let (tp, tr, tt) = (tu(&gpu, &prompts), tu(&gpu, &responses), tf(&gpu, &table));
    let scores = Tensor::zeros(&gpu, "scores", b).unwrap();
    let x = Tensor::zeros(&gpu, "x", b * p_ * r).unwrap();
    run(
        &gpu,
        vec![ops::table_reward(&gpu, &scores, &tt, &tp, &tr, b, r), ops::pair_onehot(&gpu, &x, &tp, &tr, b, p_, r)],
    );
    let (mut ws, mut wx) = (vec![0.0f32; b], vec![0.0f32; b * p_ * r]);
    cpu::table_reward(&mut ws, &table, &prompts, &responses, r);
    cpu::pair_onehot(&mut wx, &prompts, &responses, p_, r);
    assert_close("table reward", &scores.to_vec(&gpu).unwrap(), &ws, 0.0, 0.0);
    assert_close("pair one-hot", &x.to_vec(&gpu).unwrap(), &wx, 0.0, 0.0);

    let (b, t) = (9usize, 7usize);
    let tokens: Vec<u32> = (0..b * t).map(|i| ((i * 5 + i / 3) % 6) as u32).collect();
    let mask = varied_mask(b, t, 2);
    let src = randn(51, b * t, 1.0);
    let (ttk, tm, tsrc) = (tu(&gpu, &tokens), tf(&gpu, &mask), tf(&gpu, &src));
    let (s1, s2) = (Tensor::zeros(&gpu, "s1", b).unwrap(), Tensor::zeros(&gpu, "s2", b).unwrap());
    run(
        &gpu,
        vec![
            ops::count_token_reward(&gpu, &s1, &ttk, &tm, b, t, 3, 0.5),
            ops::score_gather(&gpu, &s2, &tsrc, &tm, b, t, 1),
        ],
    );
    let (mut w1, mut w2) = (vec![0.0f32; b], vec![0.0f32; b]);
    cpu::count_token_reward(&mut w1, &tokens, &mask, b, t, 3, 0.5);
    cpu::score_gather(&mut w2, &src, &mask, b, t, 1);
    assert_close("count reward", &s1.to_vec(&gpu).unwrap(), &w1, 0.0, 0.0);
    assert_close("score gather", &s2.to_vec(&gpu).unwrap(), &w2, 0.0, 0.0);
    assert!(w1.iter().any(|&s| s > 0.0), "the count case must count something");
    assert_eq!(w2[0], 0.0, "a row without response positions scores 0");
}

#[test]
fn should_maximise_the_kl_regularised_objective_at_the_analytic_optimum() {
    // J(pi) = sum_y pi(y) r(y) - beta KL(pi || pi0); random perturbations of pi* must not increase it.
    let (r, beta) = (10usize, 0.1f32);
    let pi0: Vec<f32> = {
        let l = randn(60, r, 1.0);
        let z: f32 = l.iter().map(|x| x.exp()).sum();
        l.iter().map(|x| x.exp() / z).collect()
    };
    let rw = randn(61, r, 0.5);
    let star = cpu::rlhf_optimum(&pi0, &rw, beta, r);
    let j = |pi: &[f32]| -> f64 {
        pi.iter()
            .zip(&pi0)
            .zip(&rw)
            .map(|((&p, &q), &w)| p as f64 * (w as f64 - beta as f64 * (p as f64 / q as f64).ln()))
            .sum()
    };
    let best = j(&star);
    let mut rng = Rng::new(5);
    for _ in 0..200 {
        let pert: Vec<f32> = star.iter().map(|&p| (p * (1.0 + 0.2 * rng.normal())).max(1e-6)).collect();
        let z: f32 = pert.iter().sum();
        let pert: Vec<f32> = pert.iter().map(|p| p / z).collect();
        assert!(j(&pert) <= best + 1e-7, "a perturbation beat the analytic optimum");
    }
    assert!(cpu::total_variation(&star, &pi0, r)[0] > 0.05, "the test reward must move the optimum away from pi0");
}

#[test]
fn should_agree_with_the_mirror_on_the_record_layouts() {
    // The CPU mirror declares the rollout record and statistics layouts itself; both must name the same slots.
    use dpo3d::ops::ppo::{RO_KL, RO_REF_LOGP};
    assert_eq!(
        [RO, RO_LOGP, RO_REF_LOGP, RO_VALUE, RO_KL, RO_REWARD, RO_ADV, RO_RET, RO_MASK, MB_STATS],
        [
            cpu::RO,
            cpu::RO_LOGP,
            cpu::RO_REF_LOGP,
            cpu::RO_VALUE,
            cpu::RO_KL,
            cpu::RO_REWARD,
            cpu::RO_ADV,
            cpu::RO_RET,
            cpu::RO_MASK,
            cpu::MB_STATS
        ]
    );
    assert_eq!(dpo3d::ops::preference::STATS, dpo3d::reference::preference::STATS);
}
