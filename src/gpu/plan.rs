//! `Dispatch` and `Plan`: a compute dispatch with everything bound (pipeline, bind group, uniform block, grid), built
//! once; a `Plan` is an ordered list of them that a step replays into a single compute pass. Because every buffer and
//! bind group already exists, recording a step costs only `set_pipeline`/`set_bind_group`/`dispatch` calls, and the
//! number of dispatches per step is simply `plan.len()`.
//!
//! WebGPU makes each dispatch its own usage scope, so a dispatch sees the writes of the ones before it. Within one
//! dispatch a buffer must not be bound both read-only and read-write: kernels bind their inputs read-only and their
//! outputs read-write, and distinct activations live in distinct buffers.

use wgpu::util::DeviceExt;

use super::{Gpu, Readback, Tensor};
use crate::Result;

/// Threads per workgroup of the 1-D kernels (elementwise ops, per-row ops).
pub const WORKGROUP_1D: u32 = 256;

/// Grid for `n` threads in workgroups of `wg`: x at most 65535 (WebGPU's per-dimension limit), the rest in y.
/// WGSL side: `let i = gid.x + gid.y * nwg.x * WG;`.
pub fn grid_1d(n: usize, wg: u32) -> [u32; 3] {
    let groups = (n as u64).div_ceil(wg as u64).max(1);
    if groups <= 65535 {
        [groups as u32, 1, 1]
    } else {
        let y = groups.div_ceil(65535);
        [groups.div_ceil(y) as u32, y as u32, 1]
    }
}

pub struct Dispatch {
    pub label: &'static str,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
}

impl Dispatch {
    /// Build a dispatch of `entry` in `shader`. `uniform`, when given, is bound at binding 0 (padded to 16 bytes);
    /// `bindings` lists the storage buffers by binding index: exactly those the entry point uses.
    pub fn new(
        gpu: &Gpu,
        shader: &'static str,
        source: &'static str,
        entry: &'static str,
        uniform: Option<&[u8]>,
        bindings: &[(u32, &Tensor)],
        groups: [u32; 3],
    ) -> Dispatch {
        let pipeline = gpu.pipeline(shader, source, entry);
        let layout = pipeline.get_bind_group_layout(0);
        let ubuf = uniform.map(|u| {
            let mut bytes = u.to_vec();
            bytes.resize(bytes.len().div_ceil(16).max(1) * 16, 0);
            // A kernel's parameter block is a fixed struct of a few dozen bytes, far under the 64 KiB per uniform
            // binding that WebGPU guarantees, so exceeding the limit here is a bug in dpo3d, not a user's input.
            let usage = wgpu::BufferUsages::UNIFORM;
            if let Err(e) = super::tensor::check_buffer(&gpu.limits, &gpu.info.name, entry, bytes.len() as u64, usage) {
                panic!("{shader}.wgsl::{entry}: parameter block over the uniform limit: {e}");
            }
            gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(entry),
                contents: &bytes,
                // UNIFORM: read as the kernel's parameter block; it never changes after the plan is built.
                usage: wgpu::BufferUsages::UNIFORM,
            })
        });
        let mut entries: Vec<wgpu::BindGroupEntry> = Vec::new();
        if let Some(b) = &ubuf {
            entries.push(wgpu::BindGroupEntry { binding: 0, resource: b.as_entire_binding() });
        }
        for (i, t) in bindings {
            entries.push(wgpu::BindGroupEntry { binding: *i, resource: t.binding() });
        }
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &layout,
            entries: &entries,
        });
        Dispatch { label: entry, pipeline, bind_group, groups }
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]);
    }
}

/// An ordered list of dispatches, replayed as one compute pass, plus the buffers to zero before that pass
/// (gradients: `clear_buffer` is a transfer command, cheaper than a fill dispatch per buffer).
#[derive(Default)]
pub struct Plan {
    pub clears: Vec<Tensor>,
    pub dispatches: Vec<Dispatch>,
}

impl Plan {
    pub fn new() -> Plan {
        Plan { clears: Vec::new(), dispatches: Vec::new() }
    }
    /// Zero `t` at the start of the step (before any dispatch of any plan encoded with it).
    pub fn clear(&mut self, t: &Tensor) {
        self.clears.push(t.clone());
    }
    pub fn push(&mut self, d: Dispatch) {
        self.dispatches.push(d);
    }
    pub fn extend(&mut self, ds: impl IntoIterator<Item = Dispatch>) {
        self.dispatches.extend(ds);
    }
    pub fn append(&mut self, other: Plan) {
        self.clears.extend(other.clears);
        self.dispatches.extend(other.dispatches);
    }
    pub fn len(&self) -> usize {
        self.dispatches.len()
    }
    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty()
    }

    /// Record every dispatch into `pass`, in order.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.dispatches {
            d.record(pass);
        }
    }

    /// Clears, then one compute pass recording every dispatch.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        encode_all(encoder, &[self]);
    }

    /// One encoder, one pass, one submit. Does not wait.
    pub fn submit(&self, gpu: &Gpu) {
        submit_all(gpu, &[self]);
    }
}

/// Encode several plans as one step: all their clears first, then one compute pass with every dispatch in order.
pub fn encode_all(encoder: &mut wgpu::CommandEncoder, plans: &[&Plan]) {
    // Each plan's clears go right before its dispatches (a clear cannot sit inside a compute pass, so a plan with
    // clears starts a new pass). Hoisting them all to the front would be wrong once a submit holds several steps:
    // the second step's gradients would accumulate onto the first's.
    let mut i = 0;
    while i < plans.len() {
        for t in &plans[i].clears {
            encoder.clear_buffer(&t.buffer, t.offset, Some(t.bytes()));
        }
        let mut pass = encoder
            .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("dpo3d step"), timestamp_writes: None });
        plans[i].record(&mut pass);
        i += 1;
        while i < plans.len() && plans[i].clears.is_empty() {
            plans[i].record(&mut pass);
            i += 1;
        }
    }
}

/// One encoder, one pass, one submit for several plans. Does not wait.
pub fn submit_all(gpu: &Gpu, plans: &[&Plan]) {
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    encode_all(&mut enc, plans);
    gpu.queue.submit([enc.finish()]);
}

/// Total dispatches of a step made of `plans`.
pub fn dispatch_count(plans: &[&Plan]) -> usize {
    plans.iter().map(|p| p.len()).sum()
}

impl Gpu {
    /// Record `plans` (`encode_all`) and `readback`'s copies into one encoder, submit once, and fetch the readback
    /// if there is one: the GPU side of a training step, and of any one-off computation. GPU errors (validation, out
    /// of memory, a lost device) recorded since the last check are returned as `Err`, before submitting and after
    /// the readback.
    pub async fn run_plans(&self, plans: &[&Plan], readback: Option<&Readback>) -> Result<Option<Vec<Vec<f32>>>> {
        self.check()?;
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("dpo3d step") });
        encode_all(&mut enc, plans);
        if let Some(rb) = readback {
            rb.record(&mut enc);
        }
        self.queue.submit([enc.finish()]);
        let out = match readback {
            Some(rb) => Some(rb.fetch(self).await?),
            None => None,
        };
        self.check()?;
        Ok(out)
    }
}
