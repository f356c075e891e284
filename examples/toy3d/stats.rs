//! Aggregation of the toy study's runs for the figures and the report: grouping by configuration (label +
//! scenario), per-epoch mean / min / max / std over seeds, per-seed values at given epochs, and number formatting.
//! Every lookup returns an Option: a missing configuration, metric or epoch is skipped by the callers, never a panic.

use std::collections::BTreeMap;

use crate::RunOutput;

/// One configuration of the study: its runs, one per seed, in seed order.
pub struct Group<'a> {
    pub label: String,
    pub scenario: u8,
    pub runs: Vec<&'a RunOutput>,
}

/// Groups runs by (label, scenario), in order of first appearance.
pub fn groups(runs: &[RunOutput]) -> Vec<Group<'_>> {
    let mut out: Vec<Group> = Vec::new();
    for r in runs {
        match out.iter_mut().find(|g| g.label == r.label && g.scenario == r.scenario) {
            Some(g) => g.runs.push(r),
            None => out.push(Group { label: r.label.clone(), scenario: r.scenario, runs: vec![r] }),
        }
    }
    for g in &mut out {
        g.runs.sort_by_key(|r| r.seed);
    }
    out
}

pub fn find<'g, 'a>(groups: &'g [Group<'a>], label: &str, scenario: u8) -> Option<&'g Group<'a>> {
    groups.iter().find(|g| g.label == label && g.scenario == scenario && !g.runs.is_empty())
}

/// The runs of `group` with the seed of `run`, if any.
pub fn same_seed<'a>(group: &Group<'a>, seed: u64) -> Option<&'a RunOutput> {
    group.runs.iter().copied().find(|r| r.seed == seed)
}

/// A metric over epochs, aggregated over seeds (only epochs where at least one seed has a finite value).
pub struct Band {
    pub epochs: Vec<f64>,
    pub mean: Vec<f64>,
    pub min: Vec<f64>,
    pub max: Vec<f64>,
    /// Number of seeds contributing (the largest count over epochs).
    pub seeds: usize,
}

/// `f(metric)` over epochs, aggregated over `runs`; None when no run has a finite value of it.
pub fn band(runs: &[&RunOutput], metric: &str, f: impl Fn(f64) -> f64) -> Option<Band> {
    let mut by_epoch: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for r in runs {
        for rec in &r.records {
            if let Some(&v) = rec.metrics.get(metric) {
                let v = f(v as f64);
                if v.is_finite() {
                    by_epoch.entry(rec.epoch).or_default().push(v);
                }
            }
        }
    }
    if by_epoch.is_empty() {
        return None;
    }
    let mut b = Band { epochs: Vec::new(), mean: Vec::new(), min: Vec::new(), max: Vec::new(), seeds: 0 };
    for (e, v) in by_epoch {
        b.seeds = b.seeds.max(v.len());
        b.epochs.push(e as f64);
        b.mean.push(v.iter().sum::<f64>() / v.len() as f64);
        b.min.push(v.iter().cloned().fold(f64::INFINITY, f64::min));
        b.max.push(v.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
    }
    Some(b)
}

/// (epoch, value) of one run's metric, finite values only.
pub fn series(run: &RunOutput, metric: &str) -> Vec<(usize, f64)> {
    let mut v: Vec<(usize, f64)> = run
        .records
        .iter()
        .filter_map(|rec| rec.metrics.get(metric).map(|&x| (rec.epoch, x as f64)))
        .filter(|(_, x)| x.is_finite())
        .collect();
    v.sort_by_key(|p| p.0);
    v
}

/// The last logged epoch of a run.
pub fn last_epoch(run: &RunOutput) -> Option<usize> {
    run.records.iter().map(|r| r.epoch).max()
}

/// The value of `metric` at the latest logged epoch <= `epoch`.
pub fn at(run: &RunOutput, metric: &str, epoch: usize) -> Option<f64> {
    series(run, metric).into_iter().rev().find(|(e, _)| *e <= epoch).map(|p| p.1)
}

pub fn first(run: &RunOutput, metric: &str) -> Option<f64> {
    series(run, metric).first().map(|p| p.1)
}

pub fn last(run: &RunOutput, metric: &str) -> Option<f64> {
    series(run, metric).last().map(|p| p.1)
}

/// (epoch, value) of the maximum (earliest on ties).
pub fn peak(run: &RunOutput, metric: &str) -> Option<(usize, f64)> {
    series(run, metric).into_iter().fold(None, |best, p| match best {
        Some((_, b)) if b >= p.1 => best,
        _ => Some(p),
    })
}

/// (epoch, value) of the minimum (earliest on ties).
pub fn trough(run: &RunOutput, metric: &str) -> Option<(usize, f64)> {
    series(run, metric).into_iter().fold(None, |best, p| match best {
        Some((_, b)) if b <= p.1 => best,
        _ => Some(p),
    })
}

/// The first logged epoch at which `metric` < `threshold`.
pub fn first_below(run: &RunOutput, metric: &str, threshold: f64) -> Option<usize> {
    series(run, metric).into_iter().find(|(_, v)| *v < threshold).map(|p| p.0)
}

/// Mean and range over seeds of a per-seed quantity.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

pub fn summary(values: &[f64]) -> Option<Summary> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    Some(Summary {
        mean: v.iter().sum::<f64>() / v.len() as f64,
        min: v.iter().cloned().fold(f64::INFINITY, f64::min),
        max: v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        n: v.len(),
    })
}

/// Summary over the group's seeds of `f(run)`.
pub fn over_seeds(runs: &[&RunOutput], f: impl Fn(&RunOutput) -> Option<f64>) -> Option<Summary> {
    summary(&runs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
}

/// A number in a width that suits its size: 0.123, 12.3, 1.2e-7.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        format!("{x}")
    } else if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 0.01 {
        format!("{x:.3}")
    } else {
        format!("{x:.1e}")
    }
}

impl Summary {
    /// "mean [min, max]" (just the mean when there is one seed or no spread).
    pub fn show(&self) -> String {
        if self.n < 2 || num(self.min) == num(self.max) {
            num(self.mean)
        } else {
            format!("{} [{}, {}]", num(self.mean), num(self.min), num(self.max))
        }
    }
}

/// Like `show`, for epochs: whole numbers.
pub fn show_epochs(s: Option<Summary>) -> String {
    match s {
        Some(s) if s.n > 1 && s.min != s.max => format!("{:.0} [{:.0}, {:.0}]", s.mean, s.min, s.max),
        Some(s) => format!("{:.0}", s.mean),
        None => "n/a".into(),
    }
}

/// "mean [min, max]" or "n/a".
pub fn show(s: Option<Summary>) -> String {
    s.map(|s| s.show()).unwrap_or_else(|| "n/a".into())
}
