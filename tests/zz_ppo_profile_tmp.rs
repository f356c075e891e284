mod common;
use common::*;
use dpo3d::gpu::{Plan, Tensor};
use dpo3d::model::{Mlp, MlpConfig, Policy};
use dpo3d::reference::mlp::MlpRef;
use dpo3d::ops::elementwise;
use std::time::Instant;

fn time(gpu: &dpo3d::Gpu, what: &str, plans: &[&Plan], reps: usize) {
    dpo3d::gpu::submit_all(gpu, plans); gpu.wait();
    let t0 = Instant::now();
    for _ in 0..reps { dpo3d::gpu::submit_all(gpu, plans); }
    gpu.wait();
    let n: usize = plans.iter().map(|p| p.len()).sum();
    let dt = t0.elapsed().as_secs_f64() / reps as f64;
    eprintln!("{what}: {n} dispatches, {:.3} ms/submit, {:.3} ms/dispatch", dt * 1e3, dt * 1e3 / n as f64);
}

#[test]
fn profile() {
    let gpu = gpu();
    let cfg = MlpConfig { prompts: 4, hidden: 32, responses: 10, first_bias: false, scalar_head: false };
    let p = MlpRef::init(&cfg, 3).params;
    let m = Mlp::new(&gpu, &cfg, 256, &p).unwrap();
    time(&gpu, "mlp forward", &[&m.forward], 20);
    time(&gpu, "mlp backward", &[&m.backward], 20);
    let t = Tensor::zeros(&gpu, "x", 64).unwrap();
    let mut fills = Plan::new();
    for _ in 0..50 { fills.push(elementwise::fill(&gpu, &t, 0.0)); }
    time(&gpu, "50 tiny fills", &[&fills], 10);
    let mut one = Plan::new();
    one.push(elementwise::fill(&gpu, &t, 0.0));
    time(&gpu, "1 tiny fill", &[&one], 50);
    for d in &m.forward.dispatches { let _ = d; }
    for (i, _) in m.backward.dispatches.iter().enumerate() { let _ = i; }
    let mut opt = dpo3d::train::Optimizer::new(&gpu, m.params(), m.grads(), &Default::default()).unwrap();
    opt.prepare(&gpu);
    time(&gpu, "optimizer", &[&opt.plan], 20);
}

#[test]
fn profile_ops() {
    use dpo3d::ops::{matmul, logprobs};
    let gpu = gpu();
    let z = |n: usize| Tensor::zeros(&gpu, "z", n).unwrap();
    let b = 256;
    let (x, w1, h) = (z(b * 4), z(32 * 4), z(b * 32));
    let (w2, b2, h2) = (z(32 * 32), z(32), z(b * 32));
    let (w3, b3, lg) = (z(10 * 32), z(10), z(b * 10));
    let (lp, lse, tg, ls) = (z(b), z(b), z(b), z(b * 10));
    let one = |d| { let mut p = Plan::new(); p.push(d); p };
    time(&gpu, "mm 4->32", &[&one(matmul::matmul_forward(&gpu, &h, &x, &w1, None, b, 4, 32))], 20);
    time(&gpu, "mm 32->32", &[&one(matmul::matmul_forward(&gpu, &h2, &h, &w2, Some(&b2), b, 32, 32))], 20);
    time(&gpu, "mm 32->10", &[&one(matmul::matmul_forward(&gpu, &lg, &h2, &w3, Some(&b3), b, 32, 10))], 20);
    time(&gpu, "logprobs fwd", &[&one(logprobs::logprobs_forward(&gpu, &lp, &lse, &lg, &tg, b, 10))], 20);
    time(&gpu, "log_softmax", &[&one(logprobs::log_softmax(&gpu, &ls, &lg, b, 10))], 20);
}

#[test]
fn profile_mine() {
    use dpo3d::ops::{ppo, sampling};
    let gpu = gpu();
    let z = |n: usize| Tensor::zeros(&gpu, "z", n).unwrap();
    let one = |d| { let mut p = Plan::new(); p.push(d); p };
    for b in [64usize, 256] {
        let lg = Tensor::from_f32(&gpu, "lg", &randn(1, b * 10, 1.0)).unwrap();
        let (out, rng, ent) = (z(b), z(2), z(b));
        eprintln!("B = {b}");
        time(&gpu, "sample", &[&one(sampling::sample_categorical(&gpu, &out, &lg, &rng, b, 10, 10, 0, 1.0, 0, 0))], 20);
        time(&gpu, "sample topk 3", &[&one(sampling::sample_categorical(&gpu, &out, &lg, &rng, b, 10, 10, 0, 1.0, 3, 0))], 20);
        time(&gpu, "entropy", &[&one(ppo::token_entropy(&gpu, &ent, &lg, b, 10))], 20);
        let (roll, ranks, st, dl, dv, lp, v) = (z(b * 8), z(4 * b), z(8 * 7), z(b), z(b), z(b), z(b));
        let p = ppo::PpoParams { b: b as u32, t: 1, mb_size: b as u32, ..Default::default() };
        time(&gpu, "loss", &[&one(ppo::ppo_loss(&gpu, &dl, &dv, &st, &lp, &v, &roll, &ranks, &ent, &p))], 20);
        time(&gpu, "ranks", &[&one(sampling::minibatch_ranks(&gpu, &ranks, &rng, b, 0))], 20);
        time(&gpu, "whiten", &[&one(ppo::masked_whiten(&gpu, &roll, 5, true, &p))], 20);
    }
}
