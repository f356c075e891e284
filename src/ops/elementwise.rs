//! Dispatches of `shaders/elementwise.wgsl`: GELU, ReLU, residual add (forward and backward) and fill.
//! Each function returns a ready-to-record `Dispatch`; backward ones accumulate into their d-outputs.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{grid_1d, Dispatch, Gpu, Tensor, WORKGROUP_1D};

const SHADER: &str = "elementwise";
const SRC: &str = include_str!("../../shaders/elementwise.wgsl");

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    value: f32,
    _p: [u32; 2],
}

fn dispatch(gpu: &Gpu, entry: &'static str, n: usize, value: f32, bindings: &[(u32, &Tensor)]) -> Dispatch {
    let p = Params { n: n as u32, value, _p: [0; 2] };
    Dispatch::new(gpu, SHADER, SRC, entry, Some(bytemuck::bytes_of(&p)), bindings, grid_1d(n, WORKGROUP_1D))
}

/// out = gelu(inp), n elements.
pub fn gelu_forward(gpu: &Gpu, out: &Tensor, inp: &Tensor, n: usize) -> Dispatch {
    dispatch(gpu, "gelu_forward", n, 0.0, &[(1, inp), (2, out)])
}

/// dinp += dout * gelu'(inp).
pub fn gelu_backward(gpu: &Gpu, dinp: &Tensor, inp: &Tensor, dout: &Tensor, n: usize) -> Dispatch {
    dispatch(gpu, "gelu_backward", n, 0.0, &[(3, inp), (4, dout), (5, dinp)])
}

/// out = max(inp, 0).
pub fn relu_forward(gpu: &Gpu, out: &Tensor, inp: &Tensor, n: usize) -> Dispatch {
    dispatch(gpu, "relu_forward", n, 0.0, &[(6, inp), (7, out)])
}

/// dinp += dout * (inp > 0).
pub fn relu_backward(gpu: &Gpu, dinp: &Tensor, inp: &Tensor, dout: &Tensor, n: usize) -> Dispatch {
    dispatch(gpu, "relu_backward", n, 0.0, &[(8, inp), (9, dout), (10, dinp)])
}

/// out = inp1 + inp2.
pub fn residual_forward(gpu: &Gpu, out: &Tensor, inp1: &Tensor, inp2: &Tensor, n: usize) -> Dispatch {
    dispatch(gpu, "residual_forward", n, 0.0, &[(11, inp1), (12, inp2), (13, out)])
}

/// dinp1 += dout; dinp2 += dout.
pub fn residual_backward(gpu: &Gpu, dinp1: &Tensor, dinp2: &Tensor, dout: &Tensor, n: usize) -> Dispatch {
    dispatch(gpu, "residual_backward", n, 0.0, &[(14, dout), (15, dinp1), (16, dinp2)])
}

/// out[..] = value over the whole tensor (zeroing gradients inside a step's compute pass).
pub fn fill(gpu: &Gpu, out: &Tensor, value: f32) -> Dispatch {
    dispatch(gpu, "fill", out.len, value, &[(17, out)])
}
