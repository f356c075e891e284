//! toy3d-sweep: how robust are the toy's 3D-properties? A sensitivity map over the toy's free choices (learning rate,
//! optimizer, width, depth, initialisation scale, first-layer bias, beta, Flex-DPO's beta_neg, the SFT phase), for DPO and
//! its two fixes (Flex-DPO, SFT-DPO), several seeds per cell, every cell from the same base point (the study's
//! defaults) with one or two factors changed.
//!
//!   cargo run --release --example toy3d_sweep -- --out runs/toy3d-sweep      # (./scripts/toy3d-sweep)
//!
//! Each cell trains its runs as replicas of one model (`ToySession::group`: DPO's 4 scenarios x seeds together, each
//! fix's seeds together), judges every run with the toy study's own criteria (report.rs), and writes
//! DIR/cells/<cell>.json atomically; cells already there are skipped, so an interrupted sweep resumes. Then
//! DIR/report.md and DIR/figures/*.svg are written from all the cells in DIR (`--report-only` does only that).

#[allow(dead_code)]
#[path = "../toy3d/stats.rs"]
mod stats;

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
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug, Clone)]
#[command(about = "Sensitivity map of the toy's 3D-properties over its free choices (DPO, Flex-DPO, SFT-DPO)")]
struct Args {
    #[arg(long, default_value = "runs/toy3d-sweep")]
    out: PathBuf,
    /// Seeds per cell and method.
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// Preference epochs per run (the SFT phase comes first).
    #[arg(long, default_value_t = 2000)]
    epochs: usize,
    /// Only these slices (comma-separated: base, lr, optimizer, hidden, depth, init, bias, beta, flex, sft).
    #[arg(long)]
    slices: Option<String>,
    /// Worker threads (each opens its own GPU device); default: available cores, at most 4.
    #[arg(long)]
    threads: Option<usize>,
    /// A miniature for tests: 2 seeds, 60 epochs, SFT 40 epochs, widths 16-32, a few cells.
    #[arg(long)]
    quick: bool,
    /// Train nothing; rebuild report.md and the figures from DIR/cells.
    #[arg(long)]
    report_only: bool,
}

/// The toy's free choices; `Knobs::default()` is the study's base point (and fills fields an older cell file lacks).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Knobs {
    pub lr: f32,
    /// "adam", "adamw" or "sgd"
    pub optimizer: String,
    pub weight_decay: f32,
    pub momentum: f32,
    pub hidden: usize,
    /// Hidden layers.
    pub depth: usize,
    pub init_scale: f32,
    pub first_bias: bool,
    /// DPO's beta, Flex-DPO's beta_pos and SFT-DPO's beta.
    pub beta: f32,
    /// Flex-DPO's beta_neg / beta_pos.
    pub flex_ratio: f32,
    pub sft_gamma: f32,
    pub sft_epochs: usize,
    pub sft_lr: f32,
}

impl Default for Knobs {
    fn default() -> Self {
        let t = ToyConfig::default();
        Knobs {
            lr: t.lr,
            optimizer: "adam".into(),
            weight_decay: 0.0,
            momentum: 0.0,
            hidden: t.hidden,
            depth: t.depth,
            init_scale: t.init_scale,
            first_bias: t.first_bias,
            beta: 0.1,
            flex_ratio: 0.5,
            sft_gamma: 0.1,
            sft_epochs: t.sft_epochs,
            sft_lr: t.sft_lr,
        }
    }
}

/// One cell of the map: a knob setting, the DPO scenarios it runs, and whether the two fixes run (scenario 1).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    /// File name and key: "<slice>=<value>".
    pub id: String,
    pub slice: String,
    /// The factor's value(s) as shown in the report.
    pub value: String,
    pub knobs: Knobs,
    /// DPO scenarios (1..=4); empty for slices that vary only a fix.
    pub dpo_scenarios: Vec<u8>,
    pub flex: bool,
    pub sft_dpo: bool,
}

/// Per-run judgement with the toy study's criteria (examples/toy3d/report.rs), and the curve points kept for plots.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    pub method: String,
    pub scenario: u8,
    pub seed: u64,
    /// Drastic drop: by epoch 500 mean log pi(rejected) fell > 5 nats and > 5x |change of log pi(chosen)|.
    pub d1: bool,
    /// Degradation: log10 |dl/dpi+| fell by >= 1 order from epoch 0 to the end.
    pub d2: bool,
    /// Dispersion: chosen avg ends < 0.9 x its peak while unseen avg ends > 1.1 x its minimum.
    pub d3: bool,
    /// The chosen avg ends < 0.9 x its peak (rise-then-fall, when the peak is above the start).
    pub falls: bool,
    pub chosen_start: f64,
    pub peak_epoch: usize,
    pub peak: f64,
    pub chosen_end: f64,
    pub unseen_start: f64,
    pub unseen_min: f64,
    pub unseen_end: f64,
    /// Per-prompt mass change from the chosen peak to the end: on responses 8-9, on other prompts' chosen responses.
    pub d_mass_89: f64,
    pub d_mass_other_chosen: f64,
    pub logp_rejected_end: f64,
    /// (epoch, chosen avg, unseen avg) every 50 epochs.
    pub curve: Vec<(usize, f32, f32)>,
}

/// What DIR/cells/<id>.json holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CellResult {
    pub cell: Cell,
    pub epochs: usize,
    pub seeds: Vec<u64>,
    pub seconds: f64,
    pub runs: Vec<RunSummary>,
}

/// What stats.rs works on: one run's records.
pub struct RunOutput {
    pub label: String,
    pub scenario: u8,
    pub seed: u64,
    pub records: Vec<ToyRecord>,
}

fn cell(slice: &str, value: impl Into<String>, knobs: Knobs, dpo_scenarios: &[u8], flex: bool, sft_dpo: bool) -> Cell {
    let value = value.into();
    Cell {
        id: format!("{slice}={}", value.replace([' ', '/', ','], "_")),
        slice: slice.into(),
        value,
        knobs,
        dpo_scenarios: dpo_scenarios.to_vec(),
        flex,
        sft_dpo,
    }
}

/// The grid: the base point and one- or two-factor slices around it. Widths past 256 cost H^2 each, so they run
/// scenario 1 only (512) or DPO only (1024).
fn grid(quick: bool) -> Vec<Cell> {
    let all: &[u8] = &[1, 2, 3, 4];
    let b = Knobs::default();
    let mut v = Vec::new();
    if quick {
        let b = Knobs { hidden: 16, sft_epochs: 40, ..b };
        v.push(cell("base", "defaults", b.clone(), &[1, 2], true, true));
        v.push(cell("lr", "0.003", Knobs { lr: 3e-3, ..b.clone() }, &[1], true, false));
        v.push(cell("hidden", "32", Knobs { hidden: 32, ..b.clone() }, &[1], false, false));
        v.push(cell("depth", "3", Knobs { depth: 3, ..b.clone() }, &[1], false, true));
        v.push(cell("flex", "0.25", Knobs { flex_ratio: 0.25, ..b }, &[], true, false));
        return v;
    }
    v.push(cell("base", "defaults", b.clone(), all, true, true));
    for lr in [1e-4f32, 3e-4, 3e-3, 1e-2] {
        v.push(cell("lr", format!("{lr}"), Knobs { lr, ..b.clone() }, all, true, true));
    }
    let opt = |name: &str, lr: f32, wd: f32, m: f32| Knobs {
        optimizer: name.into(),
        lr,
        weight_decay: wd,
        momentum: m,
        ..b.clone()
    };
    v.push(cell("optimizer", "AdamW wd 0.01", opt("adamw", 1e-3, 0.01, 0.0), all, true, true));
    v.push(cell("optimizer", "AdamW wd 0.1", opt("adamw", 1e-3, 0.1, 0.0), all, true, true));
    v.push(cell("optimizer", "SGD lr 0.01 m 0.9", opt("sgd", 1e-2, 0.0, 0.9), all, true, true));
    v.push(cell("optimizer", "SGD lr 0.1 m 0.9", opt("sgd", 1e-1, 0.0, 0.9), all, true, true));
    for h in [64usize, 128] {
        v.push(cell("hidden", h.to_string(), Knobs { hidden: h, ..b.clone() }, all, true, true));
    }
    v.push(cell("hidden", "512", Knobs { hidden: 512, ..b.clone() }, &[1], true, true));
    v.push(cell("hidden", "1024", Knobs { hidden: 1024, ..b.clone() }, &[1], false, false));
    v.push(cell("depth", "3", Knobs { depth: 3, ..b.clone() }, all, true, true));
    for s in [0.25f32, 0.5, 2.0, 4.0] {
        v.push(cell("init", format!("{s}"), Knobs { init_scale: s, ..b.clone() }, all, true, true));
    }
    v.push(cell("bias", "on", Knobs { first_bias: true, ..b.clone() }, all, true, true));
    for beta in [0.01f32, 0.03, 0.3, 1.0] {
        v.push(cell("beta", format!("{beta}"), Knobs { beta, ..b.clone() }, all, true, true));
    }
    for r in [0.1f32, 0.25, 0.8, 1.0] {
        v.push(cell("flex", format!("{r}"), Knobs { flex_ratio: r, ..b.clone() }, &[], true, false));
    }
    for e in [100usize, 200, 400, 800] {
        for lr in [3e-3f32, 1e-2, 3e-2] {
            if e == b.sft_epochs && lr == b.sft_lr {
                continue; // the base point
            }
            v.push(cell(
                "sft",
                format!("{e} epochs lr {lr}"),
                Knobs { sft_epochs: e, sft_lr: lr, ..b.clone() },
                all,
                true,
                true,
            ));
        }
    }
    v
}

/// The ToyConfig of one run of a cell.
fn config(k: &Knobs, loss: PreferenceLoss, scenario: u8, seed: u64, epochs: usize) -> ToyConfig {
    let (optimizer, weight_decay) = match k.optimizer.as_str() {
        "sgd" => (OptimizerKind::Sgd, k.weight_decay),
        _ => (OptimizerKind::Adam, k.weight_decay),
    };
    ToyConfig {
        run: format!("{}-s{scenario}-seed{seed}", loss.name()),
        method: ToyMethod::Preference { loss },
        scenario,
        seed,
        hidden: k.hidden,
        depth: k.depth,
        first_bias: k.first_bias,
        init_scale: k.init_scale,
        optimizer,
        lr: k.lr,
        weight_decay,
        momentum: k.momentum,
        epochs,
        log_every: 10,
        sft_epochs: k.sft_epochs,
        sft_lr: k.sft_lr,
    }
}

/// The training groups of a cell: (method label, runs), each group one replicated model.
fn jobs(c: &Cell, seeds: &[u64], epochs: usize) -> Vec<(String, Vec<ToyConfig>)> {
    let k = &c.knobs;
    let mut v = Vec::new();
    if !c.dpo_scenarios.is_empty() {
        let runs = c
            .dpo_scenarios
            .iter()
            .flat_map(|&s| seeds.iter().map(move |&seed| (s, seed)))
            .map(|(s, seed)| config(k, PreferenceLoss::Dpo { beta: k.beta }, s, seed, epochs))
            .collect();
        v.push(("dpo".to_string(), runs));
    }
    if c.flex {
        let loss = PreferenceLoss::FlexDpo { beta_pos: k.beta, beta_neg: k.beta * k.flex_ratio };
        v.push(("flex-dpo".into(), seeds.iter().map(|&s| config(k, loss.clone(), 1, s, epochs)).collect()));
    }
    if c.sft_dpo {
        let loss = PreferenceLoss::SftDpo { beta: k.beta, gamma: k.sft_gamma };
        v.push(("sft-dpo".into(), seeds.iter().map(|&s| config(k, loss.clone(), 1, s, epochs)).collect()));
    }
    v
}

/// Relative cost of `replica_epochs` of a cell's model: H^2 / 256^2 per replica-epoch (widths below 64 count as 64).
fn weighted(c: &Cell, replica_epochs: u64) -> u64 {
    let h = c.knobs.hidden.max(64) as u64;
    replica_epochs * h * h / (256 * 256)
}

/// Relative cost of a cell (replica-epochs x H^2), for longest-first scheduling and the progress bar.
fn cost(c: &Cell, seeds: usize, epochs: usize) -> u64 {
    let runs = (c.dpo_scenarios.len() + c.flex as usize + c.sft_dpo as usize) * seeds;
    weighted(c, runs as u64 * (epochs + c.knobs.sft_epochs) as u64)
}

fn summarize(method: &str, r: &RunOutput) -> Option<RunSummary> {
    use stats::{at, first, last, peak, series, trough};
    const CH: &str = "toy/chosen_avg";
    const UNSEEN: &str = "toy/unseen_avg";
    let end = r.records.iter().map(|x| x.epoch).max()?;
    let e5 = 500.min(end);
    let change = |m: &str, to: usize| Some(at(r, m, to)? - first(r, m)?);
    let (dr, dc) = (change("toy/logp_rejected_avg", e5)?, change("toy/logp_chosen_avg", e5)?);
    let d2 = last(r, "grad/log10_chosen")? - first(r, "grad/log10_chosen")? <= -1.0;
    let (peak_epoch, pk) = peak(r, CH)?;
    let (chosen_end, unseen_min, unseen_end) = (last(r, CH)?, trough(r, UNSEEN)?.1, last(r, UNSEEN)?);
    let falls = chosen_end < 0.9 * pk;
    let mass = |m: &str| Some(last(r, m)? - at(r, m, peak_epoch)?);
    let chosen = series(r, CH);
    let unseen: BTreeMap<usize, f64> = series(r, UNSEEN).into_iter().collect();
    let curve = chosen
        .iter()
        .filter(|(e, _)| e % 50 == 0 || *e == end)
        .map(|&(e, c)| (e, c as f32, unseen.get(&e).copied().unwrap_or(f64::NAN) as f32))
        .collect();
    Some(RunSummary {
        method: method.into(),
        scenario: r.scenario,
        seed: r.seed,
        d1: dr < -5.0 && dr.abs() > 5.0 * dc.abs(),
        d2,
        d3: falls && unseen_end > 1.1 * unseen_min,
        falls,
        chosen_start: first(r, CH)?,
        peak_epoch,
        peak: pk,
        chosen_end,
        unseen_start: first(r, UNSEEN)?,
        unseen_min,
        unseen_end,
        d_mass_89: mass("toy/mass_8_9")?,
        d_mass_other_chosen: mass("toy/mass_other_chosen")?,
        logp_rejected_end: last(r, "toy/logp_rejected_avg")?,
        curve,
    })
}

/// Train one cell on `gpu`: the SFT phases its runs need, then each group; the per-run summaries.
fn run_cell(gpu: &Gpu, c: &Cell, seeds: &[u64], epochs: usize, bar: &ProgressBar) -> Result<CellResult, String> {
    let t0 = Instant::now();
    let groups = jobs(c, seeds, epochs);
    // One SFT phase per (scenario, seed), shared by the methods (all of a cell's runs share the SFT settings).
    let mut keys: Vec<(u8, u64)> = groups.iter().flat_map(|(_, g)| g.iter().map(|c| (c.scenario, c.seed))).collect();
    keys.sort();
    keys.dedup();
    let any = groups.first().and_then(|g| g.1.first()).ok_or("a cell without runs")?.clone();
    let key_cfgs: Vec<ToyConfig> =
        keys.iter().map(|&(s, seed)| ToyConfig { scenario: s, seed, ..any.clone() }).collect();
    let sft = pollster::block_on(sft_phase_group(gpu, &key_cfgs)).map_err(|e| format!("{}: SFT: {e}", c.id))?;
    let sft: BTreeMap<(u8, u64), (Vec<f32>, Vec<f32>)> = keys.into_iter().zip(sft).collect();
    let mut runs = Vec::new();
    for (method, cfgs) in groups {
        let pi0 = cfgs.iter().map(|r| sft[&(r.scenario, r.seed)].clone()).collect();
        let mut session =
            pollster::block_on(ToySession::group(gpu, &cfgs, pi0)).map_err(|e| format!("{} {method}: {e}", c.id))?;
        let mut records = Vec::new();
        while !session.finished() {
            let chunk = 200.min(epochs - session.epoch);
            records.extend(
                pollster::block_on(session.advance(gpu, chunk)).map_err(|e| format!("{} {method}: {e}", c.id))?,
            );
            bar.inc(weighted(c, (chunk * cfgs.len()) as u64));
        }
        for cfg in &cfgs {
            let name = cfg.run_name();
            let r = RunOutput {
                label: method.clone(),
                scenario: cfg.scenario,
                seed: cfg.seed,
                records: records.iter().filter(|x| x.run == name).cloned().collect(),
            };
            runs.push(summarize(&method, &r).ok_or_else(|| format!("{} {name}: incomplete records", c.id))?);
        }
    }
    Ok(CellResult { cell: c.clone(), epochs, seeds: seeds.to_vec(), seconds: t0.elapsed().as_secs_f64(), runs })
}

fn cell_path(out: &Path, c: &Cell) -> PathBuf {
    out.join("cells").join(format!("{}.json", c.id))
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("toy3d-sweep: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), String> {
    run(&Args::parse()).map(|_| ())
}

/// The whole sweep for `a`: trains the cells not yet in DIR, then writes the report; returns the cells trained.
fn run(a: &Args) -> Result<usize, String> {
    let (seeds, epochs) = if a.quick { (2u64.min(a.seeds), 60.min(a.epochs)) } else { (a.seeds, a.epochs) };
    let seeds: Vec<u64> = (0..seeds).collect();
    let mut cells = grid(a.quick);
    if let Some(sl) = &a.slices {
        let want: Vec<&str> = sl.split(',').map(str::trim).collect();
        if let Some(bad) = want.iter().find(|w| !cells.iter().any(|c| c.slice == **w)) {
            return Err(format!(
                "unknown slice {bad:?}; slices: base, lr, optimizer, hidden, depth, init, bias, beta, flex, sft"
            ));
        }
        cells.retain(|c| want.contains(&c.slice.as_str()));
    }
    std::fs::create_dir_all(a.out.join("cells")).map_err(|e| format!("cannot create {}: {e}", a.out.display()))?;
    let trained = if a.report_only { 0 } else { train(a, &cells, &seeds, epochs)? };
    let results = load_cells(&a.out)?;
    report::write(&a.out, &results)?;
    println!("report: {}", a.out.join("report.md").display());
    Ok(trained)
}

fn train(a: &Args, cells: &[Cell], seeds: &[u64], epochs: usize) -> Result<usize, String> {
    // Resume: a cell whose file exists with the same settings is done.
    let todo: Vec<Cell> = cells
        .iter()
        .filter(|c| {
            let done = std::fs::read_to_string(cell_path(&a.out, c))
                .ok()
                .and_then(|s| serde_json::from_str::<CellResult>(&s).ok())
                .is_some_and(|r| r.epochs == epochs && r.seeds == seeds && r.cell.knobs == c.knobs);
            !done
        })
        .cloned()
        .collect();
    let probe = Gpu::new_blocking().map_err(|e| e.to_string())?;
    let threads =
        a.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(4)).max(1);
    println!(
        "toy3d-sweep on {} ({}), {threads} threads: {} cells ({} already in {}), {} seeds x {epochs} epochs",
        probe.info.name,
        probe.info.backend,
        cells.len(),
        cells.len() - todo.len(),
        a.out.display(),
        seeds.len()
    );
    drop(probe);
    let mut todo = todo;
    let n_todo = todo.len();
    todo.sort_by_key(|c| std::cmp::Reverse(cost(c, seeds.len(), epochs)));
    // The bar counts preference epochs (what `run_cell` reports), weighted like `cost`.
    let runs = |c: &Cell| (c.dpo_scenarios.len() + c.flex as usize + c.sft_dpo as usize) * seeds.len();
    let total: u64 = todo.iter().map(|c| weighted(c, (runs(c) * epochs) as u64)).sum();
    let bar = ProgressBar::new(total.max(1));
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {percent}% (eta {eta})  {msg}")
            .unwrap()
            .progress_chars("=> "),
    );
    let queue = Arc::new(Mutex::new(todo.into_iter().collect::<VecDeque<_>>()));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (queue, bar, out, seeds) = (queue.clone(), bar.clone(), a.out.clone(), seeds.to_vec());
            std::thread::spawn(move || -> Result<(), String> {
                let gpu = Gpu::new_blocking().map_err(|e| e.to_string())?;
                loop {
                    let Some(c) = queue.lock().unwrap().pop_front() else { return Ok(()) };
                    bar.set_message(c.id.clone());
                    let r = run_cell(&gpu, &c, &seeds, epochs, &bar)?;
                    let json = serde_json::to_string(&r).map_err(|e| e.to_string())?;
                    dpo3d::checkpoint::write_atomic(&cell_path(&out, &c), json.as_bytes())
                        .map_err(|e| e.to_string())?;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "a worker thread panicked".to_string())??;
    }
    bar.finish_with_message("done");
    println!("trained the sweep's {n_todo} new cells in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(n_todo)
}

fn load_cells(out: &Path) -> Result<Vec<CellResult>, String> {
    let dir = out.join("cells");
    let mut v = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    entries.sort();
    for p in entries {
        let s = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        v.push(serde_json::from_str::<CellResult>(&s).map_err(|e| format!("{}: {e}", p.display()))?);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, chosen: f32, unseen: f32, logp_rej: f32, g_ch: f32) -> ToyRecord {
        let metrics = [
            ("toy/chosen_avg", chosen),
            ("toy/unseen_avg", unseen),
            ("toy/logp_rejected_avg", logp_rej),
            ("toy/logp_chosen_avg", chosen.ln()),
            ("grad/log10_chosen", g_ch),
            ("toy/mass_8_9", unseen),
            ("toy/mass_other_chosen", 0.1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        ToyRecord { run: "r".into(), loss_type: "dpo".into(), scenario: 1, seed: 0, epoch, metrics }
    }

    /// A run with the paper's shape (rejected gone by epoch 500, chosen up then down, unseen down then up) is judged
    /// to show all three properties; a flat one shows none.
    #[test]
    fn should_judge_synthetic_runs_with_the_study_criteria() {
        let paper: Vec<ToyRecord> = (0..=20)
            .map(|i| {
                let e = i * 100;
                let x = e as f32 / 1000.0;
                let chosen = 0.12 + 0.46 * x * (2.0 - x).max(0.0) - if x > 1.0 { 0.2 * (x - 1.0) } else { 0.0 };
                let unseen = if x < 1.0 { 0.095 - 0.045 * x } else { 0.05 + 0.03 * (x - 1.0) };
                record(e, chosen, unseen, -2.0 - 40.0 * x.min(1.0), -1.0 - 3.0 * x)
            })
            .collect();
        let r = RunOutput { label: "dpo".into(), scenario: 1, seed: 0, records: paper };
        let s = summarize("dpo", &r).unwrap();
        assert!(s.d1 && s.d2 && s.d3 && s.falls, "{s:?}");
        assert_eq!(s.peak_epoch, 1000);
        let flat: Vec<ToyRecord> = (0..=20).map(|i| record(i * 100, 0.12, 0.095, -2.0, -1.0)).collect();
        let s = summarize("dpo", &RunOutput { label: "dpo".into(), scenario: 1, seed: 0, records: flat }).unwrap();
        assert!(!s.d1 && !s.d2 && !s.d3 && !s.falls, "{s:?}");
    }

    /// The miniature grid end to end on the GPU: every cell trained and written, the report and figures produced,
    /// then a rerun trains nothing and a removed cell is retrained alone.
    #[test]
    fn should_run_the_quick_sweep_and_resume() {
        let dir = std::env::temp_dir().join(format!("dpo3d-sweep-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = Args {
            out: dir.clone(),
            seeds: 2,
            epochs: 60,
            slices: None,
            threads: Some(2),
            quick: true,
            report_only: false,
        };
        assert_eq!(run(&a).unwrap(), grid(true).len());
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        for want in [
            "## Answers",
            "## Learning rate (Adam)",
            "## Hidden width",
            "## Hidden layers",
            "Flex-DPO wins",
            "figures/lr.svg",
        ] {
            assert!(md.contains(want), "report lacks {want:?}");
        }
        assert!(dir.join("figures/lr.svg").exists());
        let base: CellResult =
            serde_json::from_str(&std::fs::read_to_string(dir.join("cells/base=defaults.json")).unwrap()).unwrap();
        // DPO in scenarios 1 and 2 plus both fixes, 2 seeds each.
        assert_eq!(base.runs.len(), 8);
        assert!(base.runs.iter().all(|r| r.chosen_end.is_finite() && r.curve.len() >= 2));
        assert_eq!(run(&a).unwrap(), 0, "a rerun must skip every finished cell");
        std::fs::remove_file(dir.join("cells/lr=0.003.json")).unwrap();
        assert_eq!(run(&a).unwrap(), 1, "only the removed cell is retrained");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
