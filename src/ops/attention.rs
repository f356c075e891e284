//! Dispatches of `shaders/attention.wgsl`: causal multi-head self-attention (llm.c's attention_forward /
//! attention_backward). The forward is three dispatches (scores, softmax, weighted values), the backward three
//! (datt, softmax backward, the dq/dk/dv gather); every output element has exactly one writer, so both are
//! deterministic. The backward accumulates into dinp and overwrites its datt/dpreatt scratch.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{grid_1d, Dispatch, Gpu, Tensor, WORKGROUP_1D};

const SHADER: &str = "attention";
const SRC: &str = include_str!("../../shaders/attention.wgsl");

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    b: u32,
    t: u32,
    c: u32,
    nh: u32,
    hs: u32,
    n: u32,
    scale: f32,
    _p: u32,
}

/// How an entry point's work is laid out: one invocation per element (workgroup 256), one workgroup per row, or one
/// invocation per row (workgroups of 64).
enum Grid {
    Elements(usize),
    Rows(usize),
    RowInvocations(usize),
}

/// The softmax kernels' two forms (`gpu::tune::RowForm`): the tuner times both per adapter and shape; the `_with`
/// functions take one explicitly.
pub use crate::gpu::tune::RowForm as SoftmaxForm;

/// The tuner's form for `entry` at (B NH T rows, T), timed with `build(form, scratch output)`.
fn choose_form(
    gpu: &Gpu,
    entry: &str,
    rows: usize,
    t: usize,
    out_len: usize,
    build: impl Fn(SoftmaxForm, &Tensor) -> Dispatch,
) -> SoftmaxForm {
    crate::gpu::tune::choose_row_form(gpu, "softmax", &format!("{entry} {rows}x{t}"), SoftmaxForm::Workgroup, |form| {
        let scratch = Tensor::zeros(gpu, "tune softmax", out_len).ok()?;
        crate::gpu::tune::time_dispatch(gpu, &build(form, &scratch))
    })
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    gpu: &Gpu,
    entry: &'static str,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    grid: Grid,
    bindings: &[(u32, &Tensor)],
) -> Dispatch {
    assert!(nh > 0 && c.is_multiple_of(nh), "attention: C = {c} is not a multiple of NH = {nh}");
    let hs = c / nh;
    let (n, groups) = match grid {
        Grid::Elements(n) => (n, grid_1d(n, WORKGROUP_1D)),
        Grid::Rows(n) => (n, grid_1d(n, 1)),
        Grid::RowInvocations(n) => (n, grid_1d(n, 64)),
    };
    let p = Params {
        b: b as u32,
        t: t as u32,
        c: c as u32,
        nh: nh as u32,
        hs: hs as u32,
        n: n as u32,
        scale: 1.0 / (hs as f32).sqrt(),
        _p: 0,
    };
    Dispatch::new(gpu, SHADER, SRC, entry, Some(bytemuck::bytes_of(&p)), bindings, groups)
}

/// out = softmax(q k^T / sqrt(HS), causal) v per head; also stores preatt (the scaled scores) and att (the
/// probabilities, which the backward needs). Entries of preatt/att in the future (t2 > t) are written as 0.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    gpu: &Gpu,
    out: &Tensor,    // (B, T, C)
    preatt: &Tensor, // (B, NH, T, T)
    att: &Tensor,    // (B, NH, T, T)
    inp: &Tensor,    // (B, T, 3C) = q | k | v
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Vec<Dispatch> {
    let rows = b * nh * t;
    let form = choose_form(gpu, "forward", rows, t, att.len, |form, out| softmax(gpu, form, out, preatt, b, t, c, nh));
    attention_forward_with(gpu, form, out, preatt, att, inp, b, t, c, nh)
}

#[allow(clippy::too_many_arguments)]
fn softmax(
    gpu: &Gpu,
    form: SoftmaxForm,
    att: &Tensor,
    preatt: &Tensor,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Dispatch {
    let rows = b * nh * t;
    match form {
        SoftmaxForm::Workgroup => {
            dispatch(gpu, "attention_softmax", b, t, c, nh, Grid::Rows(rows), &[(3, preatt), (4, att)])
        }
        SoftmaxForm::Invocation => {
            dispatch(gpu, "attention_softmax_rows", b, t, c, nh, Grid::RowInvocations(rows), &[(3, preatt), (4, att)])
        }
    }
}

/// `attention_forward` with the softmax in the given form.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_with(
    gpu: &Gpu,
    form: SoftmaxForm,
    out: &Tensor,    // (B, T, C)
    preatt: &Tensor, // (B, NH, T, T)
    att: &Tensor,    // (B, NH, T, T)
    inp: &Tensor,    // (B, T, 3C) = q | k | v
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Vec<Dispatch> {
    vec![
        dispatch(gpu, "attention_scores", b, t, c, nh, Grid::Elements(b * nh * t * t), &[(1, inp), (2, preatt)]),
        softmax(gpu, form, att, preatt, b, t, c, nh),
        dispatch(gpu, "attention_values", b, t, c, nh, Grid::Elements(b * t * c), &[(5, inp), (6, att), (7, out)]),
    ]
}

/// dinp += the attention's input gradient for dout, given the forward's att. dpreatt and datt are (B, NH, T, T)
/// scratch that this overwrites (they must be buffers distinct from att and each other).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    gpu: &Gpu,
    dinp: &Tensor,    // (B, T, 3C)
    dpreatt: &Tensor, // (B, NH, T, T)
    datt: &Tensor,    // (B, NH, T, T)
    dout: &Tensor,    // (B, T, C)
    inp: &Tensor,     // (B, T, 3C)
    att: &Tensor,     // (B, NH, T, T)
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Vec<Dispatch> {
    let rows = b * nh * t;
    let form = choose_form(gpu, "backward", rows, t, dpreatt.len, |form, out| {
        softmax_backward(gpu, form, out, att, datt, b, t, c, nh)
    });
    attention_backward_with(gpu, form, dinp, dpreatt, datt, dout, inp, att, b, t, c, nh)
}

#[allow(clippy::too_many_arguments)]
fn softmax_backward(
    gpu: &Gpu,
    form: SoftmaxForm,
    dpreatt: &Tensor,
    att: &Tensor,
    datt: &Tensor,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Dispatch {
    let rows = b * nh * t;
    let bindings = [(11, att), (12, datt), (13, dpreatt)];
    match form {
        SoftmaxForm::Workgroup => dispatch(gpu, "attention_softmax_backward", b, t, c, nh, Grid::Rows(rows), &bindings),
        SoftmaxForm::Invocation => {
            dispatch(gpu, "attention_softmax_backward_rows", b, t, c, nh, Grid::RowInvocations(rows), &bindings)
        }
    }
}

/// `attention_backward` with the softmax backward in the given form.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_with(
    gpu: &Gpu,
    form: SoftmaxForm,
    dinp: &Tensor,    // (B, T, 3C)
    dpreatt: &Tensor, // (B, NH, T, T)
    datt: &Tensor,    // (B, NH, T, T)
    dout: &Tensor,    // (B, T, C)
    inp: &Tensor,     // (B, T, 3C)
    att: &Tensor,     // (B, NH, T, T)
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Vec<Dispatch> {
    vec![
        dispatch(
            gpu,
            "attention_datt",
            b,
            t,
            c,
            nh,
            Grid::Elements(b * nh * t * t),
            &[(8, inp), (9, dout), (10, datt)],
        ),
        softmax_backward(gpu, form, dpreatt, att, datt, b, t, c, nh),
        dispatch(
            gpu,
            "attention_dqkv",
            b,
            t,
            c,
            nh,
            Grid::Elements(b * t * c),
            &[(14, inp), (15, att), (16, dpreatt), (17, dout), (18, dinp)],
        ),
    ]
}
