//! `Gpu`: one wgpu device and queue, the adapter's description, and the pipeline cache.
//!
//! `Gpu::new()` honours `WGPU_BACKEND` (tests and CI set `WGPU_BACKEND=vulkan` so that a missing driver fails loudly
//! instead of falling back to a slow GL path), requests the adapter's own limits (so big models fit where the
//! hardware allows) and reports what it got.
//!
//! GPU errors are `dpo3d::Error`s, never panics: wgpu's default for a validation or out-of-memory error nobody
//! catches is to panic, so `Gpu` installs an uncaptured-error handler and a device-lost callback that record the
//! error; `Gpu::check` (called by every training step's submit, `train::run_step`) returns it. Building something
//! (`Gpu::scoped`, `Gpu::scoped_blocking`; the trainers' constructors and `Gpu::pipeline` use them) runs inside error
//! scopes, so an out-of-memory or validation error there comes back from the constructor itself, with what was asked
//! and what the adapter allows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{Error, Result};

/// What a user wants to know about the adapter in use (printed by the examples, stored in bench results).
#[derive(Clone, Debug, serde::Serialize)]
pub struct GpuInfo {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    /// The smallest subgroup size the adapter may run a compute shader with, where the device was given wgpu's
    /// SUBGROUP feature (native adapters that have it; never in a browser); None where shaders cannot use subgroups.
    pub subgroup_min_size: Option<u32>,
}

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: GpuInfo,
    pub limits: wgpu::Limits,
    /// Which kernel each op family uses for each shape class, chosen by measurement on this adapter
    /// (`super::tune`).
    pub tuner: super::tune::Tuner,
    /// A 16-byte storage buffer bound where an entry point declares a binding that a dispatch does not use (the GEMM
    /// kernels' `aux` without a GELU epilogue). WebGPU forbids binding one buffer to two writable bindings of a
    /// dispatch, so the output itself cannot stand in.
    pub(crate) unused: super::Tensor,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<(&'static str, &'static str), wgpu::ComputePipeline>>,
    /// Results of `probe`, by name.
    probes: Mutex<HashMap<&'static str, bool>>,
    errors: Arc<ErrorLog>,
}

/// GPU errors nobody's scope caught (the uncaptured-error handler's and the device-lost callback's record), kept
/// until `Gpu::check` hands them out. A lost device stays lost: its error is returned by every later check.
#[derive(Default)]
struct ErrorLog {
    pending: Mutex<Vec<String>>,
    lost: Mutex<Option<String>>,
}

impl ErrorLog {
    fn push(&self, msg: String) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // A broken step can raise the same error for every dispatch; keep the first few.
        if p.len() < 8 {
            p.push(msg);
        }
    }
}

/// An open set of error scopes (out-of-memory, validation, internal) from `Gpu::push_scopes`; close it with
/// `Gpu::pop_scopes`.
pub struct ErrorScopes {
    guards: Vec<wgpu::ErrorScopeGuard>,
}

const INSTALL_HINT: &str = "dpo3d needs a GPU reachable through wgpu (Vulkan, Metal, DX12 or WebGPU). \
On Linux without a GPU install Mesa's software Vulkan (lavapipe): \
`sudo apt-get install mesa-vulkan-drivers libvulkan1`, then run with `WGPU_BACKEND=vulkan`. \
In a browser, use one with WebGPU enabled (Chrome/Edge 113+, or chrome://flags/#enable-unsafe-webgpu).";

impl Gpu {
    /// Acquire an adapter and a device with the adapter's own limits.
    pub async fn new() -> Result<Gpu> {
        let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        let backends = format!("{:?}", desc.backends);
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter { backends: backends.clone(), hint: format!("({e}) {INSTALL_HINT}") })?;
        Self::from_adapter(adapter).await
    }

    /// Blocking `new()` for native code (tests, examples).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking() -> Result<Gpu> {
        pollster::block_on(Self::new())
    }

    pub async fn from_adapter(adapter: wgpu::Adapter) -> Result<Gpu> {
        let ai = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("dpo3d"),
                // Timestamp queries, where the adapter has them, time kernel candidates on the GPU itself. Subgroup
                // operations, where it has them, make one more GEMM kernel a candidate (ops::matmul).
                required_features: adapter.features() & (wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP),
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Gpu(format!("adapter {} refused a device: {e}", ai.name)))?;
        let errors = Arc::new(ErrorLog::default());
        let log = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| log.push(describe(&e))));
        let log = errors.clone();
        device.set_device_lost_callback(move |reason, msg| {
            *log.lost.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(format!("the GPU device was lost ({reason:?}): {msg}; create a new `Gpu` to continue"));
        });
        let info = GpuInfo {
            name: ai.name.clone(),
            backend: format!("{:?}", ai.backend),
            device_type: format!("{:?}", ai.device_type),
            driver: format!("{} {}", ai.driver, ai.driver_info).trim().to_string(),
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            subgroup_min_size: adapter.features().contains(wgpu::Features::SUBGROUP).then_some(ai.subgroup_min_size),
        };
        #[cfg(not(target_arch = "wasm32"))]
        let calibrate = Some(super::tune::calibrator(&device, &queue));
        #[cfg(target_arch = "wasm32")]
        let calibrate = None; // nothing is measured on wasm (`TunePolicy::Rule`)
        let tuner = super::tune::Tuner::new(format!("{} | {} | {}", info.name, info.backend, info.driver), calibrate);
        let unused = super::Tensor {
            buffer: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("unused binding"),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            }),
            offset: 0,
            len: 4,
        };
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            tuner,
            unused,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            probes: Mutex::new(HashMap::new()),
            errors,
        })
    }

    /// The answer of `check` for `name`: whether a kernel that rests on an assumption the adapter's limits cannot
    /// promise (how subgroup lanes map onto a workgroup) gives right results here. A kernel whose probe fails is left
    /// out of the tuner's candidates. Run once per adapter and driver: the answer is kept for this device and in the
    /// tuner's cache file (`super::tune`), so later processes on the machine read it instead. `source` is the code the
    /// probe checks (its WGSL): a changed kernel is probed again.
    pub(crate) fn probe(&self, name: &'static str, source: &str, check: impl FnOnce() -> bool) -> bool {
        if let Some(&ok) = self.probes.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            return ok;
        }
        // FNV-1a of the source: a fingerprint for the cache key, not a security measure.
        let fingerprint =
            source.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        let key = format!("{name} {fingerprint:016x}");
        let ok = match self.tuner.probe_answer(&key) {
            Some(ok) => ok,
            None => {
                let ok = check();
                self.tuner.remember_probe(&key, ok);
                ok
            }
        };
        self.probes.lock().unwrap_or_else(|e| e.into_inner()).insert(name, ok);
        ok
    }

    /// Whether errors are waiting for the next `check` (without taking them).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn errors_pending(&self) -> bool {
        !self.errors.pending.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// `Err` with the GPU errors recorded since the last check (validation or out-of-memory errors outside any scope,
    /// a lost device), `Ok` if there were none.
    pub fn check(&self) -> Result<()> {
        if let Some(lost) = self.errors.lost.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Err(Error::Gpu(lost));
        }
        let pending = std::mem::take(&mut *self.errors.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if pending.is_empty() {
            Ok(())
        } else {
            Err(Error::Gpu(pending.join("; ")))
        }
    }

    /// Open error scopes for out-of-memory, validation and internal errors: everything this thread does on the device
    /// until `pop_scopes` reports its errors there instead of to the uncaptured-error handler.
    pub fn push_scopes(&self) -> ErrorScopes {
        let guards = [wgpu::ErrorFilter::Internal, wgpu::ErrorFilter::Validation, wgpu::ErrorFilter::OutOfMemory]
            .into_iter()
            .map(|f| self.device.push_error_scope(f))
            .collect();
        ErrorScopes { guards }
    }

    /// Close `scopes`: `Err` naming `what` with the first error they caught (out-of-memory first), and the adapter's
    /// limits when it was about memory.
    pub async fn pop_scopes(&self, scopes: ErrorScopes, what: &str) -> Result<()> {
        let mut first = None;
        // Pop in reverse order of pushing (out-of-memory, validation, internal).
        for g in scopes.guards.into_iter().rev() {
            if let Some(e) = g.pop().await {
                first.get_or_insert(e);
            }
        }
        match first {
            None => Ok(()),
            Some(e) => Err(Error::Gpu(format!("{what}: {}{}", describe(&e), self.limits_note(&e)))),
        }
    }

    /// Run `build` (which creates buffers, pipelines, bind groups) inside error scopes: its own error, or a GPU error
    /// it raised (named by `what`, e.g. "building the SFT trainer"), or what it built. Errors recorded before are
    /// returned first (`check`).
    pub async fn scoped<T>(&self, what: &str, build: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check()?;
        let scopes = self.push_scopes();
        let built = build();
        let popped = self.pop_scopes(scopes, what).await;
        let built = built?;
        popped?;
        Ok(built)
    }

    /// `scoped` for synchronous callers. Native wgpu resolves a popped scope at once, so this never waits; on the
    /// web (where it would) the scope is left to the uncaptured-error handler and the next `check`.
    pub fn scoped_blocking<T>(&self, what: &str, build: impl FnOnce() -> Result<T>) -> Result<T> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            pollster::block_on(self.scoped(what, build))
        }
        #[cfg(target_arch = "wasm32")]
        {
            self.check()?;
            let _ = what;
            build()
        }
    }

    /// For a memory error, what the adapter allows.
    fn limits_note(&self, e: &wgpu::Error) -> String {
        let msg = e.to_string().to_lowercase();
        if matches!(e, wgpu::Error::OutOfMemory { .. }) || msg.contains("size") || msg.contains("memory") {
            format!(
                " (adapter {}: max_buffer_size {} bytes, max_storage_buffer_binding_size {} bytes; make the model or \
                 batch smaller)",
                self.info.name, self.limits.max_buffer_size, self.limits.max_storage_buffer_binding_size
            )
        } else {
            String::new()
        }
    }

    /// The compute pipeline for `entry` in the WGSL source `source` (named `shader`), compiled once and cached.
    /// The layout is derived from the entry point ("auto" layout), so a bind group must bind exactly the
    /// bindings that entry point uses. The source is compiled without wgpu's loop bound (see `runtime_checks`), so
    /// every loop in it must end: dpo3d's own shaders are checked for that (`tests/wgsl_validate.rs`); WGSL of
    /// your own passed here must hold to it too, or run with `DPO3D_SHADER_CHECKS=full`.
    pub fn pipeline(&self, shader: &'static str, source: &'static str, entry: &'static str) -> wgpu::ComputePipeline {
        if let Some(p) = self.pipelines.lock().unwrap().get(&(shader, entry)) {
            return p.clone();
        }
        // Natively, compile inside error scopes, so a shader or layout the driver rejects is recorded with its name for
        // the next `check` (this function returns a pipeline either way; wgpu hands back an invalid one that fails at
        // use). On the web, the caller's scopes or the uncaptured-error handler catch it.
        #[cfg(not(target_arch = "wasm32"))]
        let scopes = self.push_scopes();
        let module = {
            let mut modules = self.modules.lock().unwrap();
            modules
                .entry(shader)
                .or_insert_with(|| {
                    let desc = wgpu::ShaderModuleDescriptor {
                        label: Some(shader),
                        source: wgpu::ShaderSource::Wgsl(source.into()),
                    };
                    if shader_checks_full() {
                        self.device.create_shader_module(desc)
                    } else {
                        // SAFETY: the only check dropped is naga's loop bound (`force_loop_bounding`), which wgpu adds
                        // to every loop so that an untrusted shader cannot hang the device. In dpo3d's own WGSL
                        // (`ops::SHADERS`) every loop is a `for` whose counter moves toward a bound fixed before the
                        // loop starts (a parameter, a constant or a buffer's length), which `tests/wgsl_validate.rs`
                        // checks, so every loop ends; other WGSL passed to this public function is held to the same
                        // rule by its documentation. Bounds checks on memory stay as wgpu sets them.
                        unsafe { self.device.create_shader_module_trusted(desc, runtime_checks()) }
                    }
                })
                .clone()
        };
        let p = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        self.pipelines.lock().unwrap().insert((shader, entry), p.clone());
        #[cfg(not(target_arch = "wasm32"))]
        if let Err(e) = pollster::block_on(self.pop_scopes(scopes, &format!("compiling {shader}.wgsl entry {entry}"))) {
            self.errors.push(e.to_string().trim_start_matches("GPU error: ").to_string());
        }
        p
    }

    /// Check a requested buffer size against the device's limits, with an error that says which buffer.
    pub fn check_binding_size(&self, what: &str, bytes: u64) -> Result<()> {
        let max = self.limits.max_storage_buffer_binding_size;
        if bytes > max {
            return Err(Error::config(format!(
                "{what} needs a {bytes}-byte storage buffer but {} allows at most {max} bytes per binding; \
                 make the model or batch smaller",
                self.info.name
            )));
        }
        Ok(())
    }

    /// Wait for all submitted work (native: blocks; wasm: a no-op, readbacks await instead).
    pub fn wait(&self) {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        }
    }
}

/// One line for a wgpu error: its kind and message (wgpu's `Display` carries the label of the object that failed).
fn describe(e: &wgpu::Error) -> String {
    let kind = match e {
        wgpu::Error::OutOfMemory { .. } => "out of GPU memory",
        wgpu::Error::Validation { .. } => "validation error",
        wgpu::Error::Internal { .. } => "internal GPU error",
    };
    format!("{kind}: {}", e.to_string().trim())
}

/// The runtime checks dpo3d's shaders are compiled with: wgpu's defaults without the loop bound. naga otherwise gives
/// every loop a hidden iteration counter with its own exit test; on lavapipe (Mesa 25.0.7) dropping it made the subgroup
/// GEMM about 25% faster at 1024^3 (34.8-37.9 -> 45.3 GFLOP/s) and the vec8 GEMM about a third (19.2 -> 26.4), with the
/// same results bit for bit (`docs/bench/lavapipe-2026-11-30/loop-bound/`).
fn runtime_checks() -> wgpu::ShaderRuntimeChecks {
    wgpu::ShaderRuntimeChecks { force_loop_bounding: false, ..wgpu::ShaderRuntimeChecks::checked() }
}

/// `DPO3D_SHADER_CHECKS=full` compiles the shaders with every check wgpu adds by default (the loop bound included):
/// for chasing a hang, at some cost in speed.
fn shader_checks_full() -> bool {
    std::env::var("DPO3D_SHADER_CHECKS").is_ok_and(|v| v == "full")
}
