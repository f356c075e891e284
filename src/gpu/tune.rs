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
//! A choice measured while other work shared the machine may be a slower kernel, and would stay in the cache. So
//! every measurement is bracketed by a fixed calibration kernel (timed right before and right after it), whose time
//! is kept with the choice (the faster of the two: load that lasted through the measurement); the first time a process
//! reads a cached choice it times the calibration kernel once, and a choice measured at a calibration more than
//! `LOADED` times slower than the fastest this adapter has shown is measured again, once, when the machine is quiet now
//! (else kept until a quiet run).
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

/// One choice: the kernel and where the choice came from ("measured", "cache", "forced", "rule", "pinned"), with the
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
    /// The `SHADER_BUILD` the timings were taken with (0 in files written before the field existed).
    #[serde(default)]
    build: u32,
    /// adapter key ("name | backend | driver") -> shape key -> kernel name
    adapters: BTreeMap<String, BTreeMap<String, String>>,
    /// adapter key -> shape key -> the calibration kernel's time (microseconds) when that choice was measured. Files
    /// written before it existed have none: their choices are trusted as they are.
    #[serde(default)]
    calibrations: BTreeMap<String, BTreeMap<String, f64>>,
    /// adapter key -> the shape keys measured a second time because the first measurement was under load: those
    /// keep their second answer, whatever its calibration (so a noisy machine does not measure them in every run).
    #[serde(default)]
    remeasured: BTreeMap<String, std::collections::BTreeSet<String>>,
}

/// How dpo3d's shaders are compiled, as far as it moves their relative speeds: a cache file written under another
/// build is measured afresh rather than trusted. 1: wgpu's default runtime checks; 2: without naga's loop bound
/// (`gpu::context`), which sped some GEMMs up by a third on lavapipe and others not at all.
pub const SHADER_BUILD: u32 = 2;

/// The class a size falls in for the tuner's keys: the size rounded up to the next number of the form 2^k or 3 * 2^k
/// (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, ...), so sizes in one class differ by at most 1.5x.
/// Keys are written in classes (`classes`), not exact sizes, because the sizes that follow the data (rows = B * T, the
/// sequence length T, a generation's batch) take a new value in nearly every job: keyed exactly, `dpo3d generate` at
/// each new batch size timed a fresh set of kernels at start (on a 2-core EPYC 50-56 s per job for 2-4 s of generation;
/// `docs/bench/lavapipe-2026-12-02/tuner-classes/`). Widths, head sizes and vocabularies usually sit on a class's bound
/// already, so they keep their own keys. A choice is timed at the shape that first asked for its class and holds for the whole class; candidates are
/// always those that apply to the exact shape in hand (`Tuner::choose` keeps them apart where they differ).
pub fn class(n: usize) -> usize {
    if n <= 4 {
        return n;
    }
    let pow2 = n.next_power_of_two();
    let three = pow2 / 4 * 3; // 3 * 2^(k-2), between pow2 / 2 and pow2
    if n <= three {
        three
    } else {
        pow2
    }
}

/// `sizes` in classes (`class`), joined by 'x': the shape part of a tuner key ("24x48x16" for 21, 48, 16).
pub fn classes(sizes: &[usize]) -> String {
    sizes.iter().map(|&n| class(n).to_string()).collect::<Vec<_>>().join("x")
}

/// The cache file at `path`, or an empty one where it is missing, unreadable or from another `SHADER_BUILD`.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))] // never read on wasm
fn read_cache(path: &std::path::Path) -> CacheFile {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str::<CacheFile>(&s).ok())
        .filter(|f| f.build == SHADER_BUILD)
        .unwrap_or_default()
}

/// A choice measured at a calibration time more than this many times the adapter's fastest was measured under load.
/// On a quiet machine repeated calibrations differ by well under 1.5x; a build sharing a 2-core machine with lavapipe
/// slows it about 2x.
pub const LOADED: f64 = 1.5;

/// Times the calibration kernel now: seconds per run, or None where the adapter cannot be timed.
pub type Calibrate = Box<dyn Fn() -> Option<f64> + Send + Sync>;

pub struct Tuner {
    pub policy: TunePolicy,
    /// "name | backend | driver": cache entries are only reused on the same adapter and driver.
    pub adapter_key: String,
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))] // never written on wasm
    cache_path: Option<std::path::PathBuf>,
    cached: Mutex<BTreeMap<String, String>>,
    /// The calibration time (microseconds) of each measured choice in `cached` that has one.
    calibrations: Mutex<BTreeMap<String, f64>>,
    /// The choices measured a second time (`CacheFile::remeasured`).
    remeasured: Mutex<std::collections::BTreeSet<String>>,
    calibrate: Option<Calibrate>,
    /// This process's calibration time (microseconds), taken at the first cached choice it reads.
    now_us: std::sync::OnceLock<Option<f64>>,
    chosen: Mutex<BTreeMap<String, KernelChoice>>,
    log: bool,
}

impl Tuner {
    /// The tuner for `adapter_key`, with the cache file's entries for it; `calibrate` times the calibration kernel on
    /// this adapter (`calibrator`).
    pub fn new(adapter_key: String, calibrate: Option<Calibrate>) -> Tuner {
        let cache_path = default_cache_path();
        let file = cache_path.as_deref().map(read_cache).unwrap_or_default();
        let mut tuner = Tuner::with(TunePolicy::from_env(), adapter_key, cache_path, file, calibrate);
        tuner.log = std::env::var("DPO3D_TUNE_LOG").is_ok_and(|v| v == "1");
        tuner
    }

    fn with(
        policy: TunePolicy,
        adapter_key: String,
        cache_path: Option<std::path::PathBuf>,
        mut file: CacheFile,
        calibrate: Option<Calibrate>,
    ) -> Tuner {
        let cached = file.adapters.remove(&adapter_key).unwrap_or_default();
        let calibrations = file.calibrations.remove(&adapter_key).unwrap_or_default();
        let remeasured = file.remeasured.remove(&adapter_key).unwrap_or_default();
        Tuner {
            policy,
            adapter_key,
            cache_path,
            cached: Mutex::new(cached),
            calibrations: Mutex::new(calibrations),
            remeasured: Mutex::new(remeasured),
            calibrate,
            now_us: std::sync::OnceLock::new(),
            chosen: Mutex::new(BTreeMap::new()),
            log: false,
        }
    }

    /// The calibration kernel's time now, in microseconds (None without a calibrator or where it cannot be timed).
    fn calibration_us(&self) -> Option<f64> {
        self.calibrate.as_ref().and_then(|c| c()).map(|s| s * 1e6)
    }

    /// Whether the cached choice under `measured_key` was measured under load (its calibration more than `LOADED`
    /// times the fastest this adapter has shown, this process's included) while the machine is quiet now, so that
    /// measuring it again gives a fairer answer. Choices without a calibration (older cache files) are kept, and so
    /// are choices measured a second time already.
    fn measured_under_load(&self, measured_key: &str) -> bool {
        if self.remeasured.lock().unwrap().contains(measured_key) {
            return false;
        }
        let Some(at) = self.calibrations.lock().unwrap().get(measured_key).copied() else { return false };
        let Some(now) = *self.now_us.get_or_init(|| {
            let now = self.calibration_us();
            if self.log {
                eprintln!("[dpo3d] calibration now: {now:.1?} us");
            }
            now
        }) else {
            return false;
        };
        let best = self.calibrations.lock().unwrap().values().fold(now, |b, &c| b.min(c));
        let stale = at > LOADED * best && now <= LOADED * best;
        if stale && self.log {
            eprintln!(
                "[dpo3d] {measured_key}: measured at calibration {at:.1} us, the machine's best is {best:.1} us \
                 (now {now:.1} us): measuring again"
            );
        }
        stale
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
                let from_file = self.cached.lock().unwrap().get(&measured_key).and_then(|k| find(k));
                let again = known.is_none() && from_file.is_some() && self.measured_under_load(&measured_key);
                match known.or(from_file.filter(|_| !again)) {
                    Some(k) => (k, "cache", vec![]),
                    None => {
                        // Bracketed by the calibration kernel; the faster of the two is kept, so that only load that
                        // lasted through the measurement counts (on a quiet machine a single calibration is now and
                        // then 2x slower).
                        let before = self.calibration_us();
                        let (k, timings) = measure(candidates, &mut time);
                        let after = self.calibration_us();
                        if let Some(c) = before.into_iter().chain(after).reduce(f64::min) {
                            self.calibrations.lock().unwrap().insert(measured_key.clone(), c);
                            if self.log {
                                eprintln!("[dpo3d] {full_key}: measured at calibration {c:.1} us");
                            }
                        }
                        if again {
                            self.remeasured.lock().unwrap().insert(measured_key.clone());
                        }
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

    /// Make these choices ("family shape-key" -> kernel, as `used_choices` lists them) this process's, before any plan
    /// is built: a resumed run builds the same plans as the run it continues, whatever the cache file says now (a
    /// choice measured again since, or a cache deleted). A pinned kernel that is not among a shape's candidates (a
    /// version without it) is ignored there and the shape chosen as usual.
    pub fn pin(&self, choices: &BTreeMap<String, String>) {
        let mut chosen = self.chosen.lock().unwrap();
        let mut used = used_choices_map().lock().unwrap();
        let used = used.entry(self.adapter_key.clone()).or_default();
        for (key, kernel) in choices {
            let choice = KernelChoice { kernel: kernel.clone(), source: "pinned".into(), timings_us: vec![] };
            chosen.insert(key.clone(), choice);
            used.insert(key.clone(), kernel.clone());
        }
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
            let mut file = read_cache(path);
            file.build = SHADER_BUILD;
            let entry = file.adapters.entry(self.adapter_key.clone()).or_default();
            for (k, v) in self.cached.lock().unwrap().iter() {
                entry.insert(k.clone(), v.clone());
            }
            let entry = file.calibrations.entry(self.adapter_key.clone()).or_default();
            for (k, v) in self.calibrations.lock().unwrap().iter() {
                entry.insert(k.clone(), *v);
            }
            let entry = file.remeasured.entry(self.adapter_key.clone()).or_default();
            entry.extend(self.remeasured.lock().unwrap().iter().cloned());
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

/// A candidate more than this many times slower than the fastest after the first round is not timed again: it cannot
/// win (a burst of other work slows a run about 2x), and the slowest kernels (the naive GEMM, 10-20x behind on
/// lavapipe) would otherwise take most of the tuning time.
const HOPELESS: f64 = 8.0;

fn measure(
    candidates: &[&'static str],
    time: &mut impl FnMut(&'static str) -> Option<f64>,
) -> (&'static str, Vec<(String, f64)>) {
    let mut best_of: Vec<Option<f64>> = vec![None; candidates.len()];
    for round in 0..ROUNDS {
        let fastest = best_of.iter().flatten().copied().reduce(f64::min);
        for (i, &c) in candidates.iter().enumerate() {
            if round > 0 && best_of[i].zip(fastest).is_some_and(|(t, f)| t > HOPELESS * f) {
                continue;
            }
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
    time_recorded(&gpu.device, &gpu.queue, &|pass| dispatch.record(pass))
}

/// `time_dispatch` for whatever `record` puts into a compute pass (one run of it).
#[cfg(not(target_arch = "wasm32"))]
fn time_recorded(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    record: &dyn Fn(&mut wgpu::ComputePass<'_>),
) -> Option<f64> {
    let once = run_copies(device, queue, record, 1)?;
    let copies = ((2e-3 / once.max(1e-7)).ceil() as usize).clamp(1, 64);
    if copies == 1 {
        // Long enough that one more run (timed) is a fair measurement; the first included compilation.
        return run_copies(device, queue, record, 1);
    }
    run_copies(device, queue, record, copies).map(|t| t / copies as f64)
}

/// The calibration kernel: 256 workgroups of 64 invocations, each folding 64 vec4 loads from a 64 KiB buffer into
/// one store, so it exercises what a GEMM does on every thread the adapter runs (loads and multiply-adds).
#[cfg(not(target_arch = "wasm32"))]
const CALIBRATION_WGSL: &str = "
@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@compute @workgroup_size(64)
fn calibrate(@builtin(global_invocation_id) gid: vec3<u32>) {
    var acc = vec4<f32>(0.0);
    for (var i = 0u; i < 64u; i++) {
        acc = acc * 0.5 + src[(gid.x * 7u + i * 61u) & 4095u];
    }
    dst[gid.x] = acc;
}
";

/// The calibrator of `Tuner::new` for this device: times `CALIBRATION_WGSL` as `time_dispatch` times a kernel, the
/// best of three. Its pipeline and buffers are made at the first call (a process that never reads or measures a
/// choice never builds them).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn calibrator(device: &wgpu::Device, queue: &wgpu::Queue) -> Calibrate {
    let (device, queue) = (device.clone(), queue.clone());
    let kernel = std::sync::OnceLock::new();
    Box::new(move || {
        let (pipeline, bind_group) = kernel.get_or_init(|| calibration_kernel(&device));
        let record = |pass: &mut wgpu::ComputePass<'_>| {
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, bind_group, &[]);
            pass.dispatch_workgroups(256, 1, 1);
        };
        (0..3).filter_map(|_| time_recorded(&device, &queue, &record)).reduce(f64::min)
    })
}

#[cfg(not(target_arch = "wasm32"))]
fn calibration_kernel(device: &wgpu::Device) -> (wgpu::ComputePipeline, wgpu::BindGroup) {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("tune calibration"),
        source: wgpu::ShaderSource::Wgsl(CALIBRATION_WGSL.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("tune calibration"),
        layout: None,
        module: &module,
        entry_point: Some("calibrate"),
        compilation_options: Default::default(),
        cache: None,
    });
    // STORAGE: read by the kernel (src, zeros) and written by it (dst, 256 x 64 vec4).
    let buffer = |label, size| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    };
    let (src, dst) = (buffer("tune calibration src", 4096 * 16), buffer("tune calibration dst", 256 * 64 * 16));
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("tune calibration"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry { binding: 0, resource: src.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: dst.as_entire_binding() },
        ],
    });
    (pipeline, bind_group)
}

#[cfg(not(target_arch = "wasm32"))]
fn run_copies(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    record: &dyn Fn(&mut wgpu::ComputePass<'_>),
    copies: usize,
) -> Option<f64> {
    let timestamps = device.features().contains(wgpu::Features::TIMESTAMP_QUERY);
    let query = timestamps.then(|| {
        let set = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("tune"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        // QUERY_RESOLVE: the two timestamps land here; COPY_SRC: then go to a mappable buffer.
        let resolve = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tune resolve"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        // MAP_READ | COPY_DST: the host reads the two u64 ticks.
        let read = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tune read"),
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        (set, resolve, read)
    });
    let started = std::time::Instant::now();
    let mut enc = device.create_command_encoder(&Default::default());
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
            record(&mut pass);
        }
    }
    if let Some((set, resolve, read)) = &query {
        enc.resolve_query_set(set, 0..2, resolve, 0);
        enc.copy_buffer_to_buffer(resolve, 0, read, 0, 16);
    }
    queue.submit([enc.finish()]);
    let _ = device.poll(wgpu::PollType::wait_indefinitely());
    let wall = started.elapsed().as_secs_f64();
    let Some((_, _, read)) = &query else { return Some(wall) };
    let slice = read.slice(..);
    slice.map_async(wgpu::MapMode::Read, |_| {});
    let _ = device.poll(wgpu::PollType::wait_indefinitely());
    let ticks: Vec<u64> = match slice.get_mapped_range() {
        Ok(view) => bytemuck::cast_slice(&view).to_vec(),
        Err(_) => return Some(wall),
    };
    read.unmap();
    let period_ns = queue.get_timestamp_period() as f64;
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

    /// Classes are the numbers 2^k and 3 * 2^k, each size going to the smallest one not below it, checked against a
    /// list of those numbers walked in order.
    #[test]
    fn should_round_sizes_up_to_their_class() {
        let mut bounds: Vec<usize> = (0..20).flat_map(|k| [1usize << k, 3 << k]).collect();
        bounds.sort_unstable();
        bounds.dedup();
        for n in 1..=(1 << 18) {
            let want = *bounds.iter().find(|&&b| b >= n).unwrap();
            assert_eq!(class(n), want, "class({n})");
        }
        assert_eq!(class(0), 0);
        assert_eq!(classes(&[21, 48, 16]), "24x48x16");
        assert_eq!(classes(&[6400, 7328, 50257]), "8192x8192x65536");
    }

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
        // A candidate over 8x slower than the fastest after the first round is not timed again.
        let mut calls: Vec<&str> = Vec::new();
        let (k, timings) = measure(&["a", "b", "c"], &mut |c| {
            calls.push(c);
            Some(match c {
                "a" => 9e-3,
                "b" => 1e-3,
                _ => 7e-3,
            })
        });
        assert_eq!((k, calls), ("b", vec!["a", "b", "c", "b", "c", "b", "c"]));
        assert_eq!(timings[0], ("a".to_string(), 9e3), "a dropped candidate keeps its one timing");
        // A candidate that cannot be timed is skipped; with none timed, the rule's choice (the first) stands.
        assert_eq!(measure(&["a", "b"], &mut |c| (c == "b").then_some(5e-3)).0, "b");
        assert_eq!(measure(&["a", "b"], &mut |_| None).0, "a");
    }

    /// A probe's answer goes into the cache file under this adapter and is read back by a new process's tuner.
    #[test]
    fn should_remember_probe_answers_in_the_cache_file() {
        let path = std::env::temp_dir().join(format!("dpo3d-tune-probe-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let tuner = |cached: BTreeMap<String, String>| {
            let key = "test adapter: probes".to_string();
            let file = CacheFile { adapters: BTreeMap::from([(key.clone(), cached)]), ..Default::default() };
            Tuner::with(TunePolicy::Measure, key, Some(path.clone()), file, None)
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
        let tuner = |cached: BTreeMap<String, String>| {
            let key = "test adapter: candidates change".to_string();
            let file = CacheFile { adapters: BTreeMap::from([(key.clone(), cached)]), ..Default::default() };
            Tuner::with(TunePolicy::Measure, key, None, file, None)
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

    /// Timings taken under another shader build (how every kernel is compiled) are not trusted: such a file reads
    /// as empty, and the next save writes the current build.
    #[test]
    fn should_ignore_a_cache_file_from_another_shader_build() {
        let path = std::env::temp_dir().join(format!("dpo3d-tune-build-{}.json", std::process::id()));
        let key = "test adapter: build".to_string();
        let choice = BTreeMap::from([(measured_key("f 8x8", &["a", "b"]), "b".to_string())]);
        let write = |build: u32| {
            let file =
                CacheFile { build, adapters: BTreeMap::from([(key.clone(), choice.clone())]), ..Default::default() };
            std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
        };
        write(SHADER_BUILD);
        assert_eq!(read_cache(&path).adapters[&key], choice);
        for other in [0, SHADER_BUILD - 1, SHADER_BUILD + 1] {
            write(other);
            assert!(read_cache(&path).adapters.is_empty(), "a build {other} file was read");
        }
        // The tuner over that stale file measures, and its save replaces the file with this build's choice.
        process_choices().lock().unwrap().remove(&key);
        let tuner = Tuner::with(TunePolicy::Measure, key.clone(), Some(path.clone()), read_cache(&path), None);
        let got = tuner.choose("f", "8x8", &["a", "b"], |k| Some(if k == "a" { 1e-3 } else { 2e-3 }));
        assert_eq!(got, "a");
        let saved = read_cache(&path);
        assert_eq!(saved.build, SHADER_BUILD);
        assert_eq!(saved.adapters[&key][&measured_key("f 8x8", &["a", "b"])], "a");
        let _ = std::fs::remove_file(&path);
    }

    /// A choice measured while the machine was loaded (its calibration 2x the adapter's best) is measured again by
    /// the next quiet process, and then kept; a process that is itself loaded keeps it; cache files without
    /// calibrations keep their choices.
    #[test]
    fn should_measure_again_a_choice_measured_under_load() {
        let path = std::env::temp_dir().join(format!("dpo3d-tune-load-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let key = "test adapter: load".to_string();
        let file = || -> CacheFile {
            std::fs::read_to_string(&path).ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default()
        };
        // A new process's tuner (this process's own choices forgotten) whose calibration kernel takes `ms` ms.
        let tuner = |ms: f64, f: CacheFile| {
            process_choices().lock().unwrap().remove(&key);
            let calibrate: Calibrate = Box::new(move || Some(ms * 1e-3));
            Tuner::with(TunePolicy::Measure, key.clone(), Some(path.clone()), f, Some(calibrate))
        };
        let never = |k: &str| -> Option<f64> { panic!("{k} timed, but the cached choice should stand") };
        // Loaded: "b" measures faster (the load fell on "a"'s runs); calibration 2 ms.
        assert_eq!(
            tuner(2.0, file()).choose("f", "8x8", &["a", "b"], |k| Some(if k == "a" { 3e-3 } else { 2e-3 })),
            "b"
        );
        let measured = measured_key("f 8x8", &["a", "b"]);
        assert_eq!(file().calibrations[&key][&measured], 2000.0);
        // Another process, also loaded: it cannot tell, and keeps "b" without timing anything.
        assert_eq!(tuner(2.0, file()).choose("f", "8x8", &["a", "b"], never), "b");
        // A quiet process (calibration 1 ms): "b" was measured at 2x its calibration, so it is measured again.
        let mut timed = 0;
        let quiet = tuner(1.0, file()).choose("f", "8x8", &["a", "b"], |k| {
            timed += 1;
            Some(if k == "a" { 1e-3 } else { 2e-3 })
        });
        assert_eq!((quiet, timed), ("a", 6));
        assert_eq!(file().calibrations[&key][&measured], 1000.0);
        assert_eq!(file().adapters[&key][&measured], "a");
        // Now measured quietly: kept by quiet processes and by loaded ones alike.
        assert_eq!(tuner(1.2, file()).choose("f", "8x8", &["a", "b"], never), "a");
        assert_eq!(tuner(2.0, file()).choose("f", "8x8", &["a", "b"], never), "a");
        // A loaded process keeps a loaded choice even when the file shows a quiet calibration elsewhere.
        let mut f = file();
        f.adapters.get_mut(&key).unwrap().insert(measured_key("k 8x8", &["a", "b"]), "b".into());
        f.calibrations.get_mut(&key).unwrap().insert(measured_key("k 8x8", &["a", "b"]), 2000.0);
        assert_eq!(tuner(2.0, f).choose("k", "8x8", &["a", "b"], never), "b");
        // A calibration process whose calibrations follow `ms` in turn (then stay at its last).
        let sequence = |ms: Vec<f64>| -> Calibrate {
            let calls = std::sync::atomic::AtomicUsize::new(0);
            Box::new(move || {
                let i = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst).min(ms.len() - 1);
                Some(ms[i] * 1e-3)
            })
        };
        // A blip in one of the two calibrations around a measurement does not count: the faster one is kept.
        process_choices().lock().unwrap().remove(&key);
        let t =
            Tuner::with(TunePolicy::Measure, key.clone(), Some(path.clone()), file(), Some(sequence(vec![1.0, 2.0])));
        assert_eq!(t.choose("h", "8x8", &["a", "b"], |k| Some(if k == "a" { 1e-3 } else { 2e-3 })), "a");
        assert_eq!(file().calibrations[&key][&measured_key("h 8x8", &["a", "b"])], 1000.0);
        // A choice is measured again once only: here the quiet process (1 ms at its first cached choice) measures "g"
        // again under load (2 ms around it), and a later quiet process keeps that second answer.
        let mut f = file();
        f.adapters.get_mut(&key).unwrap().insert(measured_key("g 8x8", &["a", "b"]), "b".into());
        f.calibrations.get_mut(&key).unwrap().insert(measured_key("g 8x8", &["a", "b"]), 2000.0);
        process_choices().lock().unwrap().remove(&key);
        let t = Tuner::with(TunePolicy::Measure, key.clone(), Some(path.clone()), f, Some(sequence(vec![1.0, 2.0])));
        assert_eq!(t.choose("g", "8x8", &["a", "b"], |k| Some(if k == "a" { 3e-3 } else { 1e-3 })), "b");
        assert!(file().remeasured[&key].contains(&measured_key("g 8x8", &["a", "b"])));
        assert_eq!(tuner(1.0, file()).choose("g", "8x8", &["a", "b"], never), "b");
        // An entry without a calibration (a file from before calibrations) is kept.
        let mut f = file();
        f.calibrations.clear();
        f.adapters.get_mut(&key).unwrap().insert(measured, "b".into());
        assert_eq!(tuner(1.0, f).choose("f", "8x8", &["a", "b"], never), "b");
        std::fs::remove_file(&path).unwrap();
    }

    /// Pinned choices win over the cache and over measuring; one whose kernel is not a candidate is ignored.
    #[test]
    fn should_use_pinned_choices_before_the_cache() {
        let key = "test adapter: pinned".to_string();
        let cached = BTreeMap::from([(measured_key("f 8x8", &["a", "b"]), "a".to_string())]);
        let file = CacheFile { adapters: BTreeMap::from([(key.clone(), cached)]), ..Default::default() };
        let tuner = Tuner::with(TunePolicy::Measure, key, None, file, None);
        tuner.pin(&BTreeMap::from([("f 8x8".to_string(), "b".to_string()), ("g 4x4".to_string(), "z".to_string())]));
        assert_eq!(tuner.choose("f", "8x8", &["a", "b"], |_| panic!("a pinned choice is not timed")), "b");
        assert_eq!(tuner.choices()["f 8x8"].source, "pinned");
        let g = tuner.choose("g", "4x4", &["a", "b"], |k| Some(if k == "a" { 2e-3 } else { 1e-3 }));
        assert_eq!((g, tuner.choices()["g 4x4"].source.as_str()), ("b", "measured"));
    }
}
