//! Dispatches of `shaders/elementwise.wgsl`: GELU, ReLU, residual add (forward and backward), fill and transpose.
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
    rows: u32,
    cols: u32,
}

fn dispatch(gpu: &Gpu, entry: &'static str, n: usize, value: f32, bindings: &[(u32, &Tensor)]) -> Dispatch {
    let p = Params { n: n as u32, value, rows: 0, cols: 0 };
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

/// out (N, M) = inp (M, N)^T; M and N multiples of 4 (the kernel moves 4x4 blocks as vec4s).
pub fn transpose4(gpu: &Gpu, out: &Tensor, inp: &Tensor, m: usize, n: usize) -> Dispatch {
    assert!(m.is_multiple_of(4) && n.is_multiple_of(4), "transpose4: {m}x{n} is not made of 4x4 blocks");
    assert!(inp.len >= m * n && out.len >= m * n, "transpose4: a buffer is smaller than {m}x{n}");
    let blocks = m * n / 16;
    let p = Params { n: blocks as u32, value: 0.0, rows: m as u32, cols: n as u32 };
    let bindings = [(18, inp), (19, out)];
    Dispatch::new(
        gpu,
        SHADER,
        SRC,
        "transpose4",
        Some(bytemuck::bytes_of(&p)),
        &bindings,
        grid_1d(blocks, WORKGROUP_1D),
    )
}
