//! `Tensor`: a view (buffer, byte offset, element count) into a GPU storage buffer of f32 or u32 elements, and
//! `TensorArena`: many named tensors packed into one buffer (llm.c's "parameters live in one allocation"), so that
//! AdamW, the gradient norm and zeroing the gradients are one dispatch each over the whole buffer.
//!
//! Readback is batched: `Readback` copies any set of tensors into one staging buffer inside the caller's command
//! encoder, and `fetch` maps it once.
//!
//! Every buffer dpo3d allocates goes through `create_buffer`, which checks the size against the adapter's limits
//! (`max_buffer_size`, and the per-binding limit of the way it will be bound) before asking the device, so an
//! oversized model or batch is a `dpo3d::Error` naming the buffer, the bytes asked and the bytes allowed, not a
//! device validation error or an out-of-memory abort.

use std::num::NonZeroU64;

use super::Gpu;
use crate::{Error, Result};

/// Storage-buffer views must start at a multiple of the device's `min_storage_buffer_offset_alignment`; WebGPU
/// guarantees it is at most 256 bytes, so arenas align every tensor to 256 bytes (64 elements) on every device.
pub const ARENA_ALIGN_ELEMS: usize = 64;

#[derive(Clone, Debug)]
pub struct Tensor {
    pub buffer: wgpu::Buffer,
    /// Byte offset into `buffer`.
    pub offset: u64,
    /// Number of 4-byte elements.
    pub len: usize,
}

fn usage() -> wgpu::BufferUsages {
    // STORAGE: kernels read and write it; COPY_SRC: readback and checkpoints; COPY_DST: uploads and clears.
    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST
}

/// Check a buffer of `bytes` bytes, to be used as `usage`, against `limits` (those of the adapter named `adapter`):
/// `max_buffer_size` always, `max_storage_buffer_binding_size` when it is bound as storage (dpo3d binds whole
/// tensors), `max_uniform_buffer_binding_size` when bound as a uniform. The error names the buffer, what was asked
/// and what the adapter allows.
pub fn check_buffer(
    limits: &wgpu::Limits,
    adapter: &str,
    label: &str,
    bytes: u64,
    usage: wgpu::BufferUsages,
) -> Result<()> {
    let mut checks = vec![("max_buffer_size", limits.max_buffer_size)];
    if usage.contains(wgpu::BufferUsages::STORAGE) {
        checks.push(("max_storage_buffer_binding_size", limits.max_storage_buffer_binding_size));
    }
    if usage.contains(wgpu::BufferUsages::UNIFORM) {
        checks.push(("max_uniform_buffer_binding_size", limits.max_uniform_buffer_binding_size));
    }
    for (limit, max) in checks {
        if bytes > max {
            return Err(Error::config(format!(
                "buffer \"{label}\" needs {bytes} bytes ({:.1} MiB) but adapter {adapter} allows at most {max} bytes \
                 ({:.1} MiB, its {limit}); make the model or batch smaller",
                bytes as f64 / 1048576.0,
                max as f64 / 1048576.0
            )));
        }
    }
    Ok(())
}

/// Bytes allocated for `len` 4-byte elements, or an error if that overflows: rounded up to whole 16-byte vec4s (at
/// least one: WebGPU has no empty bindings), so that every binding may be read as `array<vec4<f32>>` (see `binding`).
fn elem_bytes(label: &str, len: usize) -> Result<u64> {
    (len.max(1) as u64)
        .checked_mul(4)
        .and_then(|b| b.checked_next_multiple_of(16))
        .ok_or_else(|| Error::config(format!("buffer \"{label}\": {len} elements do not fit in 64-bit byte sizes")))
}

/// The one checked allocation: `check_buffer` against the device's limits, then `create_buffer`.
pub fn create_buffer(gpu: &Gpu, label: &str, bytes: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
    check_buffer(&gpu.limits, &gpu.info.name, label, bytes, usage)?;
    Ok(gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes,
        usage,
        mapped_at_creation: false,
    }))
}

impl Tensor {
    /// A zero-filled buffer of `len` 4-byte elements.
    pub fn zeros(gpu: &Gpu, label: &str, len: usize) -> Result<Tensor> {
        let buffer = create_buffer(gpu, label, elem_bytes(label, len)?, usage())?;
        Ok(Tensor { buffer, offset: 0, len })
    }

    /// A zero-filled small parameter block that kernels read as a `var<uniform>` (a per-step hyperparameter block
    /// such as AdamW's): the host rewrites it between submits. Uniform reads are one load per workgroup on CPU
    /// adapters, where a storage read is a per-invocation gather.
    pub fn uniform(gpu: &Gpu, label: &str, len: usize) -> Result<Tensor> {
        let bytes = elem_bytes(label, len.max(4))?.div_ceil(16) * 16;
        let buffer = create_buffer(gpu, label, bytes, usage() | wgpu::BufferUsages::UNIFORM)?;
        Ok(Tensor { buffer, offset: 0, len })
    }

    pub fn from_f32(gpu: &Gpu, label: &str, data: &[f32]) -> Result<Tensor> {
        let t = Tensor::zeros(gpu, label, data.len())?;
        t.write_f32(gpu, data);
        Ok(t)
    }

    pub fn from_u32(gpu: &Gpu, label: &str, data: &[u32]) -> Result<Tensor> {
        let t = Tensor::zeros(gpu, label, data.len())?;
        t.write_u32(gpu, data);
        Ok(t)
    }

    pub fn bytes(&self) -> u64 {
        self.len as u64 * 4
    }

    /// A sub-view of `len` elements starting `start` elements in. `start` must keep the 256-byte alignment that
    /// storage bindings need (checked).
    pub fn slice(&self, start: usize, len: usize) -> Tensor {
        assert!(start + len <= self.len, "slice {start}+{len} out of a tensor of {}", self.len);
        assert!(start.is_multiple_of(ARENA_ALIGN_ELEMS), "tensor slice start {start} is not 64-element aligned");
        Tensor { buffer: self.buffer.clone(), offset: self.offset + start as u64 * 4, len }
    }

    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: NonZeroU64::new(self.binding_bytes()),
        })
    }

    /// The size a binding of this tensor spans: its bytes rounded up to whole vec4s, so that a kernel may view it as
    /// `array<vec4<f32>>` and reach its last elements (the GEMMs' output, `shaders/matmul.wgsl`). The allocation
    /// (`elem_bytes`) and slices (starting 256 bytes apart) leave room for the rounding; the bytes past `len` are
    /// never written: kernels bound their writes by their shapes.
    pub fn binding_bytes(&self) -> u64 {
        let bytes = self.bytes().max(4).next_multiple_of(16);
        debug_assert!(self.offset + bytes <= self.buffer.size(), "binding past the end of its buffer");
        bytes
    }

    pub fn write_f32(&self, gpu: &Gpu, data: &[f32]) {
        assert!(data.len() <= self.len.max(1), "write of {} elements into a tensor of {}", data.len(), self.len);
        if !data.is_empty() {
            gpu.queue.write_buffer(&self.buffer, self.offset, bytemuck::cast_slice(data));
        }
    }

    pub fn write_u32(&self, gpu: &Gpu, data: &[u32]) {
        assert!(data.len() <= self.len.max(1), "write of {} elements into a tensor of {}", data.len(), self.len);
        if !data.is_empty() {
            gpu.queue.write_buffer(&self.buffer, self.offset, bytemuck::cast_slice(data));
        }
    }

    pub async fn read_f32(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let rb = Readback::new(gpu, &[self]);
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        rb.record(&mut enc);
        gpu.queue.submit([enc.finish()]);
        Ok(rb.fetch(gpu).await?.remove(0))
    }

    pub async fn read_u32(&self, gpu: &Gpu) -> Result<Vec<u32>> {
        Ok(self.read_f32(gpu).await?.into_iter().map(f32::to_bits).collect())
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_vec(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        pollster::block_on(self.read_f32(gpu))
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_vec_u32(&self, gpu: &Gpu) -> Result<Vec<u32>> {
        pollster::block_on(self.read_u32(gpu))
    }
}

/// A batched readback: `record` copies every tensor into one staging buffer (inside the caller's encoder, so it
/// rides along with a training step's single submit); `fetch` maps that buffer once and splits it.
/// Create it once and reuse it every step. When the tensors together exceed the adapter's `max_buffer_size`, they
/// are spread over as few staging buffers as fit (each tensor was checked against that limit when it was created),
/// so a readback never asks for a buffer the adapter cannot make.
pub struct Readback {
    /// (staging buffer, its tensors with their byte offsets in it), in the order the tensors were given.
    chunks: Vec<(wgpu::Buffer, Vec<(Tensor, u64)>)>,
}

impl Readback {
    pub fn new(gpu: &Gpu, tensors: &[&Tensor]) -> Readback {
        let max = gpu.limits.max_buffer_size;
        let mut groups: Vec<(u64, Vec<(Tensor, u64)>)> = vec![(0, Vec::new())];
        for t in tensors {
            let last = groups.last_mut().unwrap();
            if last.0 > 0 && last.0 + t.bytes() > max {
                groups.push((0, Vec::new()));
            }
            let last = groups.last_mut().unwrap();
            last.1.push(((*t).clone(), last.0));
            last.0 += t.bytes();
        }
        let chunks = groups
            .into_iter()
            .map(|(size, parts)| {
                let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback staging"),
                    size: size.max(4),
                    // MAP_READ: the CPU reads it; COPY_DST: tensors are copied into it.
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                (staging, parts)
            })
            .collect();
        Readback { chunks }
    }

    /// How many staging buffers this readback uses (1 unless the tensors exceed `max_buffer_size` together).
    pub fn staging_buffers(&self) -> usize {
        self.chunks.len()
    }

    pub fn record(&self, encoder: &mut wgpu::CommandEncoder) {
        for (staging, parts) in &self.chunks {
            for (t, off) in parts {
                if t.len > 0 {
                    encoder.copy_buffer_to_buffer(&t.buffer, t.offset, staging, *off, t.bytes());
                }
            }
        }
    }

    /// Map the staging buffer(s) (after the submit that recorded the copies) and return one Vec per tensor.
    pub async fn fetch(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        let mut receivers = Vec::with_capacity(self.chunks.len());
        for (staging, _) in &self.chunks {
            let (tx, rx) = futures_channel::oneshot::channel();
            staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
            receivers.push(rx);
        }
        gpu.wait();
        let mut out = Vec::new();
        for ((staging, parts), rx) in self.chunks.iter().zip(receivers) {
            rx.await
                .map_err(|_| Error::Gpu("readback channel closed (device lost?)".into()))?
                .map_err(|e| Error::Gpu(format!("readback map failed: {e}")))?;
            {
                let view = staging.slice(..).get_mapped_range().map_err(|e| Error::Gpu(format!("readback: {e:?}")))?;
                let all: &[f32] = bytemuck::cast_slice(&view);
                out.extend(parts.iter().map(|(t, off)| all[(*off / 4) as usize..(*off / 4) as usize + t.len].to_vec()));
            }
            staging.unmap();
        }
        Ok(out)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn fetch_blocking(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        pollster::block_on(self.fetch(gpu))
    }
}

/// Named tensors packed into one buffer, each starting on a 64-element boundary (padding is zero and stays zero
/// under AdamW because its gradient is zero).
pub struct TensorArena {
    pub all: Tensor,
    pub tensors: Vec<(String, Tensor)>,
}

impl TensorArena {
    /// Offsets for a list of (name, len): returns (offsets, total elements), the same on every device.
    pub fn layout(parts: &[(String, usize)]) -> (Vec<usize>, usize) {
        let mut offs = Vec::with_capacity(parts.len());
        let mut total = 0usize;
        for (_, len) in parts {
            offs.push(total);
            total += len.div_ceil(ARENA_ALIGN_ELEMS) * ARENA_ALIGN_ELEMS;
        }
        (offs, total)
    }

    pub fn new(gpu: &Gpu, label: &str, parts: &[(String, usize)]) -> Result<TensorArena> {
        let (offs, total) = Self::layout(parts);
        let all = Tensor::zeros(gpu, label, total)?;
        let tensors = parts.iter().zip(&offs).map(|((n, len), off)| (n.clone(), all.slice(*off, *len))).collect();
        Ok(TensorArena { all, tensors })
    }

    pub fn get(&self, name: &str) -> &Tensor {
        &self.tensors.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no tensor named {name}")).1
    }

    /// Contiguous host tensors (each part back to back, no padding) -> the arena's padded layout.
    pub fn pad(parts: &[(String, usize)], contiguous: &[f32]) -> Vec<f32> {
        let (offs, total) = Self::layout(parts);
        let mut out = vec![0.0; total];
        let mut src = 0;
        for ((_, len), off) in parts.iter().zip(offs) {
            out[off..off + len].copy_from_slice(&contiguous[src..src + len]);
            src += len;
        }
        out
    }

    /// The arena's padded layout -> contiguous host tensors.
    pub fn unpad(parts: &[(String, usize)], padded: &[f32]) -> Vec<f32> {
        let (offs, _) = Self::layout(parts);
        let mut out = Vec::with_capacity(parts.iter().map(|p| p.1).sum());
        for ((_, len), off) in parts.iter().zip(offs) {
            out.extend_from_slice(&padded[off..off + len]);
        }
        out
    }

    /// Upload contiguous host tensors (each part back to back, in `parts` order).
    pub fn upload_contiguous(&self, gpu: &Gpu, contiguous: &[f32]) {
        let parts: Vec<(String, usize)> = self.tensors.iter().map(|(n, t)| (n.clone(), t.len)).collect();
        self.all.write_f32(gpu, &Self::pad(&parts, contiguous));
    }

    /// Download as contiguous host tensors.
    pub async fn download_contiguous(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let parts: Vec<(String, usize)> = self.tensors.iter().map(|(n, t)| (n.clone(), t.len)).collect();
        Ok(Self::unpad(&parts, &self.all.read_f32(gpu).await?))
    }
}
