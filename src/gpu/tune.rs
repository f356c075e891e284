//! Kernel choice by measurement. Where an op family has several kernels that compute the same thing (the GEMMs of
//! `shaders/matmul.wgsl`), which one is fastest depends on the adapter: lavapipe runs a workgroup on one CPU thread
//! and turns every per-invocation load into a gather, so register-blocked kernels without workgroup memory win
//! there, while a GPU wants workgroup tiles. Rankings measured on one device do not carry over to another, so the
//! choice is made on the adapter in hand: the first time a product of a given shape class is built, every candidate
//! kernel is timed once on scratch buffers of that shape (GPU timestamp queries where the adapter has them, wall
//! clock otherwise), the fastest is kept, and the choice is cached per adapter and driver in a small JSON file, so
//! later runs on the same machine build the same plans without timing anything.
//!
//! Environment:
//! - `DPO3D_KERNELS`: unset or `measure` (the default); `rule` uses a fixed shape rule and times nothing (the only
//!   policy on wasm, where the library cannot block on the GPU); `matmul=vec4` (comma-separated `family=kernel`)
//!   forces a kernel wherever it applies (elsewhere the family is measured).
//! - `DPO3D_TUNE_CACHE`: the cache file (default `$XDG_CACHE_HOME/dpo3d/kernels.json`, else
//!   `$HOME/.cache/dpo3d/kernels.json`); `off` keeps choices in memory only.
//! - `DPO3D_TUNE_LOG=1`: print each measured choice with the candidates' times to stderr.
//!
//! Once chosen, a choice never changes within a process, so runs stay deterministic; `Tuner::choices` lists them
//! (with where each came from) for a run to save next to its config. The same file keeps the answers of the
//! correctness probes some kernels need before they may be candidates (`Gpu::probe`), under "probe ..." keys.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// How kernels are chosen (from `DPO3D_KERNELS`).
#[derive(Clone, Debug, PartialEq)]
pub enum TunePolicy {
    /// Time the candidates at first use; cache the winner.
    Measure,
    /// A fixed rule per family; nothing is timed.
    Rule,
    /// Forced kernels per family (where they apply); other families are measured.
    Force(BTreeMap<String, String>),
}

impl TunePolicy {
    pub fn from_env() -> TunePolicy {
        if cfg!(target_arch = "wasm32") {
            return TunePolicy::Rule;
        }
        match std::env::var("DPO3D_KERNELS") {
            Err(_) => TunePolicy::Measure,
            Ok(v) if v.trim().is_empty() || v.trim() == "measure" => TunePolicy::Measure,
            Ok(v) if v.trim() == "rule" => TunePolicy::Rule,
            Ok(v) => TunePolicy::Force(
                v.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect(),
            ),
        }
    }
}

/// One choice: the kernel and where the choice came from ("measured", "cache", "forced", "rule"), with the
/// candidates' times in microseconds when it was measured in this process.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KernelChoice {
    pub kernel: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timings_us: Vec<(String, f64)>,
}

#[derive(Default, Serialize, Deserialize)]
struct CacheFile {
    /// adapter key ("name | backend | driver") -> shape key -> kernel name
    adapters: BTreeMap<String, BTreeMap<String, String>>,
}

pub struct Tuner {
    pub policy: TunePolicy,
    /// "name | backend | driver": cache entries are only reused on the same adapter and driver.
    pub adapter_key: String,
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))] // never written on wasm
    cache_path: Option<std::path::PathBuf>,
    cached: Mutex<BTreeMap<String, String>>,
    chosen: Mutex<BTreeMap<String, KernelChoice>>,
    log: bool,
}

impl Tuner {
    pub fn new(adapter_key: String) -> Tuner {
        let policy = TunePolicy::from_env();
        let cache_path = default_cache_path();
        let cached = cache_path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| serde_json::from_str::<CacheFile>(&s).ok())
            .and_then(|mut f| f.adapters.remove(&adapter_key))
            .unwrap_or_default();
        Tuner {
            policy,
            adapter_key,
            cache_path,
            cached: Mutex::new(cached),
            chosen: Mutex::new(BTreeMap::new()),
            log: std::env::var("DPO3D_TUNE_LOG").is_ok_and(|v| v == "1"),
        }
    }

    /// The kernel for `key` (family + shape class) among `candidates` (all applicable to the shape; the first is
    /// the rule's choice). `time(kernel)` returns seconds per run of that kernel on scratch buffers, or None when it
    /// cannot be timed; it is only called under `TunePolicy::Measure` when neither this process nor the cache has a
    /// choice yet.
    pub fn choose(
        &self,
        family: &str,
        key: &str,
        candidates: &[&'static str],
        mut time: impl FnMut(&'static str) -> Option<f64>,
    ) -> &'static str {
        assert!(!candidates.is_empty(), "tuner: no candidate kernel for {key}");
        let full_key = format!("{family} {key}");
        // Measured choices are stored under the candidates they were measured against too: a later version that
        // offers another kernel for the same shape measures again instead of keeping the old winner.
        let measured_key = measured_key(&full_key, candidates);
        let find = |name: &str| candidates.iter().copied().find(|c| *c == name);
        if let Some(c) = self.chosen.lock().unwrap().get(&full_key) {
            if let Some(k) = find(&c.kernel) {
                return k;
            }
        }
        let (kernel, source, timings) = match &self.policy {
            TunePolicy::Rule => (candidates[0], "rule", vec![]),
            TunePolicy::Force(map) if map.get(family).and_then(|k| find(k)).is_some() => {
                (find(&map[family]).unwrap(), "forced", vec![])
            }
            _ => {
                // Held while measuring, so two devices of this process never time the same shape at once (which
                // would also disturb each other's timings) and both end up with the first one's choice.
                let mut shared = process_choices().lock().unwrap();
                let here = shared.entry(self.adapter_key.clone()).or_default();
                let known = here.get(&measured_key).and_then(|k| find(k));
                let cached = known.or_else(|| self.cached.lock().unwrap().get(&measured_key).and_then(|k| find(k)));
                match cached {
                    Some(k) => (k, "cache", vec![]),
                    None => {
                        let (k, timings) = measure(candidates, &mut time);
                        here.insert(measured_key.clone(), k.to_string());
                        (k, "measured", timings)
                    }
                }
            }
        };
        if self.log && source == "measured" {
            let t: Vec<String> = timings.iter().map(|(k, us)| format!("{k} {us:.1} us")).collect();
            eprintln!("[dpo3d] {full_key}: {kernel} ({})", t.join(", "));
        }
        if source == "measured" {
            self.cached.lock().unwrap().insert(measured_key, kernel.to_string());
            self.save();
        }
        used_choices_map()
            .lock()
            .unwrap()
            .entry(self.adapter_key.clone())
            .or_default()
            .insert(full_key.clone(), kernel.to_string());
        let choice = KernelChoice { kernel: kernel.to_string(), source: source.to_string(), timings_us: timings };
        self.chosen.lock().unwrap().insert(full_key, choice);
        kernel
    }

    /// The remembered answer of a probe (`Gpu::probe`) on this adapter and driver, from this process or the cache file.
    pub(crate) fn probe_answer(&self, name: &str) -> Option<bool> {
        self.cached.lock().unwrap().get(&probe_key(name)).map(|v| v == "pass")
    }

    /// Remember a probe's answer in the cache file, per adapter and driver like the kernel choices, so that later
    /// processes on the same machine do not run it again.
    pub(crate) fn remember_probe(&self, name: &str, ok: bool) {
        self.cached.lock().unwrap().insert(probe_key(name), if ok { "pass" } else { "fail" }.to_string());
        self.save();
    }

    /// Every entry known for this adapter: the cache file's as loaded (kernel choices and probe answers), plus this
    /// process's measurements.
    pub fn cached_choices(&self) -> BTreeMap<String, String> {
        self.cached.lock().unwrap().clone()
    }

    /// Every choice this process made, by "family shape-key".
    pub fn choices(&self) -> BTreeMap<String, KernelChoice> {
        self.chosen.lock().unwrap().clone()
    }

    /// Merge this process's measured choices into the cache file (re-reading it first, so concurrent processes on
    /// the same machine do not erase each other's entries), written atomically.
    fn save(&self) {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(path) = &self.cache_path {
            let mut file: CacheFile =
                std::fs::read_to_string(path).ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
            let entry = file.adapters.entry(self.adapter_key.clone()).or_default();
            for (k, v) in self.cached.lock().unwrap().iter() {
                entry.insert(k.clone(), v.clone());
            }
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            // A cache that cannot be written only costs a re-measurement next time.
            if let Ok(json) = serde_json::to_string_pretty(&file) {
                let _ = crate::checkpoint::write_atomic(path, json.as_bytes());
            }
        }
    }
}

/// The cache's key for a probe's answer ("probe matmul subgroup"); no kernel choice's key starts with "probe".
fn probe_key(name: &str) -> String {
    format!("probe {name}")
}

/// The cache's key for a choice: "family shape-key" and the candidates it was measured among, sorted
/// ("matmul 512x64x64 nt v4 | blocked64 naive skinny8 tile128 vec4").
fn measured_key(full_key: &str, candidates: &[&str]) -> String {
    let mut names = candidates.to_vec();
    names.sort_unstable();
    format!("{full_key} | {}", names.join(" "))
}

/// Time every candidate once (after the closure's own warm-up), keep the fastest. Candidates that cannot be timed
/// are skipped; if none can, the first (the rule's choice) wins.
/// Rounds of timing per candidate: the best of three, the candidates interleaved round by round, so that a burst of
/// other work on the machine (a build, another process) does not decide the choice.
const ROUNDS: usize = 3;

fn measure(
    candidates: &[&'static str],
    time: &mut impl FnMut(&'static str) -> Option<f64>,
) -> (&'static str, Vec<(String, f64)>) {
    let mut best_of: Vec<Option<f64>> = vec![None; candidates.len()];
    for _ in 0..ROUNDS {
        for (i, &c) in candidates.iter().enumerate() {
            if let Some(t) = time(c) {
                best_of[i] = Some(best_of[i].map_or(t, |b: f64| b.min(t)));
            }
        }
    }
    let mut best: Option<(&'static str, f64)> = None;
    let mut timings = Vec::new();
    for (&c, t) in candidates.iter().zip(best_of) {
        if let Some(t) = t {
            timings.push((c.to_string(), t * 1e6));
            if best.is_none_or(|(_, bt)| t < bt) {
                best = Some((c, t));
            }
        }
    }
    (best.map(|b| b.0).unwrap_or(candidates[0]), timings)
}

fn used_choices_map() -> &'static Mutex<BTreeMap<String, BTreeMap<String, String>>> {
    static USED: std::sync::OnceLock<Mutex<BTreeMap<String, BTreeMap<String, String>>>> = std::sync::OnceLock::new();
    USED.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// Every kernel choice any device of this process made on the adapter `adapter_key` ("family shape-key" -> kernel):
/// what a run saves next to its results, to be reproduced with `DPO3D_KERNELS` or the cache file.
pub fn used_choices(adapter_key: &str) -> BTreeMap<String, String> {
    used_choices_map().lock().unwrap().get(adapter_key).cloned().unwrap_or_default()
}

/// Choices measured in this process, per adapter key, shared by every `Gpu` on that adapter: worker threads that
/// each open a device (the toy study's) then build the same plans whichever of them measured a shape first.
fn process_choices() -> &'static Mutex<BTreeMap<String, BTreeMap<String, String>>> {
    static SHARED: std::sync::OnceLock<Mutex<BTreeMap<String, BTreeMap<String, String>>>> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| Mutex::new(BTreeMap::new()))
}

fn default_cache_path() -> Option<std::path::PathBuf> {
    if cfg!(target_arch = "wasm32") {
        return None;
    }
    match std::env::var("DPO3D_TUNE_CACHE") {
        Ok(v) if v == "off" => None,
        Ok(v) if !v.is_empty() => Some(v.into()),
        _ => {
            let base = std::env::var("XDG_CACHE_HOME")
                .ok()
                .filter(|s| !s.is_empty())
                .map(std::path::PathBuf::from)
                .or_else(|| std::env::var("HOME").ok().map(|h| std::path::Path::new(&h).join(".cache")))?;
            Some(base.join("dpo3d").join("kernels.json"))
        }
    }
}

/// Seconds per run of `dispatch` on this adapter: one untimed run (pipeline creation, first-touch of memory), then
/// enough copies in one compute pass to fill about 2 ms (at most 64), timed with GPU timestamps at the pass's
/// beginning and end where the adapter has `TIMESTAMP_QUERY`, else by wall clock around submit-and-wait.
#[cfg(not(target_arch = "wasm32"))]
pub fn time_dispatch(gpu: &super::Gpu, dispatch: &super::Dispatch) -> Option<f64> {
    let once = run_copies(gpu, dispatch, 1)?;
    let copies = ((2e-3 / once.max(1e-7)).ceil() as usize).clamp(1, 64);
    if copies == 1 {
        // Long enough that one more run (timed) is a fair measurement; the first included compilation.
        return run_copies(gpu, dispatch, 1);
    }
    run_copies(gpu, dispatch, copies).map(|t| t / copies as f64)
}

#[cfg(not(target_arch = "wasm32"))]
fn run_copies(gpu: &super::Gpu, dispatch: &super::Dispatch, copies: usize) -> Option<f64> {
    let timestamps = gpu.device.features().contains(wgpu::Features::TIMESTAMP_QUERY);
    let query = timestamps.then(|| {
        let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("tune"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        // QUERY_RESOLVE: the two timestamps land here; COPY_SRC: then go to a mappable buffer.
        let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tune resolve"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        // MAP_READ | COPY_DST: the host reads the two u64 ticks.
        let read = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tune read"),
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        (set, resolve, read)
    });
    let started = std::time::Instant::now();
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("tune"),
            timestamp_writes: query.as_ref().map(|(set, _, _)| wgpu::ComputePassTimestampWrites {
                query_set: set,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: Some(1),
            }),
        });
        for _ in 0..copies {
            dispatch.record(&mut pass);
        }
    }
    if let Some((set, resolve, read)) = &query {
        enc.resolve_query_set(set, 0..2, resolve, 0);
        enc.copy_buffer_to_buffer(resolve, 0, read, 0, 16);
    }
    gpu.queue.submit([enc.finish()]);
    gpu.wait();
    let wall = started.elapsed().as_secs_f64();
    let Some((_, _, read)) = &query else { return Some(wall) };
    let slice = read.slice(..);
    slice.map_async(wgpu::MapMode::Read, |_| {});
    gpu.wait();
    let ticks: Vec<u64> = match slice.get_mapped_range() {
        Ok(view) => bytemuck::cast_slice(&view).to_vec(),
        Err(_) => return Some(wall),
    };
    read.unmap();
    let period_ns = gpu.queue.get_timestamp_period() as f64;
    let gpu_s = ticks[1].wrapping_sub(ticks[0]) as f64 * period_ns * 1e-9;
    // An adapter whose timestamps read 0 (or wrap) is timed by wall clock instead.
    if gpu_s > 0.0 && gpu_s <= wall * 1.5 {
        Some(gpu_s)
    } else {
        Some(wall)
    }
}

#[cfg(target_arch = "wasm32")]
pub fn time_dispatch(_gpu: &super::Gpu, _dispatch: &super::Dispatch) -> Option<f64> {
    None
}

/// The two forms of a row kernel (layernorm, softmax, log-softmax): one workgroup per row with tree reductions in
/// workgroup memory (GPUs), or one invocation per row with sequential sums (CPU adapters, where a workgroup's
/// barriers cost more than a short row's arithmetic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowForm {
    Workgroup,
    Invocation,
}

/// The tuner's row form for `family` / `key`: `rule` is the form `DPO3D_KERNELS=rule` takes; `time(form)` times one
/// on scratch outputs (seconds per run).
pub fn choose_row_form(
    gpu: &super::Gpu,
    family: &str,
    key: &str,
    rule: RowForm,
    mut time: impl FnMut(RowForm) -> Option<f64>,
) -> RowForm {
    let names = match rule {
        RowForm::Workgroup => ["workgroup", "invocation"],
        RowForm::Invocation => ["invocation", "workgroup"],
    };
    let form = |k: &str| if k == "workgroup" { RowForm::Workgroup } else { RowForm::Invocation };
    form(gpu.tuner.choose(family, key, &names, |k| time(form(k))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One slow round (a burst of other work on the machine) does not decide the choice: each candidate keeps its
    /// best of `ROUNDS`, and the candidates are interleaved round by round.
    #[test]
    fn should_choose_by_the_best_of_several_rounds() {
        let mut calls: Vec<&str> = Vec::new();
        let (k, timings) = measure(&["a", "b"], &mut |c| {
            calls.push(c);
            // "a" is faster except in its first round; "b" is steady.
            Some(match (c, calls.iter().filter(|x| **x == c).count()) {
                ("a", 1) => 9e-3,
                ("a", _) => 1e-3,
                _ => 2e-3,
            })
        });
        assert_eq!(k, "a");
        assert_eq!(calls, ["a", "b", "a", "b", "a", "b"]);
        assert_eq!(timings, vec![("a".to_string(), 1e3), ("b".to_string(), 2e3)]);
        // A candidate that cannot be timed is skipped; with none timed, the rule's choice (the first) stands.
        assert_eq!(measure(&["a", "b"], &mut |c| (c == "b").then_some(5e-3)).0, "b");
        assert_eq!(measure(&["a", "b"], &mut |_| None).0, "a");
    }

    /// A probe's answer goes into the cache file under this adapter and is read back by a new process's tuner.
    #[test]
    fn should_remember_probe_answers_in_the_cache_file() {
        let path = std::env::temp_dir().join(format!("dpo3d-tune-probe-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let tuner = |cached: BTreeMap<String, String>| Tuner {
            policy: TunePolicy::Measure,
            adapter_key: "test adapter: probes".into(),
            cache_path: Some(path.clone()),
            cached: Mutex::new(cached),
            chosen: Mutex::new(BTreeMap::new()),
            log: false,
        };
        let first = tuner(BTreeMap::new());
        assert_eq!(first.probe_answer("p"), None);
        first.remember_probe("p", true);
        first.remember_probe("q", false);
        let file: CacheFile = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let here = file.adapters["test adapter: probes"].clone();
        let second = tuner(here);
        assert_eq!(
            (second.probe_answer("p"), second.probe_answer("q"), second.probe_answer("r")),
            (Some(true), Some(false), None)
        );
        std::fs::remove_file(&path).unwrap();
    }

    /// A cached choice is reused only among the candidates it was measured against: a new kernel for the same shape
    /// (a later version of the library) is measured instead of losing to the cache.
    #[test]
    fn should_measure_again_when_the_candidates_change() {
        let tuner = |cached: BTreeMap<String, String>| Tuner {
            policy: TunePolicy::Measure,
            adapter_key: "test adapter: candidates change".into(),
            cache_path: None,
            cached: Mutex::new(cached),
            chosen: Mutex::new(BTreeMap::new()),
            log: false,
        };
        let old = BTreeMap::from([(measured_key("f 8x8", &["b", "a"]), "b".to_string())]);
        let same = tuner(old.clone()).choose("f", "8x8", &["a", "b"], |_| panic!("a cached choice is not re-timed"));
        assert_eq!(same, "b");
        let mut timed = Vec::new();
        let new = tuner(old).choose("f", "8x8", &["a", "b", "c"], |k| {
            timed.push(k);
            Some(if k == "c" { 1e-3 } else { 2e-3 })
        });
        assert_eq!(new, "c");
        assert!(timed.contains(&"a") && timed.contains(&"b") && timed.contains(&"c"), "timed {timed:?}");
    }
}
