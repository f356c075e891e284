//! dpo3d's main job: the paper's toy study (section 3.2 of "3D-Properties", ICLR 2025), trained on the GPU.
//!
//! With no arguments it runs the full study with the defaults docs/paper.md gives (hidden 256, Adam lr 1e-3,
//! beta 0.1, full batch, 2000 epochs, 5 seeds): DPO, Flex-DPO (beta_neg 0.08 and 0.05), SFT-DPO (gamma 0.1), IPO,
//! SLiC and RM+PPO on scenario 1, and DPO on all four scenarios; then writes metrics.jsonl, probs.json, figures and report.md.
//! Flags select single runs and smaller budgets:
//!
//!   cargo run --release --example toy3d -- --loss flex-dpo --beta-neg 0.05 --scenario 1 --seeds 2 --epochs 500
//!
//! Runs are independent, so they are spread over worker threads, each with its own GPU device.

mod figures;
mod report;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Parser;
use dpo3d::objectives::PreferenceLoss;
use dpo3d::toy::{session::sft_phase_group, ToyConfig, ToyMethod, ToyRecord, ToySession};
use dpo3d::train::OptimizerKind;
use dpo3d::Gpu;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser, Debug, Clone)]
#[command(about = "The 3D-properties toy study: DPO and its fixes vs RM+PPO on the paper's 4-prompt, 10-response MLP")]
struct Args {
    /// Run one method instead of the full study: dpo, flex-dpo, sft-dpo, ipo, slic, hinge, cdpo, robust, dpop,
    /// simpo, ppo.
    #[arg(long)]
    loss: Option<String>,
    /// DPO beta (beta_pos for Flex-DPO).
    #[arg(long, default_value_t = 0.1)]
    beta: f32,
    /// Flex-DPO's beta on the rejected log-ratio.
    #[arg(long, default_value_t = 0.08)]
    beta_neg: f32,
    /// SFT-DPO's NLL weight.
    #[arg(long, default_value_t = 0.1)]
    gamma: f32,
    /// IPO's eta; SLiC's NLL weight.
    #[arg(long, default_value_t = 0.1)]
    eta: f32,
    /// SLiC's margin.
    #[arg(long, default_value_t = 5.0)]
    delta: f32,
    /// cDPO / robust label smoothing.
    #[arg(long, default_value_t = 0.1)]
    label_smoothing: f32,
    /// DPOP's lambda.
    #[arg(long, default_value_t = 5.0)]
    lambda: f32,
    /// SimPO's target margin.
    #[arg(long, default_value_t = 0.5)]
    margin: f32,
    /// PPO's KL coefficient (the RLHF objective's beta).
    #[arg(long, default_value_t = 0.1)]
    kl_coef: f32,
    /// Data scenario 1-4 (single-method runs; the full study uses 1, and 1-4 for DPO).
    #[arg(long, default_value_t = 1)]
    scenario: u8,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seeds per configuration.
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    #[arg(long, default_value_t = 2000)]
    epochs: usize,
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// Hidden layers (the paper's MLP has 2).
    #[arg(long, default_value_t = 2)]
    depth: usize,
    /// adam or sgd.
    #[arg(long, default_value = "adam")]
    optimizer: String,
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    /// Decoupled weight decay (AdamW with --optimizer adam).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// SGD's momentum.
    #[arg(long, default_value_t = 0.0)]
    momentum: f32,
    /// Scale of the initial parameters (1: PyTorch's default init).
    #[arg(long, default_value_t = 1.0)]
    init_scale: f32,
    /// Give the first layer a bias (the paper's re-implementation has none).
    #[arg(long)]
    first_bias: bool,
    #[arg(long, default_value_t = 10)]
    log_every: usize,
    /// Epochs (PPO steps: a rollout of 16 samples per prompt plus 4 PPO epochs each) of the RM+PPO runs, capped by
    /// --epochs. PPO converges within ~100 steps on the toy and each step costs several DPO steps, so the study
    /// runs it shorter than the DPO family; the report says so.
    #[arg(long, default_value_t = 300)]
    ppo_epochs: usize,
    /// SFT-phase epochs (fit to the scenario's target rows).
    #[arg(long, default_value_t = 400)]
    sft_epochs: usize,
    /// SFT-phase learning rate (Adam).
    #[arg(long, default_value_t = 1e-2)]
    sft_lr: f32,
    #[arg(long, default_value = "runs/toy3d")]
    out: PathBuf,
    /// Worker threads (each opens its own GPU device); default: available cores, at most 4.
    #[arg(long)]
    threads: Option<usize>,
    /// Skip the token-level toy (a tiny GPT whose chosen and rejected responses share tokens).
    #[arg(long)]
    no_token_toy: bool,
    /// Seeds of the token-level toy (DPO, Flex-DPO, SFT-DPO each).
    #[arg(long, default_value_t = 3)]
    token_seeds: u64,
    /// Epochs of the token-level toy.
    #[arg(long, default_value_t = 200)]
    token_epochs: usize,
    /// Skip the figures and the report (metrics.jsonl and probs.json only).
    #[arg(long)]
    no_report: bool,
    /// Leave RM+PPO out of the full study (the DPO family only; `scripts/bench-vs-torch` times this part against
    /// the same runs in PyTorch).
    #[arg(long)]
    no_ppo: bool,
    /// Train nothing: rebuild figures and one report into --out from earlier studies' outputs (dir1:dir2:...).
    #[arg(long)]
    replay: Option<String>,
}

/// One configuration of the study (run once per seed).
#[derive(Clone, Debug)]
pub struct StudyConfig {
    /// e.g. "flex-dpo(beta_neg=0.08)"
    pub label: String,
    pub method: ToyMethod,
    pub scenario: u8,
}

fn loss_from(name: &str, a: &Args) -> Result<ToyMethod, String> {
    let loss = match name {
        "dpo" => PreferenceLoss::Dpo { beta: a.beta },
        "flex-dpo" => PreferenceLoss::FlexDpo { beta_pos: a.beta, beta_neg: a.beta_neg },
        "sft-dpo" => PreferenceLoss::SftDpo { beta: a.beta, gamma: a.gamma },
        "ipo" => PreferenceLoss::Ipo { eta: a.eta },
        "slic" => PreferenceLoss::Slic { delta: a.delta, eta: a.eta },
        "hinge" => PreferenceLoss::Hinge { beta: a.beta },
        "cdpo" => PreferenceLoss::Cdpo { beta: a.beta, label_smoothing: a.label_smoothing },
        "robust" => PreferenceLoss::Robust { beta: a.beta, label_smoothing: a.label_smoothing },
        "dpop" => PreferenceLoss::Dpop { beta: a.beta, lambda: a.lambda },
        "simpo" => PreferenceLoss::Simpo { beta: a.beta, margin: a.margin },
        "ppo" => return Ok(ToyMethod::Ppo { kl_coef: a.kl_coef, rm_epochs: 300, samples_per_prompt: 16 }),
        other => {
            return Err(format!(
            "unknown --loss {other:?}; one of dpo, flex-dpo, sft-dpo, ipo, slic, hinge, cdpo, robust, dpop, simpo, ppo"
        ))
        }
    };
    Ok(ToyMethod::Preference { loss })
}

fn label(m: &ToyMethod) -> String {
    match m {
        ToyMethod::Preference { loss } => match loss {
            PreferenceLoss::FlexDpo { beta_neg, .. } => format!("flex-dpo(beta_neg={beta_neg})"),
            PreferenceLoss::SftDpo { gamma, .. } => format!("sft-dpo(gamma={gamma})"),
            other => other.name().to_string(),
        },
        ToyMethod::Ppo { .. } => "rm+ppo".to_string(),
    }
}

fn study(a: &Args) -> Result<Vec<StudyConfig>, String> {
    if let Some(name) = &a.loss {
        let method = loss_from(name, a)?;
        return Ok(vec![StudyConfig { label: label(&method), method, scenario: a.scenario }]);
    }
    let mut v = Vec::new();
    let mut add = |method: ToyMethod, scenario: u8| v.push(StudyConfig { label: label(&method), method, scenario });
    let p = |loss| ToyMethod::Preference { loss };
    add(p(PreferenceLoss::Dpo { beta: a.beta }), 1);
    add(p(PreferenceLoss::FlexDpo { beta_pos: a.beta, beta_neg: 0.08 }), 1);
    add(p(PreferenceLoss::FlexDpo { beta_pos: a.beta, beta_neg: 0.05 }), 1);
    add(p(PreferenceLoss::SftDpo { beta: a.beta, gamma: 0.1 }), 1);
    add(p(PreferenceLoss::Ipo { eta: 0.1 }), 1);
    add(p(PreferenceLoss::Slic { delta: 5.0, eta: 0.1 }), 1);
    if !a.no_ppo {
        add(ToyMethod::Ppo { kl_coef: a.kl_coef, rm_epochs: 300, samples_per_prompt: 16 }, 1);
    }
    for s in 2..=4 {
        add(p(PreferenceLoss::Dpo { beta: a.beta }), s);
    }
    Ok(v)
}

/// Everything the report needs about how the study ran.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StudyMeta {
    pub device: String,
    pub backend: String,
    pub threads: usize,
    pub seconds: f64,
    pub epochs: usize,
    pub seeds: Vec<u64>,
    pub hidden: usize,
    pub optimizer: String,
    pub lr: f32,
    pub configs: Vec<(String, u8)>,
}

/// (run name -> label, scenario) and snapshot matrices per run.
pub struct RunOutput {
    pub label: String,
    pub scenario: u8,
    pub seed: u64,
    pub records: Vec<ToyRecord>,
    pub sft_probs: Vec<f32>,
    pub snapshots: Vec<(usize, Vec<f32>)>,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    dpo3d::checkpoint::write_atomic(path, bytes).map_err(|e| e.to_string())
}

/// The token-level toy: DPO, Flex-DPO and SFT-DPO on a tiny GPT whose chosen and rejected responses share tokens,
/// one SFT (pi0) per seed shared by the three losses; runs spread over the worker threads like the MLP study.
fn token_toy(a: &Args, threads: usize) -> Result<Vec<RunOutput>, String> {
    use dpo3d::toy::token::{run_token_toy_from, token_sft_phase, token_study_configs};
    let cfgs = token_study_configs(a.token_seeds, a.token_epochs);
    println!("token-level toy: {} runs x {} epochs", cfgs.len(), a.token_epochs);
    let jobs = Arc::new(Mutex::new(cfgs.into_iter().enumerate().collect::<VecDeque<_>>()));
    let pi0: Arc<Mutex<BTreeMap<u64, Arc<Vec<f32>>>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let out: Arc<Mutex<Vec<(usize, RunOutput)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for _ in 0..threads {
        let (jobs, pi0, out) = (jobs.clone(), pi0.clone(), out.clone());
        handles.push(std::thread::spawn(move || -> Result<(), String> {
            let gpu = Gpu::new_blocking().map_err(|e| e.to_string())?;
            loop {
                let Some((i, cfg)) = jobs.lock().unwrap().pop_front() else { return Ok(()) };
                let cached = pi0.lock().unwrap().get(&cfg.seed).cloned();
                let p = match cached {
                    Some(p) => p,
                    None => {
                        let p = Arc::new(pollster::block_on(token_sft_phase(&gpu, &cfg)).map_err(|e| e.to_string())?);
                        pi0.lock().unwrap().insert(cfg.seed, p.clone());
                        p
                    }
                };
                let records = pollster::block_on(run_token_toy_from(&gpu, &cfg, &p))
                    .map_err(|e| format!("{}: {e}", cfg.run_name()))?;
                let label = format!("token-{}", cfg.loss.name());
                out.lock().unwrap().push((
                    i,
                    RunOutput {
                        label,
                        scenario: 0,
                        seed: cfg.seed,
                        records,
                        sft_probs: Vec::new(),
                        snapshots: Vec::new(),
                    },
                ));
            }
        }));
    }
    for h in handles {
        h.join().map_err(|_| "a worker thread panicked".to_string())??;
    }
    let mut v = Arc::try_unwrap(out).map_err(|_| "results still shared")?.into_inner().unwrap();
    v.sort_by_key(|(i, _)| *i);
    Ok(v.into_iter().map(|(_, r)| r).collect())
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("toy3d: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), String> {
    let a = Args::parse();
    if let Some(dirs) = &a.replay {
        return report::replay(dirs, &a.out);
    }
    let optimizer = match a.optimizer.as_str() {
        "adam" => OptimizerKind::Adam,
        "sgd" => OptimizerKind::Sgd,
        o => return Err(format!("--optimizer must be adam or sgd, got {o:?}")),
    };
    let configs = study(&a)?;
    let seeds: Vec<u64> = (a.seed..a.seed + a.seeds).collect();
    let base = |c: &StudyConfig, seed: u64| ToyConfig {
        run: format!("{}-s{}-seed{}", c.label, c.scenario, seed),
        method: c.method.clone(),
        scenario: c.scenario,
        seed,
        hidden: a.hidden,
        depth: a.depth,
        first_bias: a.first_bias,
        init_scale: a.init_scale,
        optimizer,
        lr: a.lr,
        weight_decay: a.weight_decay,
        momentum: a.momentum,
        epochs: if matches!(c.method, ToyMethod::Ppo { .. }) { a.epochs.min(a.ppo_epochs) } else { a.epochs },
        log_every: a.log_every,
        sft_epochs: a.sft_epochs,
        sft_lr: a.sft_lr,
    };
    for c in &configs {
        base(c, 0).validate().map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(&a.out).map_err(|e| format!("cannot create {}: {e}", a.out.display()))?;
    let probe = Gpu::new_blocking().map_err(|e| e.to_string())?;
    let threads =
        a.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(4)).max(1);
    println!(
        "dpo3d toy3d on {} ({}), {} threads: {} configs x {} seeds x {} epochs -> {}",
        probe.info.name,
        probe.info.backend,
        threads,
        configs.len(),
        seeds.len(),
        a.epochs,
        a.out.display()
    );
    drop(probe);

    // Every run: (config index, ToyConfig).
    let all: Vec<(usize, ToyConfig)> =
        configs.iter().enumerate().flat_map(|(ci, c)| seeds.iter().map(move |&s| (ci, base(c, s)))).collect();
    let total_epochs: u64 = all.iter().map(|(_, c)| c.epochs as u64).sum();
    let bar = ProgressBar::new(total_epochs);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} epochs  {msg}")
            .unwrap()
            .progress_chars("=> "),
    );
    let t0 = Instant::now();

    // Phase 1: the SFT phases (pi0), one per (scenario, seed), trained as replicas, split over the threads.
    bar.set_message("SFT phases");
    let mut keys: Vec<(u8, u64)> = all.iter().map(|(_, c)| (c.scenario, c.seed)).collect();
    keys.sort();
    keys.dedup();
    let key_cfgs: Vec<ToyConfig> =
        keys.iter().map(|&(sc, seed)| ToyConfig { scenario: sc, seed, ..all[0].1.clone() }).collect();
    let chunk = key_cfgs.len().div_ceil(threads).max(1);
    // (scenario, seed) -> (SFT parameters, (P, R) probabilities)
    type SftOut = ((u8, u64), (Vec<f32>, Vec<f32>));
    let sft: BTreeMap<(u8, u64), (Vec<f32>, Vec<f32>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = key_cfgs
            .chunks(chunk)
            .map(|cfgs| {
                scope.spawn(move || -> Result<Vec<SftOut>, String> {
                    let gpu = Gpu::new_blocking().map_err(|e| e.to_string())?;
                    let out = pollster::block_on(sft_phase_group(&gpu, cfgs)).map_err(|e| e.to_string())?;
                    Ok(cfgs.iter().map(|c| (c.scenario, c.seed)).zip(out).collect())
                })
            })
            .collect();
        let mut m = BTreeMap::new();
        for h in handles {
            m.extend(h.join().map_err(|_| "an SFT thread panicked".to_string())??);
        }
        Ok::<_, String>(m)
    })?;

    let sft_seconds = t0.elapsed().as_secs_f64();
    // Phase 2: training jobs. Runs of the same method train together as replicas of one model (5 seeds; DPO's
    // four scenarios too); RM+PPO runs one per job. Longest jobs first, spread over the worker threads.
    let mut groups: Vec<Vec<(usize, ToyConfig)>> = Vec::new();
    for (ci, c) in &all {
        let together = |g: &Vec<(usize, ToyConfig)>| {
            !matches!(c.method, ToyMethod::Ppo { .. }) && g[0].1.method == c.method && g[0].1.epochs == c.epochs
        };
        match groups.iter_mut().find(|g| together(g)) {
            Some(g) => g.push((*ci, c.clone())),
            None => groups.push(vec![(*ci, c.clone())]),
        }
    }
    // Cost per epoch, measured on lavapipe: an RM+PPO step costs ~10 preference steps; replicas add ~1/4 each.
    let cost = |g: &Vec<(usize, ToyConfig)>| {
        let per = if matches!(g[0].1.method, ToyMethod::Ppo { .. }) { 10.0 } else { 1.0 + 0.25 * g.len() as f64 };
        per * g[0].1.epochs as f64
    };
    groups.sort_by(|a, b| cost(b).total_cmp(&cost(a)));
    let jobs = Arc::new(Mutex::new(groups.into_iter().collect::<VecDeque<_>>()));
    let sft = Arc::new(sft);
    let results: Arc<Mutex<Vec<(usize, RunOutput)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for _ in 0..threads {
        let (jobs, sft, results, bar) = (jobs.clone(), sft.clone(), results.clone(), bar.clone());
        let labels: Vec<String> = configs.iter().map(|c| c.label.clone()).collect();
        handles.push(std::thread::spawn(move || -> Result<(), String> {
            let gpu = Gpu::new_blocking().map_err(|e| e.to_string())?;
            loop {
                let Some(group) = jobs.lock().unwrap().pop_front() else { return Ok(()) };
                let cfgs: Vec<ToyConfig> = group.iter().map(|(_, c)| c.clone()).collect();
                let name = format!("{} x{}", labels[group[0].0], cfgs.len());
                let pi0: Vec<_> = cfgs.iter().map(|c| sft[&(c.scenario, c.seed)].clone()).collect();
                let mut session =
                    pollster::block_on(ToySession::group(&gpu, &cfgs, pi0)).map_err(|e| format!("{name}: {e}"))?;
                bar.set_message(name.clone());
                let mut records = Vec::new();
                let epochs = session.cfg.epochs;
                while !session.finished() {
                    let chunk = 100.min(epochs - session.epoch);
                    records
                        .extend(pollster::block_on(session.advance(&gpu, chunk)).map_err(|e| format!("{name}: {e}"))?);
                    bar.inc((chunk * cfgs.len()) as u64);
                }
                let mut out = results.lock().unwrap();
                for ((ci, cfg), m) in group.iter().zip(&session.members) {
                    let run = cfg.run_name();
                    out.push((
                        *ci,
                        RunOutput {
                            label: labels[*ci].clone(),
                            scenario: cfg.scenario,
                            seed: cfg.seed,
                            records: records.iter().filter(|r| r.run == run).cloned().collect(),
                            sft_probs: m.sft_probs.clone(),
                            snapshots: m.snapshots.clone(),
                        },
                    ));
                }
            }
        }));
    }
    for h in handles {
        h.join().map_err(|_| "a worker thread panicked".to_string())??;
    }
    bar.finish_with_message("done");
    let mut results = Arc::try_unwrap(results).map_err(|_| "results still shared")?.into_inner().unwrap();
    results.sort_by_key(|(ci, r)| (*ci, r.seed));
    let mut runs: Vec<RunOutput> = results.into_iter().map(|(_, r)| r).collect();
    if a.loss.is_none() && !a.no_token_toy && a.token_seeds > 0 {
        runs.extend(token_toy(&a, threads)?);
    }
    let seconds = t0.elapsed().as_secs_f64();

    // metrics.jsonl: one object per logged epoch per run.
    let mut jsonl = String::new();
    for r in &runs {
        for rec in &r.records {
            jsonl.push_str(&serde_json::to_string(rec).map_err(|e| e.to_string())?);
            jsonl.push('\n');
        }
    }
    write_atomic(&a.out.join("metrics.jsonl"), jsonl.as_bytes())?;
    // kernels.json: which GEMM kernel each product shape ran with on this adapter (chosen by measurement and
    // cached per adapter; see dpo3d::gpu::tune), saved with the run so it can be reproduced with DPO3D_KERNELS.
    {
        let gpu = Gpu::new_blocking().map_err(|e| e.to_string())?;
        let used = dpo3d::gpu::tune::used_choices(&gpu.tuner.adapter_key);
        let kernels = serde_json::json!({ "adapter": gpu.tuner.adapter_key, "choices": used });
        let json = serde_json::to_string_pretty(&kernels).map_err(|e| e.to_string())?;
        write_atomic(&a.out.join("kernels.json"), json.as_bytes())?;
    }
    // probs.json: run -> {"sft": P x R, "<epoch>": P x R}
    let mut probs = serde_json::Map::new();
    for r in runs.iter().filter(|r| !r.sft_probs.is_empty()) {
        let rows = |v: &[f32]| {
            serde_json::Value::from(v.chunks(dpo3d::toy::RESPONSES).map(|c| c.to_vec()).collect::<Vec<_>>())
        };
        let mut m = serde_json::Map::new();
        m.insert("sft".into(), rows(&r.sft_probs));
        for (e, p) in &r.snapshots {
            m.insert(e.to_string(), rows(p));
        }
        probs.insert(r.records.first().map(|x| x.run.clone()).unwrap_or_default(), serde_json::Value::Object(m));
    }
    write_atomic(
        &a.out.join("probs.json"),
        serde_json::to_string_pretty(&probs).map_err(|e| e.to_string())?.as_bytes(),
    )?;

    let gpu = Gpu::new_blocking().map_err(|e| e.to_string())?;
    let meta = StudyMeta {
        device: gpu.info.name.clone(),
        backend: gpu.info.backend.clone(),
        threads,
        seconds,
        epochs: a.epochs,
        seeds: seeds.clone(),
        hidden: a.hidden,
        optimizer: a.optimizer.clone(),
        lr: a.lr,
        configs: configs.iter().map(|c| (c.label.clone(), c.scenario)).collect(),
    };
    write_atomic(
        &a.out.join("study.json"),
        serde_json::to_string_pretty(&meta).map_err(|e| e.to_string())?.as_bytes(),
    )?;
    println!("trained {} runs in {:.1} s (SFT phases {:.1} s)", runs.len(), seconds, sft_seconds);
    if !a.no_report {
        figures::write_all(&a.out, &runs).map_err(|e| format!("figures: {e}"))?;
        report::write_report(&a.out, &runs, &meta).map_err(|e| format!("report: {e}"))?;
        println!("wrote {}", a.out.join("report.md").display());
    }
    Ok(())
}
