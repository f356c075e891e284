//! The sweep's report: DIR/report.md (per-slice tables, the SFT grid, and answers in numbers to the four
//! questions) and DIR/figures/<slice>.svg (DPO's chosen and unseen averages over epochs, one line per value).
//! Every number comes from DIR/cells/*.json; the criteria are the toy study's (see `RunSummary`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::stats::{num, summary, Summary};
use crate::{CellResult, RunSummary};

/// The paper's Figure 2 (DPO, scenario 1), read off its plot: chosen avg peaks ~0.58 near epoch 1000 and is ~0.35 at
/// epoch 2000; the unseen avg goes 0.095 -> 0.05 -> 0.08.
const PAPER_PEAK_EPOCH: f64 = 1000.0;
const PAPER_PEAK: f64 = 0.58;
const PAPER_END: f64 = 0.35;
const PAPER_UNSEEN_MIN: f64 = 0.05;
const PAPER_UNSEEN_END: f64 = 0.08;

const SLICES: [(&str, &str); 10] = [
    ("base", "The base point (the study's defaults)"),
    ("lr", "Learning rate (Adam)"),
    ("optimizer", "Optimizer"),
    ("hidden", "Hidden width"),
    ("depth", "Hidden layers (2 in the paper)"),
    ("init", "Initialisation scale (x PyTorch's default uniform init)"),
    ("bias", "First-layer bias"),
    ("beta", "beta (DPO, Flex-DPO's beta_pos, SFT-DPO)"),
    ("flex", "Flex-DPO's beta_neg / beta_pos"),
    ("sft", "The SFT phase: epochs x learning rate (two factors)"),
];

fn runs<'a>(r: &'a CellResult, method: &str, scenario: u8) -> Vec<&'a RunSummary> {
    r.runs.iter().filter(|x| x.method == method && x.scenario == scenario).collect()
}

fn frac(v: &[&RunSummary], f: impl Fn(&RunSummary) -> bool) -> String {
    if v.is_empty() {
        return "-".into();
    }
    format!("{}/{}", v.iter().filter(|r| f(r)).count(), v.len())
}

fn over(v: &[&RunSummary], f: impl Fn(&RunSummary) -> f64) -> Option<Summary> {
    summary(&v.iter().map(|r| f(r)).collect::<Vec<_>>())
}

fn show(s: Option<Summary>) -> String {
    s.map(|s| s.show()).unwrap_or_else(|| "-".into())
}

fn mean(s: Option<Summary>) -> Option<f64> {
    s.map(|s| s.mean)
}

/// Distance of DPO scenario 1 from the paper's Figure 2: the mean relative error of the peak epoch, peak height,
/// final chosen avg, unseen minimum and final unseen avg (means over seeds). 0 is a perfect match.
pub fn paper_distance(v: &[&RunSummary]) -> Option<f64> {
    let rel = |x: Option<Summary>, p: f64| mean(x).map(|m| ((m - p) / p).abs());
    let parts = [
        rel(over(v, |r| r.peak_epoch as f64), PAPER_PEAK_EPOCH)?,
        rel(over(v, |r| r.peak), PAPER_PEAK)?,
        rel(over(v, |r| r.chosen_end), PAPER_END)?,
        rel(over(v, |r| r.unseen_min), PAPER_UNSEEN_MIN)?,
        rel(over(v, |r| r.unseen_end), PAPER_UNSEEN_END)?,
    ];
    Some(parts.iter().sum::<f64>() / parts.len() as f64)
}

/// Seeds where `fix` ends with a higher chosen avg AND a lower unseen avg than DPO (scenario 1) of the same seed,
/// and the mean margins (fix - DPO chosen; DPO - fix unseen).
fn fix_vs_dpo(r: &CellResult, fix: &str) -> Option<(usize, usize, f64, f64)> {
    let dpo = runs(r, "dpo", 1);
    let f = runs(r, fix, 1);
    let pairs: Vec<(&RunSummary, &RunSummary)> =
        f.iter().filter_map(|x| dpo.iter().find(|d| d.seed == x.seed).map(|d| (*x, *d))).collect();
    if pairs.is_empty() {
        return None;
    }
    let wins = pairs.iter().filter(|(x, d)| x.chosen_end > d.chosen_end && x.unseen_end < d.unseen_end).count();
    let n = pairs.len() as f64;
    let dc = pairs.iter().map(|(x, d)| x.chosen_end - d.chosen_end).sum::<f64>() / n;
    let du = pairs.iter().map(|(x, d)| d.unseen_end - x.unseen_end).sum::<f64>() / n;
    Some((wins, pairs.len(), dc, du))
}

/// The scenarios ordered by DPO's mean final chosen avg, highest first ("3 > 2 > 1 > 4"), when all four ran.
fn scenario_ranking(r: &CellResult) -> Option<String> {
    let mut m: Vec<(u8, f64)> =
        (1..=4).map(|s| Some((s, mean(over(&runs(r, "dpo", s), |x| x.chosen_end))?))).collect::<Option<_>>()?;
    m.sort_by(|a, b| b.1.total_cmp(&a.1));
    Some(m.iter().map(|(s, _)| s.to_string()).collect::<Vec<_>>().join(" > "))
}

/// Seeds (run in all four scenarios) where scenario 1 ends with the highest chosen avg: (k, n).
fn scenario1_best(r: &CellResult) -> Option<(usize, usize)> {
    let by: Vec<Vec<&RunSummary>> = (1..=4).map(|s| runs(r, "dpo", s)).collect();
    if by.iter().any(|v| v.is_empty()) {
        return None;
    }
    let (mut k, mut n) = (0, 0);
    for s1 in &by[0] {
        let ends: Option<Vec<f64>> =
            by.iter().map(|v| v.iter().find(|x| x.seed == s1.seed).map(|x| x.chosen_end)).collect();
        let Some(ends) = ends else { continue };
        n += 1;
        if ends[1..].iter().all(|&e| ends[0] > e) {
            k += 1;
        }
    }
    Some((k, n))
}

fn row(md: &mut String, cells: &[String]) {
    let _ = writeln!(md, "| {} |", cells.join(" | "));
}

fn header(md: &mut String, cells: &[&str]) {
    row(md, &cells.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    row(md, &cells.iter().map(|_| "---".to_string()).collect::<Vec<_>>());
}

fn property_row(name: &str, r: &CellResult) -> Vec<String> {
    let v = runs(r, "dpo", 1);
    vec![
        name.to_string(),
        frac(&v, |x| x.d1),
        frac(&v, |x| x.d2),
        frac(&v, |x| x.d3),
        frac(&v, |x| x.falls && x.peak > x.chosen_start),
        show(over(&v, |x| x.peak_epoch as f64)),
        show(over(&v, |x| x.peak)),
        show(over(&v, |x| x.chosen_end)),
        format!(
            "{} -> {} -> {}",
            mean(over(&v, |x| x.unseen_start)).map(num).unwrap_or_else(|| "-".into()),
            mean(over(&v, |x| x.unseen_min)).map(num).unwrap_or_else(|| "-".into()),
            mean(over(&v, |x| x.unseen_end)).map(num).unwrap_or_else(|| "-".into())
        ),
        show(over(&v, |x| x.d_mass_89)),
        show(over(&v, |x| x.d_mass_other_chosen)),
        paper_distance(&v).map(num).unwrap_or_else(|| "-".into()),
    ]
}

fn fixes_row(name: &str, r: &CellResult) -> Vec<String> {
    let fx = |f: &str| match fix_vs_dpo(r, f) {
        Some((k, n, dc, du)) => (format!("{k}/{n}"), format!("{} / {}", num(dc), num(du))),
        None => ("-".into(), "-".into()),
    };
    let (fw, fm) = fx("flex-dpo");
    let (sw, sm) = fx("sft-dpo");
    let flex_end = show(over(&runs(r, "flex-dpo", 1), |x| x.chosen_end));
    let s1 = scenario1_best(r).map(|(k, n)| format!("{k}/{n}")).unwrap_or_else(|| "-".into());
    let rank = scenario_ranking(r).unwrap_or_else(|| "-".into());
    vec![name.to_string(), flex_end, fw, fm, sw, sm, s1, rank, format!("{:.0}", r.seconds)]
}

const PROPERTY_HEADER: [&str; 12] = [
    "value",
    "D1 drop",
    "D2 degradation",
    "D3 dispersion",
    "chosen rises then falls",
    "chosen peak epoch",
    "chosen peak",
    "chosen final",
    "unseen start -> min -> final",
    "mass 8-9, peak -> end",
    "other prompts' chosen, peak -> end",
    "distance to Fig. 2",
];
const FIXES_HEADER: [&str; 9] = [
    "value",
    "Flex-DPO chosen final",
    "Flex-DPO wins",
    "Flex-DPO margin (chosen / unseen)",
    "SFT-DPO wins",
    "SFT-DPO margin (chosen / unseen)",
    "scenario 1 best",
    "scenarios by final chosen",
    "seconds",
];

pub fn write(out: &Path, results: &[CellResult]) -> Result<(), String> {
    let figs = out.join("figures");
    std::fs::create_dir_all(&figs).map_err(|e| format!("cannot create {}: {e}", figs.display()))?;
    let mut md = String::new();
    let base = results.iter().find(|r| r.cell.slice == "base");
    let seeds = results.iter().map(|r| r.seeds.len()).max().unwrap_or(0);
    let epochs = results.iter().map(|r| r.epochs).max().unwrap_or(0);
    let seconds: f64 = results.iter().map(|r| r.seconds).sum();
    let _ = writeln!(md, "# How robust are the toy's 3D-properties? A sensitivity map\n");
    let _ = writeln!(
        md,
        "{} cells, {seeds} seeds each, {epochs} preference epochs after the SFT phase; {:.0} s of training summed over \
         cells (cells train in parallel on the worker threads). Each cell changes one or two of the toy's free \
         choices from the base point (the toy study's defaults: Adam lr 1e-3, hidden 256, PyTorch's default init, no \
         first-layer bias, beta 0.1, Flex-DPO beta_neg = 0.5 beta_pos, SFT-DPO gamma 0.1, SFT 400 epochs at lr \
         1e-2) and runs DPO in the four data scenarios plus Flex-DPO and SFT-DPO in scenario 1, unless the slice says \
         otherwise. Widths 512 and 1024 cost H^2 per step, so they run scenario 1 only (1024: DPO only).\n",
        results.len(),
        seconds
    );
    let _ = writeln!(
        md,
        "Criteria (the toy study's, judged per seed on DPO scenario 1): **D1** by epoch 500 the mean log pi(rejected) \
         fell by more than 5 nats and by more than 5x the change of log pi(chosen); **D2** log10 |dl/dpi+| fell by at \
         least one order from epoch 0 to the end; **D3** the chosen avg ends below 0.9x its peak while the unseen avg \
         ends more than 10% above its minimum; \"rises then falls\": the chosen avg peaks above its start and ends \
         below 0.9x the peak. Mass changes are per prompt, from each seed's chosen peak to the end. \"Distance to \
         Fig. 2\" is the mean relative error of five means over seeds against the paper's Figure 2 (peak epoch ~1000, \
         peak ~0.58, final chosen ~0.35, unseen minimum ~0.05, final unseen ~0.08): 0 is a perfect match. A fix \
         \"wins\" in a seed when it ends with a higher chosen avg AND a lower unseen avg than DPO of the same seed; \
         its margins are mean (fix - DPO) final chosen and (DPO - fix) final unseen. \"Scenario 1 best\": seeds where \
         DPO in scenario 1 ends with a higher chosen avg than in each of scenarios 2-4. Values are means over seeds \
         [min, max].\n"
    );
    answers(&mut md, results, base);
    for (slice, title) in SLICES {
        let mut cells: Vec<&CellResult> = results.iter().filter(|r| r.cell.slice == slice).collect();
        if cells.is_empty() {
            continue;
        }
        cells.sort_by(|a, b| order_key(&a.cell.value).total_cmp(&order_key(&b.cell.value)));
        let _ = writeln!(md, "## {title}\n");
        let mut with_base: Vec<(String, &CellResult)> = Vec::new();
        if slice != "base" {
            if let Some(b) = base {
                with_base.push(("base".into(), b));
            }
        }
        with_base.extend(cells.iter().map(|r| (r.cell.value.clone(), *r)));
        if slice == "sft" {
            sft_grid(&mut md, &with_base);
        }
        if slice != "flex" {
            header(&mut md, &PROPERTY_HEADER);
            for (name, r) in &with_base {
                row(&mut md, &property_row(name, r));
            }
            let _ = writeln!(md);
        }
        header(&mut md, &FIXES_HEADER);
        for (name, r) in &with_base {
            row(&mut md, &fixes_row(name, r));
        }
        let _ = writeln!(md);
        if slice != "flex" && slice != "base" {
            let file = format!("{slice}.svg");
            figure(&figs.join(&file), title, &with_base)?;
            let _ = writeln!(md, "![{title}](figures/{file})\n");
        }
    }
    dpo3d::checkpoint::write_atomic(&out.join("report.md"), md.as_bytes()).map_err(|e| e.to_string())
}

/// Numeric order of a slice value ("0.003", "512", "400 epochs lr 0.01", "AdamW wd 0.1"); text sorts after.
fn order_key(v: &str) -> f64 {
    let nums: Vec<f64> = v.split(' ').filter_map(|t| t.parse::<f64>().ok()).collect();
    match nums.as_slice() {
        [a] => *a,
        [a, b] => a * 1e3 + b,
        _ => f64::MAX,
    }
}

fn sft_grid(md: &mut String, cells: &[(String, &CellResult)]) {
    let mut epochs: Vec<usize> = cells.iter().map(|c| c.1.cell.knobs.sft_epochs).collect();
    let mut lrs: Vec<f32> = cells.iter().map(|c| c.1.cell.knobs.sft_lr).collect();
    epochs.sort();
    epochs.dedup();
    lrs.sort_by(f32::total_cmp);
    lrs.dedup();
    let at = |e: usize, lr: f32| cells.iter().find(|c| c.1.cell.knobs.sft_epochs == e && c.1.cell.knobs.sft_lr == lr);
    for (what, f) in [
        (
            "D3 dispersion (seeds)",
            &(|r: &CellResult| frac(&runs(r, "dpo", 1), |x| x.d3)) as &dyn Fn(&CellResult) -> String,
        ),
        ("chosen peak epoch", &|r: &CellResult| {
            show(over(&runs(r, "dpo", 1), |x| x.peak_epoch as f64)).split(' ').next().unwrap_or("-").to_string()
        }),
        ("distance to Fig. 2", &|r: &CellResult| {
            paper_distance(&runs(r, "dpo", 1)).map(num).unwrap_or_else(|| "-".into())
        }),
        ("scenario 1 best (seeds)", &|r: &CellResult| {
            scenario1_best(r).map(|(k, n)| format!("{k}/{n}")).unwrap_or_else(|| "-".into())
        }),
    ] {
        let _ = writeln!(md, "{what}, rows SFT epochs, columns SFT learning rate:\n");
        let mut h = vec!["SFT epochs".to_string()];
        h.extend(lrs.iter().map(|l| format!("lr {l}")));
        row(md, &h);
        row(md, &h.iter().map(|_| "---".to_string()).collect::<Vec<_>>());
        for &e in &epochs {
            let mut r = vec![e.to_string()];
            r.extend(lrs.iter().map(|&l| at(e, l).map(|c| f(c.1)).unwrap_or_else(|| "-".into())));
            row(md, &r);
        }
        let _ = writeln!(md);
    }
}

fn answers(md: &mut String, results: &[CellResult], base: Option<&CellResult>) {
    let _ = writeln!(md, "## Answers\n");
    let dpo_cells: Vec<&CellResult> = results.iter().filter(|r| !runs(r, "dpo", 1).is_empty()).collect();
    let name = |r: &CellResult| {
        if r.cell.slice == "base" {
            "base".to_string()
        } else {
            format!("{} = {}", r.cell.slice, r.cell.value)
        }
    };
    // 1. D3 in every seed.
    let every: Vec<String> = dpo_cells
        .iter()
        .filter(|r| {
            let v = runs(r, "dpo", 1);
            !v.is_empty() && v.iter().all(|x| x.d3)
        })
        .map(|r| format!("{} ({})", name(r), frac(&runs(r, "dpo", 1), |x| x.d3)))
        .collect();
    let base_d3 = base.map(|b| frac(&runs(b, "dpo", 1), |x| x.d3)).unwrap_or_else(|| "-".into());
    let _ = writeln!(
        md,
        "**Which choices make D3 (dispersion with the chosen probability's late fall) appear in every seed?** At the base \
         point it appears in {base_d3} seeds. In every seed: {}.\n",
        if every.is_empty() { "no cell".to_string() } else { every.join(", ") }
    );
    // 2. Figure 2's timing.
    let mut ranked: Vec<(f64, &CellResult)> =
        dpo_cells.iter().filter_map(|r| paper_distance(&runs(r, "dpo", 1)).map(|d| (d, *r))).collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
    let base_d = base.and_then(|b| paper_distance(&runs(b, "dpo", 1)));
    let _ = writeln!(
        md,
        "**Which settings reproduce the paper's Figure 2 timing (chosen peak ~0.58 near epoch 1000, ~0.35 at 2000; \
         unseen 0.095 -> 0.05 -> 0.08)?** Distance at the base point: {}. The closest cells:\n",
        base_d.map(num).unwrap_or_else(|| "-".into())
    );
    header(md, &["cell", "distance", "peak epoch", "peak", "final chosen", "unseen min", "unseen final", "D3"]);
    for (d, r) in ranked.iter().take(6) {
        let v = runs(r, "dpo", 1);
        row(
            md,
            &[
                name(r),
                num(*d),
                show(over(&v, |x| x.peak_epoch as f64)),
                show(over(&v, |x| x.peak)),
                show(over(&v, |x| x.chosen_end)),
                show(over(&v, |x| x.unseen_min)),
                show(over(&v, |x| x.unseen_end)),
                frac(&v, |x| x.d3),
            ],
        );
    }
    let _ = writeln!(md);
    // A preset is offered only for a cell clearly closer than the base point (below 0.8x its distance).
    match (ranked.iter().find(|(_, r)| r.cell.slice != "base"), base_d) {
        (Some((d, r)), Some(b)) if *d < 0.8 * b => {
            let _ = writeln!(
                md,
                "{} is clearly closer to Figure 2 than the base point ({} vs {}): a candidate preset.\n",
                name(r),
                num(*d),
                num(b)
            );
        }
        (Some((d, r)), Some(b)) => {
            let _ = writeln!(
                md,
                "No cell is clearly closer to Figure 2 than the base point (the closest other cell, {}, is at {} against \
                 the base point's {}; \"clearly\" would be below 0.8x), so toy3d and the browser demo keep the base \
                 point as their defaults and no preset is offered.\n",
                name(r),
                num(*d),
                num(b)
            );
        }
        _ => {}
    }
    // 3. Scenario 1 best.
    let s1: Vec<(String, (usize, usize))> =
        results.iter().filter_map(|r| scenario1_best(r).map(|k| (name(r), k))).collect();
    let majority: Vec<String> =
        s1.iter().filter(|(_, (k, n))| 2 * k > *n).map(|(c, (k, n))| format!("{c} ({k}/{n})")).collect();
    let total_k: usize = s1.iter().map(|x| x.1 .0).sum();
    let total_n: usize = s1.iter().map(|x| x.1 .1).sum();
    let _ = writeln!(
        md,
        "**Under which settings does scenario 1 (both responses on-policy) come out best?** Over the {} cells that ran \
         all four scenarios, scenario 1 ends with the highest chosen avg in {total_k}/{total_n} seed-cells. In a \
         majority of seeds: {}. (The paper reports scenario 1 as the best of the four.) The tables' last columns \
         rank the scenarios by their mean final chosen avg.\n",
        s1.len(),
        if majority.is_empty() { "in no cell".to_string() } else { majority.join(", ") }
    );
    // 4. Do the fixes win everywhere?
    for (fix, label) in [("flex-dpo", "Flex-DPO"), ("sft-dpo", "SFT-DPO")] {
        let all: Vec<(String, (usize, usize, f64, f64))> =
            results.iter().filter_map(|r| fix_vs_dpo(r, fix).map(|x| (name(r), x))).collect();
        let everywhere = all.iter().filter(|(_, (k, n, _, _))| k == n).count();
        let losing: Vec<String> = all
            .iter()
            .filter(|(_, (k, n, _, _))| k < n)
            .map(|(c, (k, n, dc, _))| format!("{c} ({k}/{n}, chosen margin {})", num(*dc)))
            .collect();
        let _ = writeln!(
            md,
            "**Does {label} win everywhere?** It beats DPO (higher final chosen AND lower final unseen, same seed) in \
             every seed in {everywhere}/{} cells. Cells where it does not: {}.\n",
            all.len(),
            if losing.is_empty() { "none".to_string() } else { losing.join("; ") }
        );
    }
}

/// Two panels: DPO scenario 1's chosen avg and unseen avg over epochs (means over seeds), one line per value.
fn figure(path: &Path, title: &str, cells: &[(String, &CellResult)]) -> Result<(), String> {
    const PALETTE: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1200, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (top, body) = root.split_vertically(40);
        top.titled(&format!("{title}: DPO, scenario 1, means over seeds"), ("sans-serif", 20))
            .map_err(|e| e.to_string())?;
        let panels = body.split_evenly((1, 2));
        for (pi, (panel, ylabel)) in panels.iter().zip(["chosen avg probability", "unseen avg probability"]).enumerate()
        {
            let lines: Vec<(String, Vec<(f64, f64)>)> = cells
                .iter()
                .filter_map(|(name, r)| {
                    let v = runs(r, "dpo", 1);
                    if v.is_empty() {
                        return None;
                    }
                    let mut by: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
                    for x in &v {
                        for &(e, c, u) in &x.curve {
                            let y = if pi == 0 { c } else { u } as f64;
                            if y.is_finite() {
                                by.entry(e).or_default().push(y);
                            }
                        }
                    }
                    Some((
                        name.clone(),
                        by.into_iter().map(|(e, ys)| (e as f64, ys.iter().sum::<f64>() / ys.len() as f64)).collect(),
                    ))
                })
                .collect();
            let xmax = lines.iter().flat_map(|l| l.1.iter().map(|p| p.0)).fold(1.0, f64::max);
            let ymax = lines.iter().flat_map(|l| l.1.iter().map(|p| p.1)).fold(0.0, f64::max).max(1e-3) * 1.05;
            let mut chart = ChartBuilder::on(panel)
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(0.0..xmax, 0.0..ymax)
                .map_err(|e| e.to_string())?;
            chart.configure_mesh().x_desc("epoch").y_desc(ylabel).draw().map_err(|e| e.to_string())?;
            for (i, (name, pts)) in lines.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                    .map_err(|e| e.to_string())?
                    .label(name.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    dpo3d::checkpoint::write_atomic(path, svg.as_bytes()).map_err(|e| e.to_string())
}
