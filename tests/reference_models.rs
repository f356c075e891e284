//! The CPU reference models (reference::gpt, reference::mlp) checked on their own, with no GPU: their backward
//! passes against central finite differences of their forward passes, over every parameter of tiny configs, and
//! their forward passes against independent f64 recomputations (log-softmax at the targets, ln V at init,
//! causality). The GPU models are later compared against these references, so this is where the gradients of
//! the whole models are first defined.
//!
//! Finite differences run the f32 model, with the loss summed in f64. Parameters are moved away from the init
//! (weights ~0.2 instead of 0.02) so gradients are O(0.01..1) and stand well above f32 rounding noise.

use dpo3d::model::config::{GptConfig, MlpConfig};
use dpo3d::model::init::{gpt_params, mlp_params};
use dpo3d::reference::gpt::{self, GptRef};
use dpo3d::reference::logprobs::log_softmax;
use dpo3d::reference::mlp::{self, MlpRef};
use dpo3d::rng::Rng;

fn randn(rng: &mut Rng, n: usize, std: f32) -> Vec<f32> {
    let mut v = vec![0.0; n];
    rng.fill_normal(&mut v, std);
    v
}

fn rand_ids(rng: &mut Rng, n: usize, below: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(below as u32)).collect()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Central difference of `loss` at every parameter.
fn finite_differences(params: &mut [f32], eps: f32, mut loss: impl FnMut(&[f32]) -> f64) -> Vec<f64> {
    let mut fd = vec![0.0f64; params.len()];
    for i in 0..params.len() {
        let x = params[i];
        params[i] = x + eps;
        let lp = loss(params);
        params[i] = x - eps;
        let lm = loss(params);
        params[i] = x;
        // divide by the perturbation actually applied (x +- eps rounds in f32)
        fd[i] = (lp - lm) / ((x + eps) as f64 - (x - eps) as f64);
    }
    fd
}

/// Compare analytic and finite-difference gradients: the relative L2 error of every tensor and of the whole
/// vector, and an elementwise check of `samples` indices (at least one in every tensor). Prints a table like
/// llm.c's test_gpt2 (OK / NOT OK per tensor) and panics on any failure. `skipped[i]` excludes index i.
#[allow(clippy::too_many_arguments)]
fn check_grads(
    what: &str,
    table: &[(String, usize, Vec<usize>)],
    analytic: &[f32],
    fd: &[f64],
    skipped: &[bool],
    tensor_tol: f64,
    total_tol: f64,
    atol: f64,
    rtol: f64,
    samples: usize,
    seed: u64,
) {
    let mut ok = true;
    let an: Vec<f64> = analytic.iter().map(|&x| x as f64).collect();
    let keep = |i: usize| !skipped[i];
    let diff: Vec<f64> = (0..an.len()).map(|i| if keep(i) { an[i] - fd[i] } else { 0.0 }).collect();
    let an_kept: Vec<f64> = (0..an.len()).map(|i| if keep(i) { an[i] } else { 0.0 }).collect();
    let total = norm(&diff) / norm(&an_kept).max(1e-12);
    println!(
        "{what}: whole gradient, {} elements ({} skipped at ReLU kinks): relative error {total:.2e}",
        an.len(),
        skipped.iter().filter(|&&s| s).count()
    );
    if total > total_tol {
        ok = false;
    }
    for (name, off, shape) in table {
        let n: usize = shape.iter().product();
        let r = *off..*off + n;
        let (d, a) = (norm(&diff[r.clone()]), norm(&an_kept[r.clone()]));
        // a tensor whose gradient is legitimately ~0 (nothing reaches it) passes on the absolute error
        let rel = if a > 1e-6 { d / a } else { d };
        let pass = rel <= tensor_tol;
        ok &= pass;
        println!("  {} {name:36} |grad| {a:9.3e}  rel err {rel:.2e}", if pass { "OK    " } else { "NOT OK" });
    }
    // elementwise on a random sample: one index in every tensor, then uniformly over the whole vector
    let mut rng = Rng::new(seed);
    let mut idx: Vec<usize> =
        table.iter().map(|(_, off, shape)| off + rng.below(shape.iter().product::<usize>() as u32) as usize).collect();
    while idx.len() < samples.max(table.len()) {
        idx.push(rng.below(an.len() as u32) as usize);
    }
    for i in idx.into_iter().filter(|&i| keep(i)) {
        let err = (an[i] - fd[i]).abs();
        if err > atol + rtol * fd[i].abs() {
            let name = &table.iter().rev().find(|(_, off, _)| *off <= i).unwrap().0;
            println!("  NOT OK element {i} ({name}): analytic {} finite difference {} ", an[i], fd[i]);
            ok = false;
        }
    }
    assert!(ok, "{what}: gradient check failed (see the table above)");
}

// ---------------------------------------------------------------- GPT

fn tiny_gpt(scalar_head: bool) -> GptConfig {
    GptConfig { vocab_size: 11, context: 5, layers: 2, heads: 2, width: 8, scalar_head }
}

/// The init moved to O(0.2) weights, LN weights around 1 and nonzero biases, so every path carries gradient.
fn perturbed_gpt(cfg: &GptConfig, seed: u64) -> GptRef {
    let mut m = GptRef::from_params(cfg, gpt_params(cfg, seed).unwrap());
    let mut rng = Rng::new(seed + 1000);
    for x in m.params.iter_mut() {
        *x += 0.2 * rng.normal();
    }
    m
}

fn gpt_loss(
    m: &GptRef,
    tokens: &[u32],
    targets: &[u32],
    coef: &[f32],
    dscalar: Option<&[f32]>,
    b: usize,
    t: usize,
) -> f64 {
    let a = m.forward(tokens, targets, b, t);
    let mut l: f64 = a.logps.iter().zip(coef).map(|(&x, &c)| x as f64 * c as f64).sum();
    if let (Some(s), Some(ds)) = (a.scalar.as_ref(), dscalar) {
        l += s.iter().zip(ds).map(|(&x, &c)| x as f64 * c as f64).sum::<f64>();
    }
    l
}

fn check_gpt_gradients(scalar_head: bool, seed: u64) {
    let cfg = tiny_gpt(scalar_head);
    let (b, t) = (2, 5);
    let mut m = perturbed_gpt(&cfg, seed);
    let mut rng = Rng::new(seed + 1);
    let tokens = rand_ids(&mut rng, b * t, cfg.vocab_size);
    let targets = rand_ids(&mut rng, b * t, cfg.vocab_size);
    let coef = randn(&mut rng, b * t, 1.0);
    let dscalar = if scalar_head { Some(randn(&mut rng, b * t, 1.0)) } else { None };
    let acts = m.forward(&tokens, &targets, b, t);
    let grads = m.backward(&acts, &tokens, &targets, &coef, dscalar.as_deref(), b, t);
    assert_eq!(grads.len(), cfg.num_params());

    let table = gpt::offsets(&cfg);
    let mut params = std::mem::take(&mut m.params);
    let fd = finite_differences(&mut params, 1e-2, |p| {
        let m = GptRef { cfg: cfg.clone(), params: p.to_vec() };
        gpt_loss(&m, &tokens, &targets, &coef, dscalar.as_deref(), b, t)
    });
    let skipped = vec![false; fd.len()];
    let what = format!("GPT V=11 T=5 L=2 NH=2 C=8 scalar_head={scalar_head}");
    check_grads(&what, &table, &grads, &fd, &skipped, 3e-3, 1e-3, 1e-3, 2e-2, 48, seed + 2);
}

#[test]
fn should_match_finite_differences_gpt_backward() {
    check_gpt_gradients(false, 1);
}

#[test]
fn should_match_finite_differences_gpt_backward_with_scalar_head() {
    check_gpt_gradients(true, 2);
}

#[test]
fn should_give_gpt_logps_equal_to_log_softmax_at_targets() {
    let cfg = GptConfig { vocab_size: 23, context: 9, layers: 2, heads: 2, width: 8, scalar_head: true };
    let (b, t) = (3, 7);
    let m = perturbed_gpt(&cfg, 3);
    let mut rng = Rng::new(4);
    let tokens = rand_ids(&mut rng, b * t, cfg.vocab_size);
    let targets = rand_ids(&mut rng, b * t, cfg.vocab_size);
    let a = m.forward(&tokens, &targets, b, t);
    let v = cfg.vocab_size;
    let mut ls = vec![0.0f32; b * t * v];
    log_softmax(&mut ls, &a.logits, b * t, v);
    for i in 0..b * t {
        let row = &a.logits[i * v..(i + 1) * v];
        // independent f64 log-softmax
        let mx = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
        let lse = mx + row.iter().map(|&x| (x as f64 - mx).exp()).sum::<f64>().ln();
        let want = row[targets[i] as usize] as f64 - lse;
        assert!((a.logps[i] as f64 - want).abs() < 1e-5, "logps[{i}] = {} want {want}", a.logps[i]);
        assert!((a.lse[i] as f64 - lse).abs() < 1e-5, "lse[{i}] = {} want {lse}", a.lse[i]);
        assert!((ls[i * v + targets[i] as usize] - a.logps[i]).abs() < 1e-5, "log_softmax disagrees at row {i}");
    }
    // scalar head = lnf @ score.weight^T
    let scorew = m.tensor("score.weight");
    let scalar = a.scalar.as_ref().unwrap();
    for (i, (&s, lnf)) in scalar.iter().zip(a.lnf.chunks(cfg.width)).enumerate() {
        let want: f64 = lnf.iter().zip(scorew).map(|(&x, &w)| x as f64 * w as f64).sum();
        assert!((s as f64 - want).abs() < 1e-5, "scalar[{i}] = {s} want {want}");
    }
}

#[test]
fn should_give_sft_loss_near_ln_v_at_init() {
    let cfg = GptConfig { vocab_size: 64, context: 16, layers: 2, heads: 4, width: 32, scalar_head: false };
    let (b, t) = (4, 12);
    let m = GptRef::from_params(&cfg, gpt_params(&cfg, 5).unwrap());
    let mut rng = Rng::new(6);
    let tokens = rand_ids(&mut rng, b * t, cfg.vocab_size);
    let targets = rand_ids(&mut rng, b * t, cfg.vocab_size);
    let mask: Vec<f32> = (0..b * t).map(|i| if i % 5 == 0 { 0.0 } else { 1.0 }).collect();
    let (loss, grads) = m.sft_loss_and_grads(&tokens, &targets, &mask, b, t);
    let ln_v = (cfg.vocab_size as f32).ln();
    assert!((loss - ln_v).abs() < 0.05, "SFT loss at init {loss}, want about ln V = {ln_v}");
    assert!(grads.iter().all(|g| g.is_finite()) && grads.iter().any(|&g| g != 0.0));

    // the convenience equals backward with dlogps = -mask / count
    let count: f32 = mask.iter().sum();
    let dlogps: Vec<f32> = mask.iter().map(|&x| -x / count).collect();
    let acts = m.forward(&tokens, &targets, b, t);
    let want = m.backward(&acts, &tokens, &targets, &dlogps, None, b, t);
    for (i, (g, w)) in grads.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-6 + 1e-4 * w.abs(), "grad {i}: {g} vs {w}");
    }
    // positions t..context of wpe are never read, so get exactly zero gradient
    let (_, wpe_off, _) = gpt::offsets(&cfg).into_iter().find(|(n, _, _)| n == "transformer.wpe.weight").unwrap();
    assert!(grads[wpe_off + t * cfg.width..wpe_off + cfg.context * cfg.width].iter().all(|&g| g == 0.0));
}

#[test]
fn should_keep_gpt_causal() {
    let cfg = GptConfig { vocab_size: 13, context: 8, layers: 2, heads: 2, width: 8, scalar_head: true };
    let (b, t) = (2, 8);
    let m = perturbed_gpt(&cfg, 7);
    let mut rng = Rng::new(8);
    let tokens = rand_ids(&mut rng, b * t, cfg.vocab_size);
    let targets = rand_ids(&mut rng, b * t, cfg.vocab_size);
    let a = m.forward(&tokens, &targets, b, t);
    // change the token at position 5 of sequence 1: nothing before it, and nothing in sequence 0, may move
    let mut tokens2 = tokens.clone();
    tokens2[t + 5] = (tokens2[t + 5] + 1) % cfg.vocab_size as u32;
    let a2 = m.forward(&tokens2, &targets, b, t);
    for i in 0..b * t {
        let changed = a.logps[i] != a2.logps[i];
        let may_change = i >= t + 5;
        assert!(!changed || may_change, "position {i} changed after editing a later token");
        if i == t + 5 {
            assert!(changed, "editing a token must change its own position's output");
        }
    }
}

#[test]
fn should_view_the_gpt_table_at_its_offsets() {
    // Scales and determinism of the initialisation itself: tests/model_init.rs.
    let cfg = GptConfig { vocab_size: 50, context: 16, layers: 4, heads: 2, width: 32, scalar_head: true };
    let m1 = GptRef::from_params(&cfg, gpt_params(&cfg, 9).unwrap());
    let table = gpt::offsets(&cfg);
    let (_, off, _) = &table[table.len() - 1];
    assert_eq!(off + cfg.width, cfg.num_params());
    assert_eq!(m1.views().layers[3].fcprojw.as_ptr(), m1.tensor("transformer.h.3.mlp.c_proj.weight").as_ptr());
}

// ---------------------------------------------------------------- MLP

struct MlpCase {
    prompts: Vec<u32>,
    targets: Vec<u32>,
    coef: Vec<f32>,
    dscalar: Option<Vec<f32>>,
}

fn mlp_loss(m: &MlpRef, c: &MlpCase) -> (f64, mlp::MlpActs) {
    let a = m.forward(&c.prompts, &c.targets);
    let mut l: f64 = a.logps.iter().zip(&c.coef).map(|(&x, &k)| x as f64 * k as f64).sum();
    if let (Some(s), Some(ds)) = (a.scalar.as_ref(), c.dscalar.as_ref()) {
        l += s.iter().zip(ds).map(|(&x, &k)| x as f64 * k as f64).sum::<f64>();
    }
    (l, a)
}

fn check_mlp_gradients(first_bias: bool, scalar_head: bool, seed: u64) {
    check_mlp_gradients_depth(first_bias, scalar_head, seed, 2)
}

fn check_mlp_gradients_depth(first_bias: bool, scalar_head: bool, seed: u64, depth: usize) {
    let cfg = MlpConfig { prompts: 4, hidden: 16, responses: 10, first_bias, scalar_head, depth };
    let m = MlpRef::from_params(&cfg, mlp_params(&cfg, seed).unwrap());
    let mut rng = Rng::new(seed + 1);
    // every prompt at least once, some twice, so fc1 columns accumulate over rows
    let prompts: Vec<u32> = vec![0, 1, 2, 3, 2, 0, 1];
    let b = prompts.len();
    let case = MlpCase {
        targets: rand_ids(&mut rng, b, cfg.responses),
        coef: randn(&mut rng, b, 1.0),
        dscalar: if scalar_head { Some(randn(&mut rng, b, 1.0)) } else { None },
        prompts,
    };
    let acts = m.forward(&case.prompts, &case.targets);
    let grads = m.backward(&acts, &case.prompts, &case.targets, &case.coef, case.dscalar.as_deref());
    assert_eq!(grads.len(), mlp::num_params(&cfg));

    // The MLP is piecewise linear: a perturbation that flips a ReLU makes the central difference meaningless, so
    // skip the indices where any pre-activation changes sign between the two evaluations. Deeper nets have more
    // pre-activations near 0, so they take a smaller step.
    let eps = if depth == 2 { 1e-2f32 } else { 3e-3 };
    let mut params = m.params.clone();
    let mut fd = vec![0.0f64; params.len()];
    let mut skipped = vec![false; params.len()];
    for i in 0..params.len() {
        let x = params[i];
        params[i] = x + eps;
        let (lp, ap) = mlp_loss(&MlpRef { cfg: cfg.clone(), params: params.clone() }, &case);
        params[i] = x - eps;
        let (lm, am) = mlp_loss(&MlpRef { cfg: cfg.clone(), params: params.clone() }, &case);
        params[i] = x;
        fd[i] = (lp - lm) / ((x + eps) as f64 - (x - eps) as f64);
        let flips = |u: &[f32], v: &[f32]| u.iter().zip(v).any(|(a, b)| (*a > 0.0) != (*b > 0.0));
        skipped[i] = ap.hpre.iter().zip(&am.hpre).any(|(a, b)| flips(a, b));
    }
    let n_skipped = skipped.iter().filter(|&&s| s).count();
    assert!(n_skipped * 20 < params.len(), "{n_skipped} of {} parameters sit at ReLU kinks", params.len());
    let what = format!("MLP P=4 H=16 R=10 depth={depth} first_bias={first_bias} scalar_head={scalar_head}");
    // The smaller step of deeper nets leaves more float32 rounding in the differences: a looser per-tensor bound.
    let tensor_tol = if depth == 2 { 3e-3 } else { 6e-3 };
    check_grads(&what, &mlp::offsets(&cfg), &grads, &fd, &skipped, tensor_tol, 1e-3, 1e-3, 2e-2, 48, seed + 2);
}

#[test]
fn should_match_finite_differences_mlp_backward() {
    check_mlp_gradients(false, false, 11);
}

#[test]
fn should_match_finite_differences_mlp_backward_with_first_bias_and_scalar_head() {
    check_mlp_gradients(true, true, 12);
}

#[test]
fn should_match_finite_differences_mlp_backward_with_scalar_head_only() {
    check_mlp_gradients(false, true, 13);
}

#[test]
fn should_match_finite_differences_mlp_backward_at_depths_1_3_and_4() {
    check_mlp_gradients_depth(true, false, 15, 3);
    check_mlp_gradients_depth(false, true, 16, 4);
    check_mlp_gradients_depth(true, true, 17, 1);
}

#[test]
fn should_give_mlp_probs_as_row_softmax_per_prompt() {
    let cfg = MlpConfig { prompts: 4, hidden: 32, responses: 10, first_bias: true, scalar_head: false, depth: 2 };
    let m = MlpRef::from_params(&cfg, mlp_params(&cfg, 14).unwrap());
    let probs = m.probs();
    assert_eq!(probs.len(), cfg.prompts * cfg.responses);
    for p in 0..cfg.prompts {
        let row = &probs[p * cfg.responses..(p + 1) * cfg.responses];
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        // logps of forward agree with the probabilities
        let targets: Vec<u32> = (0..cfg.responses as u32).collect();
        let a = m.forward(&vec![p as u32; cfg.responses], &targets);
        for (r, (lp, pr)) in a.logps.iter().zip(row).enumerate() {
            assert!((lp.exp() - pr).abs() < 1e-6, "prompt {p} response {r}");
        }
    }
    // PyTorch nn.Linear init bounds: |fc1| <= 1/sqrt(P), |fc2| <= 1/sqrt(H)
    assert!(m.tensor("fc1.weight").iter().all(|x| x.abs() <= 0.5));
    assert!(m.tensor("fc2.weight").iter().all(|x| x.abs() <= 1.0 / (32.0f32).sqrt()));
    assert!(m.tensor("fc1.weight").iter().any(|x| x.abs() > 0.4));
}
