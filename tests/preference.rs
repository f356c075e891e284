//! Preference objectives (issue: DPO family, IPO, SLiC, hinge, SimPO, Bradley-Terry reward model):
//! every loss on the GPU against the CPU reference, the reference's gradients against finite differences, the
//! paper's known values (ln 2 at zero margin, dl/dpi- / dl/dpi+ = -pi+/pi-, SFT-DPO's chosen gradient floor
//! gamma/pi+) in log space far below f32's smallest normal, and a reward model reaching high held-out accuracy.

mod common;
use common::*;
use dpo3d::gpu::{Plan, Tensor};
use dpo3d::model::init::mlp_params;
use dpo3d::model::{Mlp, MlpConfig};
use dpo3d::objectives::PreferenceLoss;
use dpo3d::ops::preference::{self as ops, PrefParams, STATS};
use dpo3d::reference::preference as cpu;
use dpo3d::rng::Rng;
use dpo3d::train::{OptimConfig, RewardTrainer};

fn all_losses() -> Vec<PreferenceLoss> {
    use PreferenceLoss::*;
    vec![
        Dpo { beta: 0.1 },
        FlexDpo { beta_pos: 0.1, beta_neg: 0.05 },
        SftDpo { beta: 0.1, gamma: 0.3 },
        Ipo { eta: 0.1 },
        Slic { delta: 5.0, eta: 0.1 },
        Hinge { beta: 0.1 },
        Cdpo { beta: 0.2, label_smoothing: 0.1 },
        Robust { beta: 0.2, label_smoothing: 0.1 },
        Dpop { beta: 0.1, lambda: 5.0 },
        Simpo { beta: 2.0, margin: 0.5 },
    ]
}

struct Case {
    n: usize,
    t: usize,
    logps: Vec<f32>,
    mask: Vec<f32>,
    ref_sum: Vec<f32>,
    ref_mean: Vec<f32>,
}

fn case(seed: u64, n: usize, t: usize) -> Case {
    let mut r = Rng::new(seed);
    let logps: Vec<f32> = (0..2 * n * t).map(|_| -3.0 * r.uniform() - 0.05).collect();
    // Partial masks: a prompt of 1-2 tokens, then the response; row 0 has a single response token.
    let mask: Vec<f32> = (0..2 * n * t).map(|i| if i % t > (i / t) % 2 { 1.0 } else { 0.0 }).collect();
    let ref_sum: Vec<f32> = (0..2 * n).map(|_| -6.0 * r.uniform()).collect();
    let ref_mean: Vec<f32> = ref_sum.iter().map(|x| x / 3.0).collect();
    Case { n, t, logps, mask, ref_sum, ref_mean }
}

/// Run forward + reduce + backward on the GPU; return (stats, metrics, coef, dlogps).
fn run_gpu(gpu: &dpo3d::Gpu, c: &Case, p: &PrefParams) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let t = |v: &[f32]| Tensor::from_f32(gpu, "t", v).unwrap();
    let (logps, mask, rs, rm) = (t(&c.logps), t(&c.mask), t(&c.ref_sum), t(&c.ref_mean));
    let stats = Tensor::zeros(gpu, "stats", c.n * STATS).unwrap();
    let coef = Tensor::zeros(gpu, "coef", 2 * c.n).unwrap();
    let metrics = Tensor::zeros(gpu, "metrics", p.groups() * STATS).unwrap();
    let dlogps = t(&vec![7.0; 2 * c.n * c.t]); // overwritten
    let mut plan = Plan::new();
    plan.push(ops::preference_forward(gpu, &stats, &coef, &logps, &mask, &rs, &rm, p));
    plan.push(ops::preference_reduce(gpu, &metrics, &stats, p));
    plan.push(ops::preference_backward(gpu, &dlogps, &coef, &mask, p));
    plan.submit(gpu);
    (stats.to_vec(gpu).unwrap(), metrics.to_vec(gpu).unwrap(), coef.to_vec(gpu).unwrap(), dlogps.to_vec(gpu).unwrap())
}

/// The same parameters for the CPU mirror, which declares its own copy of the shader's block.
fn cpu_params(p: &PrefParams) -> cpu::PrefParams {
    let PrefParams {
        loss_type,
        n_pairs,
        t,
        use_mean,
        beta,
        beta_neg,
        gamma,
        eta,
        delta,
        label_smoothing,
        lambda,
        margin,
        groups,
        _pad,
    } = *p;
    cpu::PrefParams {
        loss_type,
        n_pairs,
        t,
        use_mean,
        beta,
        beta_neg,
        gamma,
        eta,
        delta,
        label_smoothing,
        lambda,
        margin,
        groups,
    }
}

fn run_cpu(c: &Case, p: &PrefParams) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut stats = vec![0.0; c.n * STATS];
    let mut coef = vec![0.0; 2 * c.n];
    let mut metrics = vec![0.0; p.groups() * STATS];
    let mut dlogps = vec![0.0; 2 * c.n * c.t];
    let p = &cpu_params(p);
    cpu::preference_forward(&mut stats, &mut coef, &c.logps, &c.mask, &c.ref_sum, &c.ref_mean, p);
    cpu::preference_reduce_groups(&mut metrics, &stats, p);
    cpu::preference_backward(&mut dlogps, &coef, &c.mask, p);
    (stats, metrics, coef, dlogps)
}

#[test]
fn should_match_reference_every_preference_loss() {
    let gpu = gpu();
    for (n, t) in [(1, 1), (7, 5), (70, 3)] {
        let c = case(n as u64, n, t);
        for loss in all_losses() {
            let p = loss.params(n, t);
            let (gs, gm, gc, gd) = run_gpu(&gpu, &c, &p);
            let (cs, cm, cc, cd) = run_cpu(&c, &p);
            let name = loss.name();
            assert_close(&format!("{name} stats"), &gs, &cs, 1e-4, 1e-4);
            assert_close(&format!("{name} metrics"), &gm, &cm, 1e-4, 1e-4);
            assert_close(&format!("{name} coef"), &gc, &cc, 1e-6, 1e-4);
            assert_close(&format!("{name} dlogps"), &gd, &cd, 1e-6, 1e-4);
        }
    }
}

/// Every loss at one hand-computed point, independent of src/reference: one pair, T = 2, every token a response
/// token; policy token log-probs chosen (-0.5, -1.0), rejected (-1.2, -2.0), so sequence sums pc = -1.5,
/// pr = -3.2 and means -0.75, -1.6; reference sums (-1.0, -2.0), means (-0.5, -1.0). With the log-ratios
/// lc = pc - ref_c, lr = pr - ref_r and h = lc - lr = 0.7 (on means: h_mean = 0.35), the formulas as TRL's
/// `DPOTrainer.dpo_loss` / `CPOTrainer` write them (the paper's for Flex-DPO, SFT-DPO, SLiC; Pal et al. 2024 for DPOP):
///   dpo:      -logsigmoid(beta h)                                                   beta 0.1
///   flex-dpo: -logsigmoid(beta+ lc - beta- lr)                                      beta+ 0.1, beta- 0.05
///   sft-dpo:  -logsigmoid(beta h) - gamma pc                                        beta 0.1, gamma 0.3
///   ipo:      (h_mean - 1/(2 eta))^2                 (TRL "ipo", its beta = eta)    eta 0.1
///   slic:     max(0, delta - pc + pr) - eta pc                                      delta 5, eta 0.1
///   hinge:    relu(1 - beta h)                       (TRL "hinge")                  beta 0.1
///   cdpo:     -(1 - e) logsigmoid(beta h) - e logsigmoid(-beta h)  (TRL "sigmoid" with label_smoothing e)
///   robust:   (-(1 - e) logsigmoid(beta h) + e logsigmoid(-beta h)) / (1 - 2e)      beta 0.2, e 0.1 (both)
///   dpop:     -logsigmoid(beta (h - lambda max(0, ref_c - pc)))                     beta 0.1, lambda 5
///   simpo:    -logsigmoid(beta (mean_c - mean_r) - gamma)  (TRL CPOTrainer "simpo", gamma = beta * gamma_beta_ratio)
///                                                                                   beta 2, gamma 0.5
/// evaluated in Python f64; d loss / d token log-prob by central differences (h = 1e-6) of the same formulas.
#[test]
fn should_match_hand_computed_losses_as_trl_defines_them() {
    let expected: [(&str, f64, [f64; 4]); 10] = [
        ("dpo", 0.6587595555486971, [-0.0482507143, -0.0482507142, 0.0482507143, 0.0482507143]),
        ("flex-dpo", 0.6881596805078622, [-0.0497500021, -0.0497500021, 0.0248750011, 0.0248750011]),
        ("sft-dpo", 1.108759555548697, [-0.348250714, -0.348250714, 0.0482507143, 0.0482507143]),
        ("ipo", 21.6225, [-4.65, -4.65, 4.65, 4.65]),
        ("slic", 3.45, [-1.1, -1.1, 1.0, 1.0]),
        ("hinge", 0.93, [-0.1, -0.1, 0.1, 0.1]),
        ("cdpo", 0.6395951823371515, [-0.073011411, -0.073011411, 0.073011411, 0.073011411]),
        ("robust", 0.6080951823371514, [-0.118011411, -0.118011411, 0.118011411, 0.118011411]),
        ("dpop", 0.7871917248407818, [-0.326927335, -0.326927335, 0.0544878893, 0.0544878893]),
        ("simpo", 0.2632824673380311, [-0.231475216, -0.231475217, 0.231475216, 0.231475217]),
    ];
    let gpu = gpu();
    let c = Case {
        n: 1,
        t: 2,
        logps: vec![-0.5, -1.0, -1.2, -2.0],
        mask: vec![1.0; 4],
        ref_sum: vec![-1.0, -2.0],
        ref_mean: vec![-0.5, -1.0],
    };
    let losses = all_losses();
    assert_eq!(losses.len(), expected.len());
    for (loss, (name, want_loss, want_d)) in losses.iter().zip(expected) {
        assert_eq!(loss.name(), name);
        let (stats, _, _, dlogps) = run_gpu(&gpu, &c, &loss.params(1, 2));
        assert_close(&format!("{name} loss"), &stats[..1], &[want_loss as f32], 1e-5, 1e-5);
        let want_d: Vec<f32> = want_d.iter().map(|&x| x as f32).collect();
        assert_close(&format!("{name} d loss / d logps"), &dlogps, &want_d, 1e-6, 1e-4);
    }
}

/// Groups (a replicated policy's replicas, each its own 2n rows and its own loss): every loss against the reference,
/// and each group bit-for-bit what its rows give as a lone batch.
#[test]
fn should_match_reference_and_lone_batches_for_grouped_pairs() {
    let gpu = gpu();
    for (groups, n, t) in [(3usize, 7usize, 5usize), (4, 1, 1), (2, 70, 3)] {
        let c = case(100 + n as u64, groups * n, t);
        for loss in all_losses() {
            let mut p = loss.params(groups * n, t);
            p.groups = groups as u32;
            let (gs, gm, gc, gd) = run_gpu(&gpu, &c, &p);
            let (cs, cm, cc, cd) = run_cpu(&c, &p);
            let name = format!("{} groups={groups} n={n} t={t}", loss.name());
            assert_close(&format!("{name} stats"), &gs, &cs, 1e-4, 1e-4);
            assert_close(&format!("{name} metrics"), &gm, &cm, 1e-4, 1e-4);
            assert_close(&format!("{name} coef"), &gc, &cc, 1e-6, 1e-4);
            assert_close(&format!("{name} dlogps"), &gd, &cd, 1e-6, 1e-4);
            for g in 0..groups {
                let rows = 2 * n * g..2 * n * (g + 1);
                let lone = Case {
                    n,
                    t,
                    logps: c.logps[rows.start * t..rows.end * t].to_vec(),
                    mask: c.mask[rows.start * t..rows.end * t].to_vec(),
                    ref_sum: c.ref_sum[rows.clone()].to_vec(),
                    ref_mean: c.ref_mean[rows.clone()].to_vec(),
                };
                let (ls, lm, lc, ld) = run_gpu(&gpu, &lone, &loss.params(n, t));
                assert_eq!(ls, gs[g * n * STATS..(g + 1) * n * STATS], "{name} group {g} stats");
                assert_eq!(lm, gm[g * STATS..(g + 1) * STATS], "{name} group {g} metrics");
                assert_eq!(lc, gc[rows.clone()], "{name} group {g} coef");
                assert_eq!(ld, gd[rows.start * t..rows.end * t], "{name} group {g} dlogps");
            }
        }
    }
}

#[test]
fn should_match_finite_differences_of_every_loss() {
    // d mean-loss / d token logp from the reference backward vs central differences of the reference forward (f32
    // forward, eps 1e-2 on logps of magnitude ~1; kinks of hinge/SLiC are away from this random point).
    let c = case(5, 4, 3);
    for loss in all_losses() {
        let p = loss.params(c.n, c.t);
        let (_, _, _, grad) = run_cpu(&c, &p);
        #[allow(clippy::needless_range_loop)] // i indexes the perturbed copy too
        for i in 0..c.logps.len() {
            let f = |x: f32| {
                let mut cc = Case {
                    logps: c.logps.clone(),
                    mask: c.mask.clone(),
                    ref_sum: c.ref_sum.clone(),
                    ref_mean: c.ref_mean.clone(),
                    ..c
                };
                cc.logps[i] = x;
                run_cpu(&cc, &p).1[0] as f64
            };
            let eps = 1e-2;
            let fd = (f(c.logps[i] + eps) - f(c.logps[i] - eps)) / (2.0 * eps as f64);
            assert!(
                (fd - grad[i] as f64).abs() < 2e-3 + 2e-2 * fd.abs(),
                "{}: dlogps[{i}] = {} but finite differences give {fd}",
                loss.name(),
                grad[i]
            );
        }
    }
}

/// One pair with single-token responses at the given log-probs.
fn pair(logp_c: f32, logp_r: f32, ref_c: f32, ref_r: f32) -> Case {
    Case {
        n: 1,
        t: 1,
        logps: vec![logp_c, logp_r],
        mask: vec![1.0, 1.0],
        ref_sum: vec![ref_c, ref_r],
        ref_mean: vec![ref_c, ref_r],
    }
}

#[test]
fn should_give_ln2_at_zero_margin() {
    let gpu = gpu();
    let c = pair(-2.0, -3.0, -2.0, -3.0);
    for loss in [PreferenceLoss::Dpo { beta: 0.1 }, PreferenceLoss::FlexDpo { beta_pos: 0.1, beta_neg: 0.08 }] {
        let (_, m, _, _) = run_gpu(&gpu, &c, &loss.params(1, 1));
        assert!(
            (m[0] - std::f32::consts::LN_2).abs() < 1e-6,
            "{} loss at zero margin = {}, want ln 2",
            loss.name(),
            m[0]
        );
    }
}

#[test]
fn should_keep_the_gradient_ratio_minus_pi_plus_over_pi_minus_in_log_space() {
    // dl/dpi- / dl/dpi+ = -pi+/pi-, so log10|dl/dpi-| - log10|dl/dpi+| = (log pi+ - log pi-) / ln 10, at any state,
    // including pi- = e^-150 (about 7e-66, far below f32's smallest number).
    let gpu = gpu();
    for (lc, lr) in [(-2.0f32, -2.5f32), (-1.0, -20.0), (-0.5, -150.0), (-3.0, -1.0)] {
        let c = pair(lc, lr, -2.0, -2.5);
        let (stats, _, coef, _) = run_gpu(&gpu, &c, &PreferenceLoss::Dpo { beta: 0.1 }.params(1, 1));
        let (g_c, g_r) = (stats[7], stats[8]);
        assert!(g_c.is_finite() && g_r.is_finite(), "log10 gradients not finite at ({lc}, {lr}): {g_c} {g_r}");
        let want = (lc - lr) / std::f32::consts::LN_10;
        assert!(
            ((g_r - g_c) - want).abs() < 1e-3 * want.abs().max(1.0),
            "({lc}, {lr}): log10 ratio {} want {want}",
            g_r - g_c
        );
        // And in log-probability space the two gradients are balanced: dl/dlog pi+ = -dl/dlog pi-.
        assert!((coef[0] + coef[1]).abs() <= 1e-7, "coefficients not balanced: {coef:?}");
    }
}

#[test]
fn should_keep_sft_dpo_chosen_gradient_above_gamma_over_pi_plus() {
    // As pi- -> 0 DPO's chosen gradient vanishes; SFT-DPO's stays >= gamma / pi+.
    let gpu = gpu();
    let gamma = 0.1f32;
    for lr in [-10.0f32, -50.0, -200.0] {
        let c = pair(-1.5, lr, -2.0, -2.5);
        let (dpo, _, _, _) = run_gpu(&gpu, &c, &PreferenceLoss::Dpo { beta: 0.1 }.params(1, 1));
        let (sft, _, coef, _) = run_gpu(&gpu, &c, &PreferenceLoss::SftDpo { beta: 0.1, gamma }.params(1, 1));
        let floor = (gamma.ln() - (-1.5f32)) / std::f32::consts::LN_10; // log10(gamma / pi+)
        assert!(
            sft[7] >= floor - 1e-5,
            "pi- = e^{lr}: SFT-DPO log10|dl/dpi+| = {} below log10(gamma/pi+) = {floor}",
            sft[7]
        );
        assert!(coef[0] <= -gamma + 1e-6, "chosen coefficient {} should be <= -gamma", coef[0]);
        if lr <= -50.0 {
            assert!(dpo[7] < floor - 1.0, "DPO's chosen gradient should have vanished: {} vs floor {floor}", dpo[7]);
        }
    }
}

#[test]
fn should_match_reference_bradley_terry() {
    let gpu = gpu();
    let (n, t) = (5, 4);
    let scalar = randn(9, 2 * n * t, 2.0);
    let last: Vec<u32> = (0..2 * n as u32).map(|s| s % t as u32).collect();
    let p = PrefParams { n_pairs: n as u32, t: t as u32, ..Default::default() };
    let ts = Tensor::from_f32(&gpu, "s", &scalar).unwrap();
    let tl = Tensor::from_u32(&gpu, "l", &last).unwrap();
    let (stats, coef, metrics) = (
        Tensor::zeros(&gpu, "st", n * STATS).unwrap(),
        Tensor::zeros(&gpu, "c", 2 * n).unwrap(),
        Tensor::zeros(&gpu, "m", STATS).unwrap(),
    );
    let ds = Tensor::from_f32(&gpu, "ds", &vec![3.0; 2 * n * t]).unwrap();
    let mut plan = Plan::new();
    plan.push(ops::bt_forward(&gpu, &stats, &coef, &ts, &tl, &p));
    plan.push(ops::preference_reduce(&gpu, &metrics, &stats, &p));
    plan.push(ops::bt_backward(&gpu, &ds, &coef, &tl, &p));
    plan.submit(&gpu);
    let (mut cs, mut cc, mut cds) = (vec![0.0; n * STATS], vec![0.0; 2 * n], vec![0.0; 2 * n * t]);
    let cp = cpu_params(&p);
    cpu::bt_forward(&mut cs, &mut cc, &scalar, &last, &cp);
    cpu::bt_backward(&mut cds, &cc, &last, &cp);
    assert_close("bt stats", &stats.to_vec(&gpu).unwrap(), &cs, 1e-5, 1e-5);
    assert_close("bt dscalar", &ds.to_vec(&gpu).unwrap(), &cds, 1e-7, 1e-5);
    // finite differences of the mean BT loss w.r.t. the chosen reward of pair 0
    let loss = |s: &[f32]| {
        let (mut st, mut c) = (vec![0.0; n * STATS], vec![0.0; 2 * n]);
        cpu::bt_forward(&mut st, &mut c, s, &last, &cp);
        (0..n).map(|i| st[i * STATS] as f64).sum::<f64>() / n as f64
    };
    let i = last[0] as usize;
    let (mut a, mut b) = (scalar.clone(), scalar.clone());
    a[i] += 1e-2;
    b[i] -= 1e-2;
    let fd = (loss(&a) - loss(&b)) / 2e-2;
    assert!((fd - cds[i] as f64).abs() < 1e-3, "BT gradient {} vs finite differences {fd}", cds[i]);
}

#[test]
fn should_train_a_reward_model_to_high_held_out_accuracy() {
    // Items (x, y), x < 6 prompts, y < 8 responses, with a true reward r = a_x b_y + c_y; the model sees the two-hot
    // (x, y) input. Pairs within a prompt are split 60/40 into train and held-out; held-out pairs are new
    // combinations of seen items, so Bradley-Terry must learn consistent scores to rank them.
    let gpu = gpu();
    let (np, nr) = (6usize, 8usize);
    let mut r = Rng::new(3);
    let a: Vec<f32> = (0..np).map(|_| r.normal()).collect();
    let b: Vec<f32> = (0..nr).map(|_| r.normal()).collect();
    let c: Vec<f32> = (0..nr).map(|_| r.normal()).collect();
    let reward = |x: usize, y: usize| a[x] * b[y] + c[y];
    let mut pairs = Vec::new();
    for x in 0..np {
        for y1 in 0..nr {
            for y2 in y1 + 1..nr {
                let (w, l) = if reward(x, y1) > reward(x, y2) { (y1, y2) } else { (y2, y1) };
                pairs.push((x, w, l));
            }
        }
    }
    r.shuffle(&mut pairs);
    let split = pairs.len() * 6 / 10;
    let (train, held) = pairs.split_at(split);
    let cfg = MlpConfig { prompts: np + nr, hidden: 64, responses: 1, first_bias: true, scalar_head: true, depth: 2 };
    let encode = |ps: &[(usize, usize, usize)]| {
        let n = ps.len();
        let mut x = vec![0.0f32; 2 * n * (np + nr)];
        for (i, &(p, w, l)) in ps.iter().enumerate() {
            for (row, y) in [(i, w), (n + i, l)] {
                x[row * (np + nr) + p] = 1.0;
                x[row * (np + nr) + np + y] = 1.0;
            }
        }
        x
    };
    let params = mlp_params(&cfg, 5).unwrap();
    let model = Mlp::new(&gpu, &cfg, 2 * train.len(), &params).unwrap();
    model.set_inputs(&gpu, &encode(train), &vec![0; 2 * train.len()]).unwrap();
    let mut tr = RewardTrainer::new(&gpu, model, &OptimConfig { lr: 1e-2, ..Default::default() }).unwrap();
    tr.objective.set_last_from_mask(&gpu, &vec![1.0; 2 * train.len()]).unwrap();
    let first = pollster::block_on(tr.step(&gpu)).unwrap();
    let mut last = first.clone();
    for _ in 0..300 {
        last = pollster::block_on(tr.step(&gpu)).unwrap();
    }
    assert!(last.get("loss") < 0.5 * first.get("loss"), "BT loss {} -> {}", first.get("loss"), last.get("loss"));
    assert!(last.get("rewards/accuracies") > 0.95, "train accuracy {}", last.get("rewards/accuracies"));
    // held-out pairs through a second model with the trained parameters
    let trained = pollster::block_on(tr.model.download_params(&gpu)).unwrap();
    let eval_model = Mlp::new(&gpu, &cfg, 2 * held.len(), &trained).unwrap();
    eval_model.set_inputs(&gpu, &encode(held), &vec![0; 2 * held.len()]).unwrap();
    let ev = RewardTrainer::new(&gpu, eval_model, &OptimConfig::default()).unwrap();
    ev.objective.set_last_from_mask(&gpu, &vec![1.0; 2 * held.len()]).unwrap();
    let m = pollster::block_on(ev.evaluate(&gpu)).unwrap();
    assert!(m.get("rewards/accuracies") > 0.85, "held-out pairwise accuracy {}", m.get("rewards/accuracies"));
}

#[test]
fn should_round_trip_every_loss_config_through_serde() {
    for loss in all_losses() {
        let json = serde_json::to_string(&loss).unwrap();
        assert!(json.contains(&format!("\"loss_type\":\"{}\"", loss.name())), "{json}");
        let back: PreferenceLoss = serde_json::from_str(&json).unwrap();
        assert_eq!(back, loss);
    }
    let e = PreferenceLoss::Cdpo { beta: 0.1, label_smoothing: 0.7 }.validate().unwrap_err().to_string();
    assert!(e.contains("label_smoothing"), "{e}");
    let e =
        serde_json::from_str::<PreferenceLoss>(r#"{"loss_type":"flex-dpo","beta_pos":0.1}"#).unwrap_err().to_string();
    assert!(e.contains("beta_neg"), "{e}");
}
