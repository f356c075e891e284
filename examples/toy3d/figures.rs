//! Figures of the toy study, as SVG files in OUT/figures/, the counterparts of the paper's figures 1-3 plus the data
//! scenarios and RM+PPO: curves are means over seeds with a min-max band over seeds. A configuration or metric
//! that is missing from this run is skipped (and a figure with nothing to draw is not written), never an error.
//!
//!   fig1_probs.svg      pi(response | prompt) heatmaps of DPO scenario 1 (lowest seed) after SFT, at 500, 1000, end
//!   fig2_dynamics.svg   DPO scenario 1: probabilities (linear) and log10 probabilities / gradient magnitudes
//!   fig3_fixes.svg      DPO vs Flex-DPO, SFT-DPO, IPO, SLiC (scenario 1)
//!   fig4_scenarios.svg  DPO in data scenarios 1-4
//!   fig5_ppo.svg        DPO vs RM+PPO (only when rm+ppo runs exist)

// The aggregation helpers are shared with report.rs (as `crate::figures::stats`), so main.rs needs no extra line.
#[path = "stats.rs"]
pub mod stats;

use std::f64::consts::LN_10;
use std::path::Path;

use dpo3d::toy::{PAIRS, PROMPTS, RESPONSES};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::RunOutput;
use stats::{band, find, groups, Band, Group};

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

const FONT: &str = "sans-serif";
/// Tableau 10: distinct, colour-blind-friendlier than the primaries.
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
const BLUE_C: RGBColor = PALETTE[0];
const RED_C: RGBColor = PALETTE[3];
const GREEN_C: RGBColor = PALETTE[2];
/// log10 of the smallest positive float32 (denormal, ~1.4e-45): where the paper's curves stop.
const F32_LOG10_MIN: f64 = -44.85;

/// A label as a reader expects it in a legend.
pub fn pretty(label: &str) -> String {
    match label {
        "dpo" => "DPO".into(),
        "ipo" => "IPO".into(),
        "slic" => "SLiC".into(),
        "rm+ppo" => "RM+PPO".into(),
        other => other.replace("flex-dpo", "Flex-DPO").replace("sft-dpo", "SFT-DPO"),
    }
}

/// Writes every figure the runs allow into out/figures/.
pub fn write_all(out: &Path, runs: &[RunOutput]) -> Result<(), String> {
    let dir = out.join("figures");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let gs = groups(runs);
    let dpo1 = find(&gs, "dpo", 1);
    if let Some(g) = dpo1 {
        if let Some(svg) = fig1_probs(g)? {
            save(&dir.join("fig1_probs.svg"), &svg)?;
        }
        save(&dir.join("fig2_dynamics.svg"), &fig2_dynamics(g)?)?;
    }
    // Figure 3: every scenario-1 preference configuration (token-level and PPO runs excluded), DPO first.
    let mut fixes: Vec<&Group> = dpo1.into_iter().collect();
    fixes.extend(
        gs.iter()
            .filter(|g| g.scenario == 1 && g.label != "dpo" && g.label != "rm+ppo" && !g.label.starts_with("token-")),
    );
    if !fixes.is_empty() {
        let named: Vec<(String, &Group)> = fixes.iter().map(|g| (pretty(&g.label), *g)).collect();
        save(&dir.join("fig3_fixes.svg"), &comparison("Figure 3: DPO and its fixes, scenario 1", &named)?)?;
    }
    let scen: Vec<(String, &Group)> =
        (1..=4).filter_map(|s| find(&gs, "dpo", s).map(|g| (format!("DPO, scenario {s}"), g))).collect();
    if !scen.is_empty() {
        save(&dir.join("fig4_scenarios.svg"), &comparison("Figure 4: DPO in the four data scenarios (1: both on-policy, 2: rejected off-policy, 3: chosen off-policy, 4: both off-policy)", &scen)?)?;
    }
    if let Some(ppo) = find(&gs, "rm+ppo", 1) {
        let mut named: Vec<(String, &Group)> = dpo1.into_iter().map(|g| ("DPO".to_string(), g)).collect();
        named.push(("RM+PPO".into(), ppo));
        save(&dir.join("fig5_ppo.svg"), &comparison("Figure 5: DPO vs RM+PPO, scenario 1", &named)?)?;
    }
    Ok(())
}

fn save(path: &Path, svg: &str) -> Result<(), String> {
    dpo3d::checkpoint::write_atomic(path, svg.as_bytes()).map_err(err)
}

fn seeds_note(g: &[&Group]) -> String {
    let n = g.iter().map(|g| g.runs.len()).max().unwrap_or(0);
    if n > 1 {
        format!("mean over {n} seeds, band: min-max over seeds")
    } else {
        "one seed".into()
    }
}

// ---- line panels --------------------------------------------------------------------------------------------------

struct Curve {
    name: String,
    color: RGBColor,
    dashed: bool,
    band: Band,
}

fn curve(name: &str, color: RGBColor, dashed: bool, band: Option<Band>) -> Option<Curve> {
    band.map(|band| Curve { name: name.into(), color, dashed, band })
}

/// One chart: each curve's min-max band and mean line, optional horizontal reference lines, a legend.
fn line_panel(
    area: &Area,
    title: &str,
    ylabel: &str,
    curves: &[Curve],
    hlines: &[(f64, &str)],
    legend: bool,
) -> Result<(), String> {
    if curves.is_empty() {
        let (w, h) = area.dim_in_pixel();
        area.draw(&Text::new(
            format!("{title}: no data in this run"),
            (w as i32 / 2, h as i32 / 2),
            (FONT, 15).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Center)),
        ))
        .map_err(err)?;
        return Ok(());
    }
    let xmax = curves.iter().flat_map(|c| c.band.epochs.iter().copied()).fold(1.0, f64::max);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for c in curves {
        lo = c.band.min.iter().copied().fold(lo, f64::min);
        hi = c.band.max.iter().copied().fold(hi, f64::max);
    }
    for (y, _) in hlines {
        lo = lo.min(*y);
        hi = hi.max(*y);
    }
    if hi - lo < 1e-6 {
        lo -= 0.05;
        hi += 0.05;
    }
    let pad = 0.05 * (hi - lo);
    let (lo, hi) = (lo - pad, hi + pad);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 17))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(62)
        .build_cartesian_2d(0f64..xmax, lo..hi)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(ylabel)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| tick(*y))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(BLACK.mix(0.04))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(err)?;
    for c in curves {
        if c.band.seeds > 1 {
            let mut pts: Vec<(f64, f64)> = c.band.epochs.iter().copied().zip(c.band.max.iter().copied()).collect();
            pts.extend(c.band.epochs.iter().copied().zip(c.band.min.iter().copied()).rev());
            chart.draw_series(std::iter::once(Polygon::new(pts, c.color.mix(0.15).filled()))).map_err(err)?;
        }
    }
    for c in curves {
        let pts: Vec<(f64, f64)> = c.band.epochs.iter().copied().zip(c.band.mean.iter().copied()).collect();
        let style = c.color.stroke_width(2);
        if c.dashed {
            chart.draw_series(DashedLineSeries::new(pts, 7, 5, style)).map_err(err)?.label(c.name.clone()).legend(
                move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (7, 0)], style)
                        + PathElement::new(vec![(12, 0), (20, 0)], style)
                },
            );
        } else {
            chart
                .draw_series(LineSeries::new(pts, style))
                .map_err(err)?
                .label(c.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    for (y, name) in hlines {
        let style = BLACK.mix(0.6).stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(vec![(0.0, *y), (xmax, *y)], 3, 4, style))
            .map_err(err)?
            .label(name.to_string())
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (4, 0)], style)
                    + PathElement::new(vec![(8, 0), (12, 0)], style)
                    + PathElement::new(vec![(16, 0), (20, 0)], style)
            });
    }
    if legend {
        // The legend goes where it hides the fewest points of the mean lines and reference lines.
        let n_labels = curves.len() + hlines.len();
        let longest = curves.iter().map(|c| c.name.len()).chain(hlines.iter().map(|h| h.1.len())).max().unwrap_or(0);
        let mut lines: Vec<Vec<(f64, f64)>> =
            curves.iter().map(|c| c.band.epochs.iter().copied().zip(c.band.mean.iter().copied()).collect()).collect();
        lines.extend(hlines.iter().map(|(y, _)| (0..=50).map(|k| (xmax * k as f64 / 50.0, *y)).collect()));
        let base = chart.plotting_area().get_base_pixel();
        let pixels: Vec<(i32, i32)> =
            lines.iter().flatten().map(|p| chart.backend_coord(p)).map(|(x, y)| (x - base.0, y - base.1)).collect();
        let pos = legend_position(chart.plotting_area().dim_in_pixel(), n_labels, longest, &pixels);
        chart
            .configure_series_labels()
            .position(pos)
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// An axis tick: no trailing zeros ("0.1", "20", "-44").
fn tick(y: f64) -> String {
    let s = format!("{y:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// The legend corner that covers the fewest of `pixels` (relative to the plotting area), with plotters' layout of
/// the box (13 px font: ~6 px per character, ~16 px per line, 10 px margins, 30 px for the line sample).
fn legend_position(area: (u32, u32), n_labels: usize, longest: usize, pixels: &[(i32, i32)]) -> SeriesLabelPosition {
    use SeriesLabelPosition::*;
    let (w, h) = (longest as i32 * 6 + 50, n_labels as i32 * 16 + 20);
    let (aw, ah) = (area.0 as i32, area.1 as i32);
    let (xs, ys) = ([5, (aw - w) / 2, aw - w - 5], [5, (ah - h) / 2, ah - h - 5]);
    let candidates = [
        (UpperRight, 2, 0),
        (UpperLeft, 0, 0),
        (LowerRight, 2, 2),
        (LowerLeft, 0, 2),
        (MiddleRight, 2, 1),
        (MiddleLeft, 0, 1),
        (UpperMiddle, 1, 0),
        (LowerMiddle, 1, 2),
        (MiddleMiddle, 1, 1),
    ];
    let covered = |x: i32, y: i32| {
        pixels.iter().filter(|p| p.0 >= x - 3 && p.0 <= x + w + 3 && p.1 >= y - 3 && p.1 <= y + h + 3).count()
    };
    candidates.into_iter().min_by_key(|(_, i, j)| covered(xs[*i], ys[*j])).map(|c| c.0).unwrap_or(UpperRight)
}

fn to_log10(x: f64) -> f64 {
    x / LN_10
}

/// log10 of the rejected probability: the mean log-prob when logged (continues past float32 underflow), else
/// log10 of the average probability.
fn rejected_log10(runs: &[&RunOutput]) -> Option<Band> {
    band(runs, "toy/logp_rejected_avg", to_log10).or_else(|| band(runs, "toy/rejected_avg", f64::log10))
}

// ---- figure 2 -----------------------------------------------------------------------------------------------------

fn fig2_dynamics(g: &Group) -> Result<String, String> {
    let runs = &g.runs;
    let id = |x: f64| x;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1500, 580)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let root = root
            .titled(&format!("Figure 2: DPO dynamics, scenario 1 ({})", seeds_note(&[g])), (FONT, 20))
            .map_err(err)?;
        let panels = root.split_evenly((1, 2));
        let probs: Vec<Curve> = [
            curve("chosen avg", BLUE_C, false, band(runs, "toy/chosen_avg", id)),
            curve("chosen min", BLUE_C, true, band(runs, "toy/chosen_min", id)),
            curve("rejected avg", RED_C, false, band(runs, "toy/rejected_avg", id)),
            curve("rejected max", RED_C, true, band(runs, "toy/rejected_max", id)),
            curve("unseen avg", GREEN_C, false, band(runs, "toy/unseen_avg", id)),
        ]
        .into_iter()
        .flatten()
        .collect();
        line_panel(&panels[0], "(a) probabilities", "probability", &probs, &[], true)?;
        let logs: Vec<Curve> = [
            curve("log10 pi(chosen), mean", BLUE_C, false, band(runs, "toy/logp_chosen_avg", to_log10)),
            curve("log10 pi(rejected), mean", RED_C, false, band(runs, "toy/logp_rejected_avg", to_log10)),
            curve("log10 |dl/dpi+| (chosen)", BLUE_C, true, band(runs, "grad/log10_chosen", id)),
            curve("log10 |dl/dpi-| (rejected)", RED_C, true, band(runs, "grad/log10_rejected", id)),
        ]
        .into_iter()
        .flatten()
        .collect();
        line_panel(
            &panels[1],
            "(b) log10 probabilities and gradient magnitudes",
            "log10 value",
            &logs,
            &[(F32_LOG10_MIN, "float32 limit 1.4e-45")],
            true,
        )?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

// ---- figures 3-5 --------------------------------------------------------------------------------------------------

/// Three panels (chosen avg, log10 rejected, unseen avg), one curve per configuration.
fn comparison(title: &str, groups: &[(String, &Group)]) -> Result<String, String> {
    let id = |x: f64| x;
    let gs: Vec<&Group> = groups.iter().map(|g| g.1).collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1650, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(&format!("{title} ({})", seeds_note(&gs)), (FONT, 19)).map_err(err)?;
        let panels = root.split_evenly((1, 3));
        let color = |i: usize| PALETTE[i % PALETTE.len()];
        let chosen: Vec<Curve> = groups
            .iter()
            .enumerate()
            .filter_map(|(i, (n, g))| curve(n, color(i), false, band(&g.runs, "toy/chosen_avg", id)))
            .collect();
        let rejected: Vec<Curve> = groups
            .iter()
            .enumerate()
            .filter_map(|(i, (n, g))| curve(n, color(i), false, rejected_log10(&g.runs)))
            .collect();
        let unseen: Vec<Curve> = groups
            .iter()
            .enumerate()
            .filter_map(|(i, (n, g))| curve(n, color(i), false, band(&g.runs, "toy/unseen_avg", id)))
            .collect();
        line_panel(&panels[0], "(a) chosen avg probability", "probability", &chosen, &[], true)?;
        line_panel(&panels[1], "(b) rejected: mean log10 probability", "log10 probability", &rejected, &[], false)?;
        line_panel(&panels[2], "(c) unseen avg probability", "probability", &unseen, &[], false)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

// ---- figure 1 -----------------------------------------------------------------------------------------------------

/// Viridis, by linear interpolation between five of its colours; t in [0, 1].
fn viridis(t: f64) -> RGBColor {
    const P: [(f64, f64, f64); 5] =
        [(68.0, 1.0, 84.0), (59.0, 82.0, 139.0), (33.0, 145.0, 140.0), (94.0, 201.0, 98.0), (253.0, 231.0, 37.0)];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 } * 4.0;
    let i = (t.floor() as usize).min(3);
    let f = t - i as f64;
    let (a, b) = (P[i], P[i + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// A cell's annotation: two decimals, or one significant digit for tiny values (where the drastic drop shows).
fn cell_text(p: f64) -> String {
    if p >= 0.995 {
        "1.0".into()
    } else if p >= 0.005 {
        format!("{p:.2}").trim_start_matches('0').to_string()
    } else if p <= 0.0 {
        "0".into()
    } else {
        format!("{p:.0e}")
    }
}

fn centered<'a>(size: u32, color: &'a RGBColor) -> TextStyle<'a> {
    (FONT, size).into_font().color(color).pos(Pos::new(HPos::Center, VPos::Center))
}

const HEAT_TOP: i32 = 44;
const HEAT_BOTTOM: i32 = 48;

fn heatmap_panel(area: &Area, title: &str, probs: &[f32], vmax: f64) -> Result<(), String> {
    let (w, h) = area.dim_in_pixel();
    let (left, right) = (74, 10);
    let cw = (w as i32 - left - right) / RESPONSES as i32;
    let ch = (h as i32 - HEAT_TOP - HEAT_BOTTOM) / PROMPTS as i32;
    area.draw(&Text::new(title.to_string(), ((w as i32) / 2, 18), centered(16, &BLACK))).map_err(err)?;
    for i in 0..PROMPTS {
        for j in 0..RESPONSES {
            let p = probs.get(i * RESPONSES + j).copied().unwrap_or(f32::NAN) as f64;
            let (x0, y0) = (left + j as i32 * cw, HEAT_TOP + i as i32 * ch);
            let t = p / vmax;
            area.draw(&Rectangle::new([(x0, y0), (x0 + cw, y0 + ch)], viridis(t).filled())).map_err(err)?;
            let tc = if t < 0.6 { WHITE } else { BLACK };
            area.draw(&Text::new(cell_text(p), (x0 + cw / 2, y0 + ch / 2), centered(11, &tc))).map_err(err)?;
        }
        let y = HEAT_TOP + i as i32 * ch + ch / 2;
        area.draw(&Text::new(
            format!("prompt {i}"),
            (left - 8, y),
            (FONT, 13).into_font().color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center)),
        ))
        .map_err(err)?;
    }
    // Frames: each prompt's chosen (green) and rejected (red) response.
    for &(i, c, r) in &PAIRS {
        for (j, col) in [(c, RGBColor(0, 200, 80)), (r, RGBColor(255, 40, 40))] {
            let (x0, y0) = (left + j as i32 * cw, HEAT_TOP + i as i32 * ch);
            area.draw(&Rectangle::new([(x0 + 1, y0 + 1), (x0 + cw - 1, y0 + ch - 1)], col.stroke_width(3)))
                .map_err(err)?;
        }
    }
    let ybot = HEAT_TOP + PROMPTS as i32 * ch;
    for j in 0..RESPONSES {
        area.draw(&Text::new(j.to_string(), (left + j as i32 * cw + cw / 2, ybot + 11), centered(13, &BLACK)))
            .map_err(err)?;
    }
    area.draw(&Text::new("response".to_string(), (left + 5 * cw, ybot + 30), centered(14, &BLACK))).map_err(err)?;
    Ok(())
}

fn colour_bar(area: &Area, vmax: f64) -> Result<(), String> {
    let (_, h) = area.dim_in_pixel();
    let (x0, x1) = (12, 36);
    let (top, bottom) = (HEAT_TOP, h as i32 - HEAT_BOTTOM);
    let n = 100;
    for k in 0..n {
        let ya = bottom - (bottom - top) * (k + 1) / n;
        let yb = bottom - (bottom - top) * k / n;
        area.draw(&Rectangle::new([(x0, ya), (x1, yb)], viridis((k as f64 + 0.5) / n as f64).filled())).map_err(err)?;
    }
    area.draw(&Rectangle::new([(x0, top), (x1, bottom)], BLACK.stroke_width(1))).map_err(err)?;
    for k in 0..=4 {
        let v = vmax * k as f64 / 4.0;
        let y = bottom - (bottom - top) * k / 4;
        area.draw(&PathElement::new(vec![(x1, y), (x1 + 4, y)], BLACK.stroke_width(1))).map_err(err)?;
        area.draw(&Text::new(
            format!("{v:.2}"),
            (x1 + 7, y),
            (FONT, 12).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(err)?;
    }
    area.draw(&Text::new("probability".to_string(), (x0 + 12, 18), centered(13, &BLACK))).map_err(err)?;
    Ok(())
}

/// Heatmaps of the lowest seed's snapshots after SFT (epoch 0), at 500, 1000 and the last epoch; None when the run
/// kept no snapshot.
fn fig1_probs(g: &Group) -> Result<Option<String>, String> {
    let Some(run) = g.runs.first() else { return Ok(None) };
    let last = run.snapshots.iter().map(|s| s.0).max();
    let mut panels: Vec<(usize, &[f32])> = Vec::new();
    for want in [Some(0), Some(500), Some(1000), last].into_iter().flatten() {
        if panels.iter().any(|p| p.0 == want) {
            continue;
        }
        if let Some((e, p)) = run.snapshots.iter().find(|s| s.0 == want) {
            panels.push((*e, p));
        } else if want == 0 && run.sft_probs.len() == PROMPTS * RESPONSES {
            panels.push((0, &run.sft_probs));
        }
    }
    if panels.is_empty() {
        return Ok(None);
    }
    let pmax = panels.iter().flat_map(|p| p.1.iter()).copied().filter(|x| x.is_finite()).fold(0.0f32, f32::max) as f64;
    let vmax = ((pmax * 10.0).ceil() / 10.0).clamp(0.1, 1.0);
    let last_epoch = last.unwrap_or(0);
    let mut svg = String::new();
    {
        let width = 180 + 430 * panels.len() as u32;
        let root = SVGBackend::with_string(&mut svg, (width, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let root = root
            .titled(&format!("Figure 1: pi(response | prompt), DPO scenario 1, seed {}", run.seed), (FONT, 20))
            .map_err(err)?;
        let (main, foot) = root.split_vertically(356);
        let (maps, bar) = main.split_horizontally(width - 100);
        let cells = maps.split_evenly((1, panels.len()));
        for ((e, p), area) in panels.iter().zip(cells.iter()) {
            let title = match *e {
                0 => "epoch 0 (after SFT)".to_string(),
                e if e == last_epoch && e != 500 && e != 1000 => format!("epoch {e} (last)"),
                e => format!("epoch {e}"),
            };
            heatmap_panel(area, &title, p, vmax)?;
        }
        colour_bar(&bar, vmax)?;
        let (fw, _) = foot.dim_in_pixel();
        foot.draw(&Text::new(
            "green frame: the prompt's chosen response; red frame: its rejected response; responses 8-9 are in no pair"
                .to_string(),
            (fw as i32 / 2, 14),
            centered(13, &BLACK),
        ))
        .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(Some(svg))
}
