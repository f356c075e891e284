//! report.md of the toy study: how it ran, then each of the paper's three properties with the numbers that show
//! whether it appears (means over seeds, [min, max] over seeds) next to the paper's numbers (`PAPER`, restated with
//! their source in docs/paper.md), then
//! what each fix does, the data scenarios, RM + PPO, and (when such runs exist) the token-level toy.
//!
//! Every sentence is computed from the runs: a property "appears in k/n seeds" by a stated criterion, a number
//! "agrees" with the paper's when it is within a stated tolerance, and a comparison the run cannot make (it stopped
//! before the paper's epoch, a configuration is missing) says so instead of guessing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use dpo3d::toy::ToyRecord;

use crate::figures::pretty;
use crate::figures::stats::{
    at, find, first, first_below, groups, last, last_epoch, num, over_seeds, peak, same_seed, show, show_epochs,
    summary, trough, Group, Summary,
};
use crate::{RunOutput, StudyMeta};

const CH: &str = "toy/chosen_avg";
const CH_MIN: &str = "toy/chosen_min";
const REJ: &str = "toy/rejected_avg";
const UNSEEN: &str = "toy/unseen_avg";
const M89: &str = "toy/mass_8_9";
const OTHER_CH: &str = "toy/mass_other_chosen";
const LP_CH: &str = "toy/logp_chosen_avg";
const LP_REJ: &str = "toy/logp_rejected_avg";
const G_CH: &str = "grad/log10_chosen";
const G_REJ: &str = "grad/log10_rejected";

/// Relative tolerance within which a measured mean "agrees" with the paper's value read off its figures.
const TOL: f64 = 0.25;

/// The paper's toy-study numbers (scenario 1, DPO, read off its figures; docs/paper.md restates each), the one
/// place the report's tables and prose take them from.
struct PaperToy {
    /// Epochs of the paper's toy runs, and the seeds an independent re-implementation averaged.
    epochs: usize,
    seeds: usize,
    /// The rejected average probability is ~0 by this epoch; the rejected gradient has grown by `grad_growth` orders.
    rejected_gone_by: usize,
    grad_growth: f64,
    /// Average chosen probability: start, peak (at `chosen_peak_epoch`), end (at `epochs`).
    chosen_start: f64,
    chosen_peak: f64,
    chosen_peak_epoch: usize,
    chosen_end: f64,
    /// Minimum chosen probability over the prompts: peak and end.
    chosen_min_peak: f64,
    chosen_min_end: f64,
    /// Average unseen probability: start, minimum, end.
    unseen_start: f64,
    unseen_min: f64,
    unseen_end: f64,
}

const PAPER: PaperToy = PaperToy {
    epochs: 2000,
    seeds: 5,
    rejected_gone_by: 500,
    grad_growth: 40.0,
    chosen_start: 0.12,
    chosen_peak: 0.58,
    chosen_peak_epoch: 1000,
    chosen_end: 0.35,
    chosen_min_peak: 0.47,
    chosen_min_end: 0.17,
    unseen_start: 0.095,
    unseen_min: 0.05,
    unseen_end: 0.08,
};

pub fn write_report(out: &Path, runs: &[RunOutput], meta: &StudyMeta) -> Result<(), String> {
    let md = render(out, runs, meta);
    dpo3d::checkpoint::write_atomic(&out.join("report.md"), md.as_bytes()).map_err(|e| e.to_string())
}

// ---- wording helpers ----------------------------------------------------------------------------------------------

/// "appears in all 5 seeds" / "appears in 3/5 seeds" / "does not appear (0/5 seeds)".
fn appears(k: usize, n: usize) -> String {
    match (k, n) {
        (_, 0) => "could not be measured (no seed has the data)".into(),
        (k, n) if k == n => format!("appears in all {n} seeds"),
        (0, n) => format!("does not appear (0/{n} seeds)"),
        (k, n) => format!("appears in {k}/{n} seeds"),
    }
}

/// Verdict of a measured mean against the paper's value; `reach` is false when the run stopped before the epoch
/// the paper's number belongs to.
fn close(s: Option<Summary>, paper: f64, reach: bool) -> String {
    match s {
        _ if !reach => "n/a (run ends earlier)".into(),
        None => "n/a".into(),
        Some(s) if (s.mean - paper).abs() <= TOL * paper.abs() => "agrees".into(),
        Some(s) if s.mean > paper => "disagrees (higher)".into(),
        Some(_) => "disagrees (lower)".into(),
    }
}

/// Verdict of a count of seeds against a claim that holds in every seed.
fn every(k: usize, n: usize) -> String {
    match (k, n) {
        (_, 0) => "n/a".into(),
        (k, n) if k == n => format!("agrees ({k}/{n} seeds)"),
        (0, n) => format!("disagrees (0/{n} seeds)"),
        (k, n) => format!("partly ({k}/{n} seeds)"),
    }
}

fn row(md: &mut String, cells: &[&str]) {
    let _ = writeln!(md, "| {} |", cells.join(" | "));
}

fn header(md: &mut String, cells: &[&str]) {
    row(md, cells);
    row(md, &cells.iter().map(|_| "---").collect::<Vec<_>>());
}

fn count(runs: &[&RunOutput], f: impl Fn(&RunOutput) -> Option<bool>) -> (usize, usize) {
    let v: Vec<bool> = runs.iter().filter_map(|r| f(r)).collect();
    (v.iter().filter(|b| **b).count(), v.len())
}

/// The earliest last epoch over the group's runs (the epoch every seed reaches).
fn common_end(g: &Group) -> usize {
    g.runs.iter().filter_map(|r| last_epoch(r)).min().unwrap_or(0)
}

fn change(r: &RunOutput, m: &str, to: usize) -> Option<f64> {
    Some(at(r, m, to)? - first(r, m)?)
}

// ---- the report ---------------------------------------------------------------------------------------------------

fn render(out: &Path, runs: &[RunOutput], meta: &StudyMeta) -> String {
    let gs = groups(runs);
    let mut md = String::new();
    let _ = writeln!(md, "# The 3D-properties toy study\n");
    let _ = writeln!(
        md,
        "Reproduction of the toy study (section 3.2) of \"3D-Properties: Identifying Challenges in DPO and Charting a Path Forward\" \
         (ICLR 2025): 4 prompts, 10 responses, a 3-layer MLP policy, an SFT phase fitting the scenario's target rows, then the \
         preference objective on the four pairs (0->(0,4), 1->(1,6), 2->(2,7), 3->(3,5)), full batch.\n"
    );
    how_it_ran(&mut md, out, runs, meta, &gs);
    let dpo1 = find(&gs, "dpo", 1);
    match dpo1 {
        Some(g) => {
            drastic_drop(&mut md, g);
            degradation(&mut md, g);
            dispersion(&mut md, g);
        }
        None => {
            let _ = writeln!(md, "## The three properties\n\nNo DPO scenario-1 runs in this study run, so the three properties were not measured.\n");
        }
    }
    fixes(&mut md, &gs);
    scenarios(&mut md, &gs);
    ppo(&mut md, &gs);
    let token: Vec<ToyRecord> =
        runs.iter().filter(|r| r.label.starts_with("token-")).flat_map(|r| r.records.iter().cloned()).collect();
    if runs.iter().any(|r| r.label.starts_with("token-")) {
        md.push_str(&token_section(&token));
    }
    md
}

fn how_it_ran(md: &mut String, out: &Path, runs: &[RunOutput], meta: &StudyMeta, gs: &[Group]) {
    let _ = writeln!(md, "## How it ran\n");
    let seeds = match (meta.seeds.first(), meta.seeds.last()) {
        (Some(a), Some(b)) if a != b => format!("{} ({a}..={b})", meta.seeds.len()),
        (Some(a), _) => format!("1 (seed {a})"),
        _ => "0".into(),
    };
    let _ = writeln!(
        md,
        "- device: {} ({} backend), {} worker thread(s), {:.1} s of training",
        meta.device, meta.backend, meta.threads, meta.seconds
    );
    let _ = writeln!(
        md,
        "- {} epochs after SFT, seeds: {seeds}, hidden width {}, optimizer {} with lr {}",
        meta.epochs, meta.hidden, meta.optimizer, meta.lr
    );
    let _ = writeln!(md, "- {} runs in {} configurations:", runs.len(), gs.len());
    for g in gs {
        let _ = writeln!(
            md,
            "  - {} (scenario {}): {} seed(s), last epoch {}",
            pretty(&g.label),
            g.scenario,
            g.runs.len(),
            common_end(g)
        );
    }
    let missing: Vec<String> = meta
        .configs
        .iter()
        .filter(|(l, s)| !gs.iter().any(|g| &g.label == l && g.scenario == *s))
        .map(|(l, s)| format!("{} (scenario {s})", pretty(l)))
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(md, "- configured but without results: {}", missing.join(", "));
    }
    if meta.epochs < PAPER.epochs || meta.seeds.len() < PAPER.seeds {
        let _ = writeln!(
            md,
            "- the paper's toy trains {} epochs, averaged over >= {} seeds (docs/paper.md); this run has {} epochs and {} \
             seed(s), so numbers the paper reads at epochs {} and {} are compared only where the run reaches them",
            PAPER.epochs,
            PAPER.seeds,
            meta.epochs,
            meta.seeds.len(),
            PAPER.chosen_peak_epoch,
            PAPER.epochs
        );
    }
    let figs: Vec<&str> = ["fig1_probs", "fig2_dynamics", "fig3_fixes", "fig4_scenarios", "fig5_ppo"]
        .into_iter()
        .filter(|f| out.join("figures").join(format!("{f}.svg")).exists())
        .collect();
    if !figs.is_empty() {
        let links: Vec<String> = figs.iter().map(|f| format!("[{f}](figures/{f}.svg)")).collect();
        let _ = writeln!(md, "- figures: {}", links.join(", "));
    }
    let _ = writeln!(
        md,
        "\nNumbers are means over seeds with [min, max] over seeds. Probabilities are averages over the four prompts; \
         log-probabilities are natural logs, gradient magnitudes |dl/dpi| are log10. A measured mean \"agrees\" with a paper \
         number when it is within {:.0}% of it; the paper's numbers are read off its figures and are approximate.\n",
        TOL * 100.0
    );
    let _ = writeln!(
        md,
        "The paper does not give the toy's width, initialisation, optimizer settings or SFT procedure; this study uses \
         PyTorch's default init, no first-layer bias and the settings above. How the properties depend on those \
         choices is mapped by `./scripts/toy3d-sweep` (runs/toy3d-sweep/report.md); on the 2-core machine it was run \
         on, no setting matched the paper's Figure 2 clearly better than these defaults, so they stay.\n"
    );
}

fn drastic_drop(md: &mut String, g: &Group) {
    let runs = &g.runs;
    let end = common_end(g);
    let e5 = PAPER.rejected_gone_by.min(end);
    let _ = writeln!(md, "## 1. Drastic drop of the rejected likelihood (DPO, scenario 1)\n");
    header(md, &["quantity", "measured", "paper", "verdict"]);
    let d_rej5 = over_seeds(runs, |r| change(r, LP_REJ, e5));
    let d_ch5 = over_seeds(runs, |r| change(r, LP_CH, e5));
    let d_rej = over_seeds(runs, |r| change(r, LP_REJ, end));
    let d_ch = over_seeds(runs, |r| change(r, LP_CH, end));
    let rej5 = over_seeds(runs, |r| at(r, REJ, e5));
    row(md, &[&format!("change of mean log pi(rejected), epoch 0 -> {e5} (nats)"), &show(d_rej5), "large fall", ""]);
    row(md, &[&format!("change of mean log pi(chosen), epoch 0 -> {e5} (nats)"), &show(d_ch5), "small", ""]);
    if end > e5 {
        row(md, &[&format!("change of mean log pi(rejected), epoch 0 -> {end} (nats)"), &show(d_rej), "", ""]);
        row(md, &[&format!("change of mean log pi(chosen), epoch 0 -> {end} (nats)"), &show(d_ch), "", ""]);
    }
    row(
        md,
        &[
            &format!("rejected avg probability at epoch {e5}"),
            &show(rej5),
            &format!("~0 by epoch {}", PAPER.rejected_gone_by),
            "",
        ],
    );
    let below: Vec<Option<usize>> = runs.iter().map(|r| first_below(r, REJ, 1e-3)).collect();
    let reached: Vec<f64> = below.iter().flatten().map(|&e| e as f64).collect();
    let by500 = below.iter().filter(|e| matches!(e, Some(e) if *e <= PAPER.rejected_gone_by)).count();
    let verdict = if end >= PAPER.rejected_gone_by || by500 == runs.len() {
        every(by500, runs.len())
    } else {
        format!("n/a (run ends at {end}; {by500}/{} seeds below 1e-3)", runs.len())
    };
    row(
        md,
        &[
            "first epoch with rejected avg < 1e-3",
            &format!("{} (reached in {}/{} seeds)", show_epochs(summary(&reached)), reached.len(), runs.len()),
            &format!("by epoch {}", PAPER.rejected_gone_by),
            &verdict,
        ],
    );
    let (k, n) = count(runs, |r| {
        let (dr, dc) = (change(r, LP_REJ, e5)?, change(r, LP_CH, e5)?);
        Some(dr < -5.0 && dr.abs() > 5.0 * dc.abs())
    });
    let _ = writeln!(
        md,
        "\nThe drastic drop {} (criterion: by epoch {e5} the mean rejected log-probability fell by more than 5 nats and by more \
         than 5 times the magnitude of the chosen log-probability's change). Paper: the rejected probability is ~0 by epoch {} \
         while the chosen one moves slowly; verdict {}.\n",
        appears(k, n),
        PAPER.rejected_gone_by,
        every(k, n)
    );
}

fn degradation(md: &mut String, g: &Group) {
    let runs = &g.runs;
    let end = common_end(g);
    let e5 = PAPER.rejected_gone_by.min(end);
    let _ = writeln!(md, "## 2. Degradation into response suppression (DPO, scenario 1)\n");
    header(md, &["quantity", "measured", "paper", "verdict"]);
    let g_ch0 = over_seeds(runs, |r| first(r, G_CH));
    let g_rej0 = over_seeds(runs, |r| first(r, G_REJ));
    let gap0 = over_seeds(runs, |r| Some(first(r, G_REJ)? - first(r, G_CH)?));
    let grow5 = over_seeds(runs, |r| change(r, G_REJ, e5));
    let g_ch_end = over_seeds(runs, |r| last(r, G_CH));
    let g_rej_end = over_seeds(runs, |r| last(r, G_REJ));
    let ch_drop = over_seeds(runs, |r| Some(last(r, G_CH)? - first(r, G_CH)?));
    row(md, &["log10 abs(dl/dpi+) at epoch 0", &show(g_ch0), "", ""]);
    row(md, &["log10 abs(dl/dpi-) at epoch 0", &show(g_rej0), "", ""]);
    let gap_v = match gap0 {
        Some(s) if s.mean.abs() < 0.5 => "agrees",
        Some(_) => "disagrees",
        None => "n/a",
    };
    row(
        md,
        &["rejected minus chosen gradient at epoch 0 (orders of magnitude)", &show(gap0), "0 (start equal)", gap_v],
    );
    // "about 40 orders": agreement within half that either way
    let (grow_lo, grow_hi) = (0.5 * PAPER.grad_growth, 1.5 * PAPER.grad_growth);
    let grow_v = if end < PAPER.rejected_gone_by {
        "n/a (run ends earlier)".to_string()
    } else {
        match grow5 {
            Some(s) if (grow_lo..=grow_hi).contains(&s.mean) => format!("agrees (within {grow_lo}-{grow_hi})"),
            Some(s) if s.mean > grow_hi => "disagrees (more)".into(),
            Some(_) => "disagrees (less)".into(),
            None => "n/a".into(),
        }
    };
    row(
        md,
        &[
            &format!("growth of log10 abs(dl/dpi-), epoch 0 -> {e5} (orders)"),
            &show(grow5),
            &format!("~{} within {} epochs", PAPER.grad_growth, PAPER.rejected_gone_by),
            &grow_v,
        ],
    );
    row(md, &[&format!("log10 abs(dl/dpi-) at epoch {end}"), &show(g_rej_end), "", ""]);
    row(md, &[&format!("log10 abs(dl/dpi+) at epoch {end}"), &show(g_ch_end), "", ""]);
    let (kv, nv) = count(runs, |r| Some(last(r, G_CH)? - first(r, G_CH)? <= -1.0));
    row(
        md,
        &[
            &format!("change of log10 abs(dl/dpi+), epoch 0 -> {end} (orders)"),
            &show(ch_drop),
            "chosen gradient vanishes",
            &format!("{} (criterion: falls >= 1 order)", every(kv, nv)),
        ],
    );
    let ch0 = over_seeds(runs, |r| first(r, CH));
    let pk = over_seeds(runs, |r| peak(r, CH).map(|p| p.1));
    let pk_e = over_seeds(runs, |r| peak(r, CH).map(|p| p.0 as f64));
    let fin = over_seeds(runs, |r| last(r, CH));
    let mpk = over_seeds(runs, |r| peak(r, CH_MIN).map(|p| p.1));
    let mfin = over_seeds(runs, |r| last(r, CH_MIN));
    let reach_peak = end >= PAPER.chosen_peak_epoch;
    let reach_end = end >= PAPER.epochs;
    let (p, pe) = (&PAPER, PAPER.epochs);
    row(md, &["chosen avg at epoch 0", &show(ch0), &p.chosen_start.to_string(), &close(ch0, p.chosen_start, true)]);
    row(
        md,
        &["chosen avg peak value", &show(pk), &format!("~{}", p.chosen_peak), &close(pk, p.chosen_peak, reach_peak)],
    );
    let pk_e_v = match pk_e {
        _ if !reach_peak => "n/a (run ends earlier)".to_string(),
        Some(s) if (s.mean - p.chosen_peak_epoch as f64).abs() <= 300.0 => "agrees (within 300 epochs)".into(),
        Some(s) if s.mean > p.chosen_peak_epoch as f64 => "disagrees (later)".into(),
        Some(_) => "disagrees (earlier)".into(),
        None => "n/a".into(),
    };
    row(md, &["epoch of the chosen avg peak", &show_epochs(pk_e), &format!("~{}", p.chosen_peak_epoch), &pk_e_v]);
    let at_end = |v: f64| format!("~{v} at {pe}");
    row(
        md,
        &[
            &format!("chosen avg at epoch {end}"),
            &show(fin),
            &at_end(p.chosen_end),
            &close(fin, p.chosen_end, reach_end),
        ],
    );
    row(
        md,
        &[
            "chosen min peak value",
            &show(mpk),
            &format!("~{}", p.chosen_min_peak),
            &close(mpk, p.chosen_min_peak, reach_peak),
        ],
    );
    row(
        md,
        &[
            &format!("chosen min at epoch {end}"),
            &show(mfin),
            &at_end(p.chosen_min_end),
            &close(mfin, p.chosen_min_end, reach_end),
        ],
    );
    let (k, n) = count(runs, |r| Some(last(r, CH)? < 0.9 * peak(r, CH)?.1));
    let _ = writeln!(
        md,
        "\nThe rise-then-fall of the chosen probability {} (criterion: final chosen avg < 0.9 x its peak). Paper: the chosen \
         probability peaks near epoch {} and falls by epoch {pe}; the independent re-implementation saw it in most seeds \
         with Adam{}.",
        appears(k, n),
        p.chosen_peak_epoch,
        if end < p.chosen_peak_epoch { format!(" (this run stops at epoch {end}, before the paper's peak, so a fall is not expected yet)") } else { String::new() }
    );
    let _ = writeln!(
        md,
        "The chosen gradient {} by at least one order of magnitude from epoch 0 to {end} ({kv}/{nv} seeds) while the rejected \
         one grew by {} orders by epoch {e5}.\n",
        if kv == nv && nv > 0 { "vanishes" } else if kv > 0 { "vanishes in some seeds" } else { "does not vanish" },
        grow5.map(|s| num(s.mean)).unwrap_or_else(|| "n/a".into())
    );
}

fn dispersion(md: &mut String, g: &Group) {
    let runs = &g.runs;
    let end = common_end(g);
    let _ = writeln!(md, "## 3. Dispersion onto unseen responses (DPO, scenario 1)\n");
    header(md, &["quantity", "measured", "paper", "verdict"]);
    let u0 = over_seeds(runs, |r| first(r, UNSEEN));
    let umin = over_seeds(runs, |r| trough(r, UNSEEN).map(|p| p.1));
    let umin_e = over_seeds(runs, |r| trough(r, UNSEEN).map(|p| p.0 as f64));
    let uend = over_seeds(runs, |r| last(r, UNSEEN));
    let p = &PAPER;
    row(md, &["unseen avg at epoch 0", &show(u0), &p.unseen_start.to_string(), &close(u0, p.unseen_start, true)]);
    let min_v = close(umin, p.unseen_min, end >= p.chosen_peak_epoch);
    row(md, &["unseen avg minimum", &show(umin), &format!("~{}", p.unseen_min), &min_v]);
    row(md, &["epoch of the unseen minimum", &show_epochs(umin_e), "", ""]);
    let end_v = close(uend, p.unseen_end, end >= p.epochs);
    row(
        md,
        &[&format!("unseen avg at epoch {end}"), &show(uend), &format!("~{} at {}", p.unseen_end, p.epochs), &end_v],
    );
    for (m, what) in [
        (M89, "mass on responses 8-9 (per prompt)"),
        (OTHER_CH, "mass on other prompts' chosen responses (per prompt)"),
    ] {
        row(
            md,
            &[
                &format!("{what}, epoch 0 -> {end}"),
                &format!("{} -> {}", show(over_seeds(runs, |r| first(r, m))), show(over_seeds(runs, |r| last(r, m)))),
                "",
                "",
            ],
        );
    }
    // Where the lost chosen mass goes: per prompt, from each seed's chosen peak to the end. A prompt's row is
    // chosen + rejected + other chosen (3) + other rejected (3) + responses 8-9 = 1.
    let parts = |r: &RunOutput, e: Option<usize>| -> Option<[f64; 5]> {
        let v = |m: &str| match e {
            Some(e) => at(r, m, e),
            None => last(r, m),
        };
        let (c, rj, oc, m89) = (v(CH)?, v(REJ)?, v(OTHER_CH)?, v(M89)?);
        Some([c, rj, oc, (1.0 - c - rj - oc - m89).max(0.0), m89])
    };
    let names = [
        "its chosen response",
        "its rejected response",
        "other prompts' chosen responses",
        "other prompts' rejected responses",
        "responses 8-9",
    ];
    let falling: Vec<&RunOutput> = runs
        .iter()
        .copied()
        .filter(|r| matches!((peak(r, CH), last(r, CH)), (Some(p), Some(l)) if l < 0.9 * p.1))
        .collect();
    let _ = writeln!(md);
    if falling.is_empty() {
        let _ = writeln!(md, "The chosen avg probability does not fall below 0.9 x its peak in any seed, so there is no lost chosen mass to trace.");
    } else {
        let deltas: Vec<[f64; 5]> = falling
            .iter()
            .filter_map(|r| {
                let pe = peak(r, CH)?.0;
                let (a, b) = (parts(r, Some(pe))?, parts(r, None)?);
                Some([b[0] - a[0], b[1] - a[1], b[2] - a[2], b[3] - a[3], b[4] - a[4]])
            })
            .collect();
        let _ = writeln!(md, "Where the lost chosen mass goes, per prompt, from each seed's chosen-avg peak to epoch {end} ({} seed(s) whose chosen avg falls below 0.9 x its peak):\n", deltas.len());
        header(md, &["mass on", "change (peak -> end)"]);
        for (i, n) in names.iter().enumerate() {
            row(md, &[n, &show(summary(&deltas.iter().map(|d| d[i]).collect::<Vec<_>>()))]);
        }
        let mut top = [0usize; 5];
        for d in &deltas {
            if let Some((i, _)) = d.iter().enumerate().skip(1).max_by(|a, b| a.1.total_cmp(b.1)) {
                top[i] += 1;
            }
        }
        let (best, k) = top.iter().enumerate().max_by_key(|p| *p.1).map(|(i, k)| (i, *k)).unwrap_or((2, 0));
        let _ = writeln!(
            md,
            "\nThe largest recipient is {} in {k}/{} of these seeds. The independent re-implementation found it to be other \
             prompts' chosen responses (shared MLP features): {}.",
            names[best],
            deltas.len(),
            if best == 2 && k == deltas.len() { "agrees" } else if top[2] > 0 { "partly agrees" } else { "disagrees" }
        );
    }
    let (k, n) = count(runs, |r| {
        let (p, l) = (peak(r, CH)?.1, last(r, CH)?);
        let (umin, uend) = (trough(r, UNSEEN)?.1, last(r, UNSEEN)?);
        Some(l < 0.9 * p && uend > 1.1 * umin)
    });
    let _ = writeln!(
        md,
        "\nDispersion {} (criterion: the chosen avg ends below 0.9 x its peak while the unseen avg ends more than 10% above its \
         minimum). Paper: unseen {} -> {} -> {} while the chosen falls late in training.\n",
        appears(k, n),
        p.unseen_start,
        p.unseen_min,
        p.unseen_end
    );
}

fn finals(md: &mut String, name: &str, g: &Group, extra: &str) {
    let runs = &g.runs;
    let f = |m: &str| show(over_seeds(runs, |r| last(r, m)));
    row(
        md,
        &[name, &g.runs.len().to_string(), &f(CH), &f(CH_MIN), &f(REJ), &f(LP_REJ), &f(UNSEEN), &f(OTHER_CH), extra],
    );
}

/// Seeds where `g` ends with higher chosen avg AND lower unseen avg than DPO of the same seed: (k, n).
fn beats(g: &Group, dpo: &Group) -> (usize, usize) {
    count(&g.runs, |r| {
        let d = same_seed(dpo, r.seed)?;
        Some(last(r, CH)? > last(d, CH)? && last(r, UNSEEN)? < last(d, UNSEEN)?)
    })
}

fn fixes(md: &mut String, gs: &[Group]) {
    let _ = writeln!(md, "## What each fix does (scenario 1)\n");
    let dpo = find(gs, "dpo", 1);
    let others: Vec<&Group> = gs
        .iter()
        .filter(|g| g.scenario == 1 && g.label != "dpo" && g.label != "rm+ppo" && !g.label.starts_with("token-"))
        .collect();
    if dpo.is_none() && others.is_empty() {
        let _ = writeln!(md, "No scenario-1 preference runs in this study run.\n");
        return;
    }
    let _ = writeln!(md, "Final values (last epoch), means over seeds [min, max]; log-probabilities in nats (the rejected probability underflows float32 to 0 below ~1e-45). The last column counts the seeds where the configuration ends with a higher chosen avg AND a lower unseen avg than DPO of the same seed.\n");
    header(
        md,
        &[
            "configuration",
            "seeds",
            "chosen avg",
            "chosen min",
            "rejected avg",
            "mean log pi(rejected)",
            "unseen avg",
            "mass other chosen",
            "beats DPO",
        ],
    );
    if let Some(d) = dpo {
        finals(md, "DPO", d, "-");
    }
    for g in &others {
        let b = match dpo {
            Some(d) => {
                let (k, n) = beats(g, d);
                format!("{k}/{n}")
            }
            None => "n/a (no DPO)".into(),
        };
        finals(md, &pretty(&g.label), g, &b);
    }
    let _ = writeln!(md);
    unequal(md, dpo.into_iter().chain(others.iter().copied()));
    let Some(d) = dpo else {
        let _ = writeln!(md, "Without DPO runs the fixes cannot be compared to it.\n");
        return;
    };
    for g in &others {
        let (k, n) = beats(g, d);
        let dc = over_seeds(&g.runs, |r| Some(last(r, CH)? - last(same_seed(d, r.seed)?, CH)?));
        let du = over_seeds(&g.runs, |r| Some(last(r, UNSEEN)? - last(same_seed(d, r.seed)?, UNSEEN)?));
        let expectation = if g.label.starts_with("flex-dpo") || g.label.starts_with("sft-dpo") {
            format!("; the independent re-implementation (docs/paper.md) found this in every seed: {}", every(k, n))
        } else {
            "; the paper makes no toy-model claim for this objective (docs/paper.md)".to_string()
        };
        let _ = writeln!(
            md,
            "- {} ends with higher chosen and lower unseen probability than DPO in {k}/{n} seeds (chosen avg {} vs DPO, unseen avg {}){expectation}.",
            pretty(&g.label),
            signed(dc),
            signed(du)
        );
    }
    let _ = writeln!(md);
}

/// A warning when compared configurations stopped at different epochs (their final values are not comparable).
fn unequal<'g, 'a: 'g>(md: &mut String, gs: impl Iterator<Item = &'g Group<'a>>) {
    let ends: Vec<(String, usize)> = gs.map(|g| (pretty(&g.label), common_end(g))).collect();
    if ends.windows(2).any(|w| w[0].1 != w[1].1) {
        let list: Vec<String> = ends.iter().map(|(l, e)| format!("{l}: {e}")).collect();
        let _ = writeln!(md, "Caution: these configurations ran to different epochs ({}), so their final values are not directly comparable.\n", list.join(", "));
    }
}

fn signed(s: Option<Summary>) -> String {
    match s {
        Some(s) => format!("{}{}", if s.mean >= 0.0 { "+" } else { "" }, s.show()),
        None => "n/a".into(),
    }
}

fn scenarios(md: &mut String, gs: &[Group]) {
    let _ = writeln!(md, "## Data scenarios (DPO)\n");
    let sc: Vec<(u8, &Group)> = (1..=4).filter_map(|s| find(gs, "dpo", s).map(|g| (s, g))).collect();
    if sc.len() < 2 {
        let _ = writeln!(md, "Only {} DPO scenario(s) ran; the scenarios are not compared.\n", sc.len());
        return;
    }
    let _ = writeln!(md, "Scenario rows (responses 0-3 | 4-7 | 8 | 9): 1: 0.12|0.12|0.03|0.01 (both on-policy), 2: 0.12|0.02|0.40|0.04 (rejected off-policy), 3: 0.02|0.12|0.40|0.04 (chosen off-policy), 4: 0.02|0.02|0.80|0.04 (both off-policy).\n");
    header(
        md,
        &[
            "scenario",
            "seeds",
            "chosen avg at 0",
            "chosen avg final",
            "chosen min final",
            "rejected avg final",
            "mean log pi(rejected) final",
            "unseen avg 0 -> final",
            "mass 8-9 final",
        ],
    );
    for (s, g) in &sc {
        let f = |m: &str| show(over_seeds(&g.runs, |r| last(r, m)));
        let i = |m: &str| show(over_seeds(&g.runs, |r| first(r, m)));
        row(
            md,
            &[
                &s.to_string(),
                &g.runs.len().to_string(),
                &i(CH),
                &f(CH),
                &f(CH_MIN),
                &f(REJ),
                &f(LP_REJ),
                &format!("{} -> {}", i(UNSEEN), f(UNSEEN)),
                &f(M89),
            ],
        );
    }
    let best_mean = sc
        .iter()
        .filter_map(|(s, g)| over_seeds(&g.runs, |r| last(r, CH)).map(|m| (*s, m.mean)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    // Per seed (seeds where every measured scenario ran): is scenario 1 the one with the highest final chosen avg,
    // and the one with the smallest growth of the unseen avg?
    let seeds: Vec<u64> =
        sc[0].1.runs.iter().map(|r| r.seed).filter(|s| sc.iter().all(|(_, g)| same_seed(g, *s).is_some())).collect();
    let (mut best_c, mut best_u, mut n) = (0, 0, 0);
    for seed in &seeds {
        let vals: Option<Vec<(u8, f64, f64)>> = sc
            .iter()
            .map(|(s, g)| {
                let r = same_seed(g, *seed)?;
                Some((*s, last(r, CH)?, last(r, UNSEEN)? - first(r, UNSEEN)?))
            })
            .collect();
        let Some(vals) = vals else { continue };
        n += 1;
        if vals.iter().max_by(|a, b| a.1.total_cmp(&b.1)).map(|v| v.0) == Some(1) {
            best_c += 1;
        }
        if vals.iter().min_by(|a, b| a.2.total_cmp(&b.2)).map(|v| v.0) == Some(1) {
            best_u += 1;
        }
    }
    let _ = writeln!(md);
    unequal(md, sc.iter().map(|p| p.1));
    if let Some((s, m)) = best_mean {
        let _ = writeln!(md, "The highest mean final chosen avg is scenario {s}'s ({}).", num(m));
    }
    if sc[0].0 == 1 {
        let _ = writeln!(
            md,
            "Scenario 1 ends with the highest chosen avg among the {} measured scenarios in {best_c}/{n} seeds, and with the \
             smallest change of the unseen avg (end minus start) in {best_u}/{n} seeds. The paper claims scenario 1 (both on-policy) is best; \
             it did not reproduce robustly in an independent re-implementation (docs/paper.md). By final chosen \
             probability these runs {}.\n",
            sc.len(),
            if n > 0 && best_c == n { "are consistent with the claim" } else if best_c > 0 { "are consistent with it in some seeds only" } else { "do not support the claim" }
        );
    } else {
        let _ = writeln!(md, "Scenario 1 did not run, so the paper's claim that it is best is not tested.\n");
    }
}

fn ppo(md: &mut String, gs: &[Group]) {
    let _ = writeln!(md, "## RM + PPO (scenario 1)\n");
    let Some(p) = find(gs, "rm+ppo", 1) else {
        let _ = writeln!(md, "RM+PPO runs were not part of this study run.\n");
        return;
    };
    let dpo = find(gs, "dpo", 1);
    header(
        md,
        &[
            "configuration",
            "seeds",
            "chosen avg",
            "chosen min",
            "rejected avg",
            "mean log pi(rejected)",
            "unseen avg",
            "mass other chosen",
            "min rejected avg over training",
        ],
    );
    let minrej = |g: &Group| show(over_seeds(&g.runs, |r| trough(r, REJ).map(|t| t.1)));
    if let Some(d) = dpo {
        finals(md, "DPO", d, &minrej(d));
    }
    finals(md, "RM+PPO", p, &minrej(p));
    let (k_drop, n) = count(&p.runs, |r| Some(trough(r, REJ)?.1 >= 1e-3));
    let (k_u, n_u) = count(&p.runs, |r| {
        let (u0, u1) = (first(r, UNSEEN)?, last(r, UNSEEN)?);
        Some((u1 - u0).abs() <= TOL * u0)
    });
    let ratio = over_seeds(&p.runs, |r| Some(last(r, UNSEEN)? / first(r, UNSEEN)?));
    let _ = writeln!(
        md,
        "\n- The rejected avg probability stays at or above 1e-3 throughout training (no drastic drop) in {k_drop}/{n} seeds.\n\
         - The unseen avg ends within {:.0}% of its start in {k_u}/{n_u} seeds (final / start = {}).",
        TOL * 100.0,
        show(ratio)
    );
    if let Some(d) = dpo {
        let dc = over_seeds(&p.runs, |r| Some(last(r, CH)? - last(same_seed(d, r.seed)?, CH)?));
        let _ = writeln!(md, "- Final chosen avg, RM+PPO minus DPO of the same seed: {}.", signed(dc));
    }
    let _ = writeln!(
        md,
        "\nPaper: RM + PPO does not show the 3D-properties. No drastic drop: {}; unseen mass near its start: {}.\n",
        every(k_drop, n),
        every(k_u, n_u)
    );
}

// ---- token-level toy ----------------------------------------------------------------------------------------------

const TOKEN_LOSSES: [&str; 3] = ["dpo", "flex-dpo", "sft-dpo"];
const TOKEN_METRICS: [(&str, &str); 8] = [
    ("logps/chosen", "log pi(chosen sequence)"),
    ("logps/rejected", "log pi(rejected sequence)"),
    ("token/shared_logp_chosen", "chosen: log-prob of tokens shared with the rejected"),
    ("token/distinct_logp_chosen", "chosen: log-prob of its distinct tokens"),
    ("token/distinct_logp_rejected", "rejected: log-prob of its distinct tokens"),
    ("token/unseen_mass", "mass on unseen sequences"),
    ("rewards/margins", "rewards/margins"),
    ("rewards/accuracies", "rewards/accuracies"),
];

/// The token-level toy's section: per loss type (dpo, flex-dpo, sft-dpo), first vs last logged epoch of each run,
/// means over seeds (runs), and whether the chosen sequence's log-prob falls along with the rejected one.
pub fn token_section(records: &[ToyRecord]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Token-level toy\n");
    // loss type -> run -> (first record, last record)
    let mut by: BTreeMap<&str, BTreeMap<&str, (&ToyRecord, &ToyRecord)>> = BTreeMap::new();
    for rec in records.iter().filter(|r| TOKEN_LOSSES.contains(&r.loss_type.as_str())) {
        let e = by.entry(rec.loss_type.as_str()).or_default().entry(rec.run.as_str()).or_insert((rec, rec));
        if rec.epoch < e.0.epoch {
            e.0 = rec;
        }
        if rec.epoch > e.1.epoch {
            e.1 = rec;
        }
    }
    if by.is_empty() {
        let _ = writeln!(md, "No token-level records with loss type dpo, flex-dpo or sft-dpo.\n");
        return md;
    }
    let losses: Vec<&str> = TOKEN_LOSSES.iter().copied().filter(|l| by.contains_key(l)).collect();
    let _ = writeln!(
        md,
        "A tiny transformer generating short responses whose chosen and rejected sequences share tokens (the paper's argument for \
         dispersion in real models). First vs last logged epoch, means over seeds [min, max].\n"
    );
    let mut cols = vec!["metric".to_string()];
    for l in &losses {
        let runs = &by[l];
        let (e0, e1) =
            (runs.values().map(|p| p.0.epoch).min().unwrap_or(0), runs.values().map(|p| p.1.epoch).max().unwrap_or(0));
        cols.push(format!("{l} ({} seeds): epoch {e0} -> {e1}", runs.len()));
    }
    header(&mut md, &cols.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let val = |rec: &ToyRecord, m: &str| rec.metrics.get(m).map(|&x| x as f64).filter(|x| x.is_finite());
    for (m, what) in TOKEN_METRICS {
        let mut cells = vec![format!("{what} (`{m}`)")];
        let mut any = false;
        for l in &losses {
            let runs = &by[l];
            let a = summary(&runs.values().filter_map(|p| val(p.0, m)).collect::<Vec<_>>());
            let b = summary(&runs.values().filter_map(|p| val(p.1, m)).collect::<Vec<_>>());
            any |= a.is_some() || b.is_some();
            cells.push(format!("{} -> {}", show(a), show(b)));
        }
        if any {
            row(&mut md, &cells.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        }
    }
    let _ = writeln!(md);
    for l in &losses {
        let runs = &by[l];
        let delta = |m: &str| -> Vec<f64> { runs.values().filter_map(|p| Some(val(p.1, m)? - val(p.0, m)?)).collect() };
        let (dc, dr) = (delta("logps/chosen"), delta("logps/rejected"));
        if dc.is_empty() || dr.is_empty() {
            let _ = writeln!(md, "- {l}: the sequence log-probs were not logged.");
            continue;
        }
        let both = runs.values().filter(|p| matches!((val(p.0, "logps/chosen"), val(p.1, "logps/chosen"), val(p.0, "logps/rejected"), val(p.1, "logps/rejected")), (Some(c0), Some(c1), Some(r0), Some(r1)) if c1 < c0 && r1 < r0)).count();
        let n = runs
            .values()
            .filter(|p| {
                val(p.0, "logps/chosen").is_some()
                    && val(p.1, "logps/chosen").is_some()
                    && val(p.0, "logps/rejected").is_some()
                    && val(p.1, "logps/rejected").is_some()
            })
            .count();
        let (sc, sr) = (summary(&dc), summary(&dr));
        let verb = if both == n && n > 0 {
            "falls along with the rejected one in every seed"
        } else if both > 0 {
            "falls along with the rejected one in some seeds"
        } else {
            "does not fall along with the rejected one"
        };
        let _ = write!(md, "- {l}: the chosen sequence's log-prob {verb} ({both}/{n} seeds): chosen changes by {} nats, rejected by {} nats.", signed(sc), signed(sr));
        let (ds, dd) = (summary(&delta("token/shared_logp_chosen")), summary(&delta("token/distinct_logp_chosen")));
        if ds.is_some() || dd.is_some() {
            let _ = write!(md, " Of the chosen sequence, the tokens shared with the rejected change by {} and its distinct tokens by {}.", signed(ds), signed(dd));
        }
        if let Some(u) = summary(&delta("token/unseen_mass")) {
            let _ = write!(md, " The mass on unseen sequences changes by {}.", signed(Some(u)));
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md);
    md
}

// ---- replay -------------------------------------------------------------------------------------------------------

/// Rebuild runs from earlier studies' outputs (each directory's study.json, metrics.jsonl and probs.json) and write
/// their figures and one report into `out`; trains nothing (`toy3d --replay dir1:dir2 --out dir`).
pub fn replay(dirs: &str, out: &Path) -> Result<(), String> {
    use serde_json::Value;
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let json = |p: &Path| -> Result<Value, String> {
        serde_json::from_str(&read(p)?).map_err(|e| format!("{}: {e}", p.display()))
    };
    let mut runs: Vec<RunOutput> = Vec::new();
    let mut metas: Vec<StudyMeta> = Vec::new();
    for d in dirs.split(':') {
        let d = Path::new(d);
        let (probs_path, study_path) = (d.join("probs.json"), d.join("study.json"));
        let (probs, study) = (json(&probs_path)?, json(&study_path)?);
        let bad = |p: &Path, what: &str| format!("{}: missing or malformed {what}", p.display());
        let label = study["configs"][0][0].as_str().ok_or_else(|| bad(&study_path, "configs[0][0]"))?.to_string();
        let metrics_path = d.join("metrics.jsonl");
        let mut by_run: BTreeMap<String, Vec<ToyRecord>> = BTreeMap::new();
        for (i, line) in read(&metrics_path)?.lines().enumerate() {
            let rec: ToyRecord =
                serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", metrics_path.display(), i + 1))?;
            by_run.entry(rec.run.clone()).or_default().push(rec);
        }
        let flat = |v: &Value| -> Option<Vec<f32>> {
            let mut out = Vec::new();
            for row in v.as_array()? {
                for x in row.as_array()? {
                    out.push(x.as_f64()? as f32);
                }
            }
            Some(out)
        };
        for (run, records) in by_run {
            let p = probs[&run].as_object().ok_or_else(|| bad(&probs_path, &run))?;
            let mut snapshots = Vec::new();
            for (k, v) in p.iter().filter(|(k, _)| *k != "sft") {
                let epoch = k.parse().map_err(|_| bad(&probs_path, &format!("{run}.{k} (an epoch)")))?;
                snapshots.push((epoch, flat(v).ok_or_else(|| bad(&probs_path, &format!("{run}.{k}")))?));
            }
            snapshots.sort_by_key(|s| s.0);
            runs.push(RunOutput {
                label: label.clone(),
                scenario: records[0].scenario,
                seed: records[0].seed,
                sft_probs: flat(&p["sft"]).ok_or_else(|| bad(&probs_path, &format!("{run}.sft")))?,
                snapshots,
                records,
            });
        }
        let str_ = |k: &str| study[k].as_str().map(String::from).ok_or_else(|| bad(&study_path, k));
        let u64_ = |k: &str| study[k].as_u64().ok_or_else(|| bad(&study_path, k));
        let f64_ = |k: &str| study[k].as_f64().ok_or_else(|| bad(&study_path, k));
        let seeds = study["seeds"].as_array().ok_or_else(|| bad(&study_path, "seeds"))?;
        metas.push(StudyMeta {
            device: str_("device")?,
            backend: str_("backend")?,
            threads: u64_("threads")? as usize,
            seconds: f64_("seconds")?,
            epochs: u64_("epochs")? as usize,
            seeds: seeds
                .iter()
                .map(|s| s.as_u64().ok_or_else(|| bad(&study_path, "seeds")))
                .collect::<Result<_, _>>()?,
            hidden: u64_("hidden")? as usize,
            optimizer: str_("optimizer")?,
            lr: f64_("lr")? as f32,
            configs: vec![(label.clone(), runs.last().map(|r| r.scenario).unwrap_or(1))],
        });
    }
    let mut meta = metas.first().cloned().ok_or("--replay: no directories")?;
    meta.seconds = metas.iter().map(|m| m.seconds).sum();
    meta.epochs = metas.iter().map(|m| m.epochs).max().unwrap_or(0);
    meta.configs = metas.iter().flat_map(|m| m.configs.clone()).collect();
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    crate::figures::write_all(out, &runs)?;
    write_report(out, &runs, &meta)
}

#[cfg(test)]
mod tests {
    //! The report and figures on synthetic runs (no GPU): every section must render with missing configurations.
    use super::*;
    use crate::figures::write_all;

    fn synthetic(label: &str, scenario: u8, seed: u64, epochs: usize) -> RunOutput {
        let mut records = Vec::new();
        for e in (0..=epochs).step_by(10) {
            let t = e as f64 / epochs as f64;
            let c = 0.12 + 0.45 * (std::f64::consts::PI * t * 0.8).sin() + seed as f64 * 0.01;
            let lr = (0.12f64).ln() - 120.0 * t;
            let mut m = BTreeMap::new();
            for (k, v) in [
                (CH, c),
                (CH_MIN, c * 0.8),
                (REJ, lr.exp()),
                ("toy/rejected_max", lr.exp() * 2.0),
                (UNSEEN, 0.095 - 0.03 * (std::f64::consts::PI * t).sin()),
                (M89, 0.04 + 0.02 * t),
                (OTHER_CH, 0.36 + 0.1 * t),
                (LP_CH, c.ln()),
                (LP_REJ, lr),
                (G_CH, -0.38 - 5.0 * t),
                (G_REJ, -0.38 + 46.0 * t),
            ] {
                m.insert(k.to_string(), v as f32);
            }
            if label.starts_with("token-") {
                m.insert("logps/chosen".into(), (-3.0 - t) as f32);
                m.insert("logps/rejected".into(), (-3.0 - 20.0 * t) as f32);
            }
            let loss_type = label.trim_start_matches("token-").split('(').next().unwrap().to_string();
            records.push(ToyRecord {
                run: format!("{label}-s{scenario}-seed{seed}"),
                loss_type,
                scenario,
                seed,
                epoch: e,
                metrics: m,
            });
        }
        let probs = |c: f32| (0..40).map(|i| if i % 10 == (i / 10) { c } else { 0.05 }).collect::<Vec<f32>>();
        RunOutput {
            label: label.into(),
            scenario,
            seed,
            records,
            sft_probs: probs(0.12),
            snapshots: vec![(0, probs(0.12)), (epochs, probs(0.5))],
        }
    }

    fn meta(runs: &[RunOutput]) -> StudyMeta {
        StudyMeta {
            device: "test".into(),
            backend: "none".into(),
            threads: 1,
            seconds: 0.0,
            epochs: runs.iter().filter_map(last_epoch).max().unwrap_or(0),
            seeds: vec![0, 1],
            hidden: 256,
            optimizer: "adam".into(),
            lr: 1e-3,
            configs: vec![("dpo".into(), 1), ("rm+ppo".into(), 1)],
        }
    }

    fn render_all(runs: &[RunOutput]) -> String {
        let dir = std::env::temp_dir().join(format!("toy3d-report-test-{}-{}", std::process::id(), runs.len()));
        std::fs::create_dir_all(&dir).unwrap();
        write_all(&dir, runs).unwrap();
        write_report(&dir, runs, &meta(runs)).unwrap();
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        md
    }

    #[test]
    fn should_render_every_section_on_a_full_synthetic_study() {
        let mut runs = Vec::new();
        for (l, s) in [
            ("dpo", 1),
            ("flex-dpo(beta_neg=0.08)", 1),
            ("sft-dpo(gamma=0.1)", 1),
            ("rm+ppo", 1),
            ("dpo", 2),
            ("dpo", 3),
            ("token-dpo", 1),
        ] {
            for seed in 0..2 {
                runs.push(synthetic(l, s, seed, 2000));
            }
        }
        let md = render_all(&runs);
        for h in [
            "## 1. Drastic drop",
            "## 2. Degradation",
            "## 3. Dispersion",
            "## What each fix does",
            "## Data scenarios",
            "## RM + PPO",
            "## Token-level toy",
        ] {
            assert!(md.contains(h), "missing {h}:\n{md}");
        }
        assert!(!md.contains("were not part of this study run"));
        assert!(md.contains("falls along with the rejected one in every seed"), "{md}");
    }

    #[test]
    fn should_render_without_dpo_ppo_or_token_runs() {
        let runs = vec![synthetic("ipo", 1, 0, 300)];
        let md = render_all(&runs);
        assert!(md.contains("RM+PPO runs were not part of this study run"));
        assert!(md.contains("No DPO scenario-1 runs"));
        assert!(!md.contains("## Token-level toy"));
        let md = render_all(&[]);
        assert!(md.contains("## How it ran"));
    }
}
