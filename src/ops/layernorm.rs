//! Dispatches of `shaders/layernorm.wgsl`: LayerNorm forward (saving mean and rstd) and backward.
//! The backward is two race-free dispatches: `dinp` per row, then `dweight`/`dbias` per channel; both accumulate.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{grid_1d, Dispatch, Gpu, Tensor};

const SHADER: &str = "layernorm";
const SRC: &str = include_str!("../../shaders/layernorm.wgsl");

/// Channels per workgroup of `layernorm_backward_params` (its workgroup is 32 channels x 8 row lanes).
const PARAM_COLS: u32 = 32;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    c: u32,
    _p: [u32; 2],
}

fn params(n: usize, c: usize) -> Params {
    assert!(c > 0, "layernorm over zero channels");
    Params { n: n as u32, c: c as u32, _p: [0; 2] }
}

fn check(what: &str, t: &Tensor, len: usize) {
    assert!(t.len >= len, "layernorm: {what} has {} elements, needs {len}", t.len);
}

/// out = (inp - mean) * rstd * weight + bias per row; saves mean and rstd (eps 1e-5). Overwrites out, mean, rstd.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    gpu: &Gpu,
    out: &Tensor,    // (N, C)
    mean: &Tensor,   // (N)
    rstd: &Tensor,   // (N)
    inp: &Tensor,    // (N, C)
    weight: &Tensor, // (C)
    bias: &Tensor,   // (C)
    n: usize,
    c: usize,
) -> Dispatch {
    for (what, t, len) in [
        ("out", out, n * c),
        ("mean", mean, n),
        ("rstd", rstd, n),
        ("inp", inp, n * c),
        ("weight", weight, c),
        ("bias", bias, c),
    ] {
        check(what, t, len);
    }
    let p = params(n, c);
    Dispatch::new(
        gpu,
        SHADER,
        SRC,
        "layernorm_forward",
        Some(bytemuck::bytes_of(&p)),
        &[(1, inp), (2, weight), (3, bias), (4, out), (5, mean), (6, rstd)],
        grid_1d(n, 1),
    )
}

/// dinp += d out / d inp, dweight += sum over rows of norm * dout, dbias += sum over rows of dout
/// (llm.c's layernorm_backward), given the forward's mean and rstd. Two dispatches: rows, then channels.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    gpu: &Gpu,
    dinp: &Tensor,    // (N, C)
    dweight: &Tensor, // (C)
    dbias: &Tensor,   // (C)
    dout: &Tensor,    // (N, C)
    inp: &Tensor,     // (N, C)
    weight: &Tensor,  // (C)
    mean: &Tensor,    // (N)
    rstd: &Tensor,    // (N)
    n: usize,
    c: usize,
) -> Vec<Dispatch> {
    for (what, t, len) in [
        ("dinp", dinp, n * c),
        ("dweight", dweight, c),
        ("dbias", dbias, c),
        ("dout", dout, n * c),
        ("inp", inp, n * c),
        ("weight", weight, c),
        ("mean", mean, n),
        ("rstd", rstd, n),
    ] {
        check(what, t, len);
    }
    let p = params(n, c);
    let bytes = bytemuck::bytes_of(&p);
    vec![
        Dispatch::new(
            gpu,
            SHADER,
            SRC,
            "layernorm_backward_dinp",
            Some(bytes),
            &[(7, inp), (8, dout), (9, weight), (10, mean), (11, rstd), (12, dinp)],
            grid_1d(n, 1),
        ),
        Dispatch::new(
            gpu,
            SHADER,
            SRC,
            "layernorm_backward_params",
            Some(bytes),
            &[(13, inp), (14, dout), (15, mean), (16, rstd), (17, dweight), (18, dbias)],
            grid_1d(c, PARAM_COLS),
        ),
    ]
}
