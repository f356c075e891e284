//! Dispatches of `shaders/toy_mlp.wgsl`: the toy MLP (one-hot prompt -> H -> H -> R) fused for its shape: forward
//! into a (P, R) log-prob table, the head's and the hidden layer's backward (with the gradient norm's partial sums
//! of squares), fc2.weight's gradient on demand, and the fused optimizer update. `model::FusedMlp` assembles them.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{Dispatch, Gpu, Tensor};

const SHADER: &str = "toy_mlp";
const SRC: &str = include_str!("../../shaders/toy_mlp.wgsl");

/// Invocations per workgroup of every toy_mlp kernel.
pub const WG: usize = 64;
/// `ToyShape::o_b1` when the first layer has no bias.
pub const NONE: u32 = u32::MAX;

/// The kernels' parameter block (`Toy` in the shader).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ToyShape {
    pub h: u32,
    pub p: u32,
    pub r: u32,
    pub b: u32,
    pub stride: u32,
    pub o_w1: u32,
    pub o_b1: u32,
    pub o_w2: u32,
    pub o_b2: u32,
    pub o_w3: u32,
    pub o_b3: u32,
    pub nblk: u32,
    /// 0 Adam(W), 1 SGD (toy_update only).
    pub kind: u32,
    pub replicas: u32,
    /// Partial sums of squares per replica (depth x nblk).
    pub np: u32,
    /// The first partial a backward dispatch writes.
    pub slot: u32,
}

impl ToyShape {
    /// Workgroups per replica of the per-hidden-unit kernels.
    pub fn blocks(h: usize) -> usize {
        h.div_ceil(WG)
    }

    /// Partial sums of squares per replica (`grad_norm_final`'s `num_partials`).
    pub fn partials(&self) -> usize {
        self.np as usize
    }

    fn n(&self) -> u32 {
        self.replicas
    }
}

/// The tuner's choice between a kernel's vec4 form `entry4` (fc2.weight read as vec4s; H a multiple of 4) and its
/// scalar form `entry`, for this shape class (H, N) on this adapter; `time(entry)` times one on scratch outputs. The
/// rule (`DPO3D_KERNELS=rule`) takes the vec4 form. On lavapipe (each load in a loop a per-lane gather) one vec4 load
/// costs about what a scalar one does: at H 256 with 20 replicas (`examples/profile_toy 20`, 2-core AMD EPYC) the
/// update took 1.9 ms instead of 2.8-3.2, the forward 0.63 instead of 0.81, the backward 0.77 instead of 0.83.
fn choose(
    gpu: &Gpu,
    s: &ToyShape,
    entry4: &'static str,
    entry: &'static str,
    time: impl FnMut(&'static str) -> Option<f64>,
) -> &'static str {
    if !s.h.is_multiple_of(4) {
        return entry;
    }
    let key = format!("{entry} {}", crate::gpu::tune::classes(&[s.h as usize, s.n() as usize]));
    gpu.tuner.choose("toy", &key, &[entry4, entry], time)
}

/// A zeroed scratch tensor for timing a candidate (None if it cannot be allocated: that candidate is not timed).
fn scratch(gpu: &Gpu, len: usize) -> Option<Tensor> {
    Tensor::zeros(gpu, "toy tune scratch", len.max(4)).ok()
}

fn time(gpu: &Gpu, d: &Dispatch) -> Option<f64> {
    crate::gpu::tune::time_dispatch(gpu, d)
}

fn dispatch(gpu: &Gpu, entry: &'static str, s: &ToyShape, bindings: &[(u32, &Tensor)], grid: [u32; 3]) -> Dispatch {
    Dispatch::new(gpu, SHADER, SRC, entry, Some(bytemuck::bytes_of(s)), bindings, grid)
}

// toy_forward / toy_hidden_forward and toy_hidden_backward / toy_mid_backward share their bodies (the variant is a
// constant the compiler folds), so each entry point's layout also lists its sibling's bindings: the unused one is
// bound to a buffer the dispatch does not otherwise use (`params` again where read-only, `spare` where writable) and
// is never accessed. Likewise every one of them binds `params` a second time as the vec4 view (binding 25) that only
// their vec4 forms read.

/// h1t, h2t (N, H) vec4 (prompt u in component u) from the parameters.
/// The kernel form (vec4 or scalar) is the tuner's choice for this adapter and shape.
pub fn forward(gpu: &Gpu, s: &ToyShape, params: &Tensor, h1t: &Tensor, h2t: &Tensor) -> Dispatch {
    let (entry4, entry) =
        if s.o_b1 == NONE { ("toy_forward4", "toy_forward") } else { ("toy_forward4_bias", "toy_forward_bias") };
    let len = (s.n() * s.h * 4) as usize;
    let build = |e, h1t: &Tensor, h2t: &Tensor| {
        dispatch(gpu, e, s, &[(1, params), (2, h1t), (3, h2t), (4, params), (25, params)], [s.nblk, s.n(), 1])
    };
    let entry = choose(gpu, s, entry4, entry, |e| time(gpu, &build(e, &scratch(gpu, len)?, &scratch(gpu, len)?)));
    build(entry, h1t, h2t)
}

/// out (N, H) vec4 = relu(layer(inp)) for a further H -> H layer (`s.o_w2`, `s.o_b2` name it); `spare`: a writable
/// buffer of at least 16 bytes that is neither `inp` nor `out` (bound, never written).
pub fn hidden_forward(
    gpu: &Gpu,
    s: &ToyShape,
    params: &Tensor,
    inp: &Tensor,
    out: &Tensor,
    spare: &Tensor,
) -> Dispatch {
    let build = |e, out: &Tensor| {
        dispatch(gpu, e, s, &[(1, params), (4, inp), (3, out), (2, spare), (25, params)], [s.nblk, s.n(), 1])
    };
    let len = (s.n() * s.h * 4) as usize;
    let entry =
        choose(gpu, s, "toy_hidden_forward4", "toy_hidden_forward", |e| time(gpu, &build(e, &scratch(gpu, len)?)));
    build(entry, out)
}

/// table (N, P, R) log-softmax and logps (N, B) of the rows (N, B, 2) u32 (prompt, response).
pub fn head(
    gpu: &Gpu,
    s: &ToyShape,
    params: &Tensor,
    h2t: &Tensor,
    rows: &Tensor,
    table: &Tensor,
    logps: &Tensor,
) -> Dispatch {
    dispatch(gpu, "toy_head", s, &[(1, params), (4, h2t), (5, rows), (6, table), (7, logps)], [s.n(), 1, 1])
}

/// From dlogps (N, B): fc3 and fc2.bias gradients, dt (N, H) vec4, and partials[g, 0..nblk].
#[allow(clippy::too_many_arguments)]
pub fn head_backward(
    gpu: &Gpu,
    s: &ToyShape,
    params: &Tensor,
    h2t: &Tensor,
    rows: &Tensor,
    table: &Tensor,
    dlogps: &Tensor,
    dt: &Tensor,
    grads: &Tensor,
    partials: &Tensor,
) -> Dispatch {
    let b = [(1, params), (4, h2t), (5, rows), (8, table), (9, dlogps), (10, dt), (11, grads), (12, partials)];
    dispatch(gpu, "toy_head_backward", s, &b, [s.nblk, s.n(), 1])
}

/// fc1 gradients and partials[g, slot..slot + nblk] (which include fc2.weight's gradient's sum of squares);
/// `spare`: a writable buffer of at least 16 bytes not otherwise bound here (bound, never written).
#[allow(clippy::too_many_arguments)]
pub fn hidden_backward(
    gpu: &Gpu,
    s: &ToyShape,
    params: &Tensor,
    h1t: &Tensor,
    dt: &Tensor,
    grads: &Tensor,
    partials: &Tensor,
    spare: &Tensor,
) -> Dispatch {
    let build = |e, grads: &Tensor, partials: &Tensor| {
        let b = [(1, params), (13, h1t), (14, dt), (11, grads), (12, partials), (10, spare), (25, params)];
        dispatch(gpu, e, s, &b, [s.nblk, s.n(), 1])
    };
    let (g, p) = ((s.stride * s.n()) as usize, (s.np * s.n()) as usize);
    let entry = choose(gpu, s, "toy_hidden_backward4", "toy_hidden_backward", |e| {
        time(gpu, &build(e, &scratch(gpu, g)?, &scratch(gpu, p)?))
    });
    build(entry, grads, partials)
}

/// Through a further H -> H layer (`s.o_w2`; its input `h`, its d loss / d pre-activation `dt`): the layer below's
/// d loss / d pre-activation into `dt_out`, its bias gradient (at `s.o_b1`), partials[g, slot..slot + nblk].
#[allow(clippy::too_many_arguments)]
pub fn mid_backward(
    gpu: &Gpu,
    s: &ToyShape,
    params: &Tensor,
    h: &Tensor,
    dt: &Tensor,
    dt_out: &Tensor,
    grads: &Tensor,
    partials: &Tensor,
) -> Dispatch {
    let build = |e, dt_out: &Tensor, grads: &Tensor, partials: &Tensor| {
        let b = [(1, params), (13, h), (14, dt), (10, dt_out), (11, grads), (12, partials), (25, params)];
        dispatch(gpu, e, s, &b, [s.nblk, s.n(), 1])
    };
    let (d, g, p) = ((s.n() * s.h * 4) as usize, (s.stride * s.n()) as usize, (s.np * s.n()) as usize);
    let entry = choose(gpu, s, "toy_mid_backward4", "toy_mid_backward", |e| {
        time(gpu, &build(e, &scratch(gpu, d)?, &scratch(gpu, g)?, &scratch(gpu, p)?))
    });
    build(entry, dt_out, grads, partials)
}

/// fc2.weight's gradient written into `grads` (H^2 per replica).
pub fn w2_grad(gpu: &Gpu, s: &ToyShape, h1t: &Tensor, dt: &Tensor, grads: &Tensor) -> Dispatch {
    dispatch(gpu, "toy_w2_grad", s, &[(13, h1t), (14, dt), (11, grads)], [s.nblk, s.h, s.n()])
}

/// One Adam(W) or SGD step over every replica's arena (`s.kind`), fc2.weight's gradient recomputed from h1t and dt.
#[allow(clippy::too_many_arguments)]
pub fn update(
    gpu: &Gpu,
    s: &ToyShape,
    params: &Tensor,
    grads: &Tensor,
    m: &Tensor,
    v: &Tensor,
    hyper: &Tensor,
    norm: &Tensor,
    h1t: &Tensor,
    dt: &Tensor,
) -> Dispatch {
    let rest = (s.stride - s.h * s.h).div_ceil(WG as u32);
    let grid = [s.nblk * s.nblk + rest, s.n(), 1];
    let build = |e: &'static str, params: &Tensor, m: &Tensor, v: &Tensor| {
        let b = if e.starts_with("toy_update4") {
            [(21, params), (22, grads), (23, m), (24, v), (19, hyper), (20, norm), (13, h1t), (14, dt)]
        } else {
            [(15, params), (16, grads), (17, m), (18, v), (19, hyper), (20, norm), (13, h1t), (14, dt)]
        };
        dispatch(gpu, e, s, &b, grid)
    };
    let (entry4, entry) =
        if s.kind == 1 { ("toy_update4_sgd", "toy_update_sgd") } else { ("toy_update4", "toy_update") };
    // Timed on scratch parameters and moments (the real ones must not move).
    let len = (s.stride * s.n()) as usize;
    let entry = choose(gpu, s, entry4, entry, |e| {
        time(gpu, &build(e, &scratch(gpu, len)?, &scratch(gpu, len)?, &scratch(gpu, len)?))
    });
    build(entry, params, m, v)
}
