//! `Gpu`: one wgpu device and queue, the adapter's description, and the pipeline cache.
//!
//! `Gpu::new()` honours `WGPU_BACKEND` (tests and CI set `WGPU_BACKEND=vulkan` so that a missing driver fails loudly
//! instead of falling back to a slow GL path), requests the adapter's own limits (so big models fit where the
//! hardware allows) and reports what it got.

use std::collections::HashMap;
use std::sync::Mutex;

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
}

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: GpuInfo,
    pub limits: wgpu::Limits,
    /// Which kernel each op family uses for each shape class, chosen by measurement on this adapter
    /// (`super::tune`).
    pub tuner: super::tune::Tuner,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<(&'static str, &'static str), wgpu::ComputePipeline>>,
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
                // Timestamp queries, where the adapter has them, time kernel candidates on the GPU itself.
                required_features: adapter.features() & wgpu::Features::TIMESTAMP_QUERY,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Gpu(format!("adapter {} refused a device: {e}", ai.name)))?;
        let info = GpuInfo {
            name: ai.name.clone(),
            backend: format!("{:?}", ai.backend),
            device_type: format!("{:?}", ai.device_type),
            driver: format!("{} {}", ai.driver, ai.driver_info).trim().to_string(),
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size as u64,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
        };
        let tuner = super::tune::Tuner::new(format!("{} | {} | {}", info.name, info.backend, info.driver));
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            tuner,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
        })
    }

    /// The compute pipeline for `entry` in the WGSL source `source` (named `shader`), compiled once and cached.
    /// The layout is derived from the entry point ("auto" layout), so a bind group must bind exactly the
    /// bindings that entry point uses.
    pub fn pipeline(&self, shader: &'static str, source: &'static str, entry: &'static str) -> wgpu::ComputePipeline {
        if let Some(p) = self.pipelines.lock().unwrap().get(&(shader, entry)) {
            return p.clone();
        }
        let module = {
            let mut modules = self.modules.lock().unwrap();
            modules
                .entry(shader)
                .or_insert_with(|| {
                    self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(shader),
                        source: wgpu::ShaderSource::Wgsl(source.into()),
                    })
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
        p
    }

    /// Check a requested buffer size against the device's limits, with an error that says which buffer.
    pub fn check_binding_size(&self, what: &str, bytes: u64) -> Result<()> {
        let max = self.limits.max_storage_buffer_binding_size as u64;
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
