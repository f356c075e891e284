//! Dispatches of `shaders/layernorm.wgsl`: LayerNorm forward (saving mean and rstd), alone or fused with the residual
//! add before it (`residual_layernorm_forward`: a GPT block's `res = a + b; ln(res)` in one dispatch), and backward.
//! The backward is two race-free dispatches: `dinp` per row, then `dweight`/`dbias` per channel; both accumulate.
//! The row kernels come in two forms, a workgroup per row (GPUs) or an invocation per row (CPU adapters, where a
//! workgroup's barriers dominate), and so does the channels kernel (a workgroup of 32 channels, or an invocation per
//! 4 channels); the tuner times both per adapter and shape (`gpu::tune`), the `_with` functions take the form
//! explicitly (tests compare both with the reference). The invocation forms read whole vec4s where C is a multiple of
//! 4 (on lavapipe a quarter of the per-lane loads and stores).

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

pub use crate::gpu::tune::RowForm;

fn entry(form: RowForm, base: &'static str) -> &'static str {
    match (form, base) {
        (RowForm::Workgroup, b) => b,
        (RowForm::Invocation, "layernorm_forward") => "layernorm_forward_rows",
        (RowForm::Invocation, "residual_layernorm_forward") => "residual_layernorm_forward_rows",
        (RowForm::Invocation, _) => "layernorm_backward_dinp_rows",
    }
}

/// The bindings of a dispatch in `form`: the `_rows` kernels read the (N, C) arrays, weight and bias through vec4
/// views declared 40 bindings above the workgroup kernels' scalar ones (see `shaders/layernorm.wgsl`); mean and rstd
/// keep theirs.
fn bindings<'a>(form: RowForm, list: &[(u32, &'a Tensor)]) -> Vec<(u32, &'a Tensor)> {
    let vec4_view = |b: u32| match (form, b) {
        (RowForm::Invocation, 1..=4 | 7..=9 | 12 | 19 | 20) => b + 40,
        _ => b,
    };
    list.iter().map(|&(b, t)| (vec4_view(b), t)).collect()
}

fn grid(form: RowForm, n: usize) -> [u32; 3] {
    match form {
        RowForm::Workgroup => grid_1d(n, 1),
        RowForm::Invocation => grid_1d(n, 64),
    }
}

/// The tuner's choice of form for `what` ("forward", "dinp", or "params": the channels kernel) at (n, c); `time(form)`
/// times one on scratch outputs. The rule (`DPO3D_KERNELS=rule`) keeps the workgroup forms.
fn choose(gpu: &Gpu, what: &str, n: usize, c: usize, time: impl FnMut(RowForm) -> Option<f64>) -> RowForm {
    let key = format!("{what} {}", crate::gpu::tune::classes(&[n, c]));
    crate::gpu::tune::choose_row_form(gpu, "layernorm", &key, RowForm::Workgroup, time)
}

/// out = (inp - mean) * rstd * weight + bias per row; saves mean and rstd (eps 1e-5). Overwrites out, mean, rstd.
/// The row form is the tuner's choice for this adapter and shape.
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
    let form = choose(gpu, "forward", n, c, |form| {
        let z = |what: &str, len: usize| Tensor::zeros(gpu, what, len).ok();
        let (o, m, r) = (z("tune ln out", n * c)?, z("tune ln mean", n)?, z("tune ln rstd", n)?);
        crate::gpu::tune::time_dispatch(gpu, &layernorm_forward_with(gpu, form, &o, &m, &r, inp, weight, bias, n, c))
    });
    layernorm_forward_with(gpu, form, out, mean, rstd, inp, weight, bias, n, c)
}

/// `layernorm_forward` in the given row form.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward_with(
    gpu: &Gpu,
    form: RowForm,
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
        entry(form, "layernorm_forward"),
        Some(bytemuck::bytes_of(&p)),
        &bindings(form, &[(1, inp), (2, weight), (3, bias), (4, out), (5, mean), (6, rstd)]),
        grid(form, n),
    )
}

/// res = a + b (the residual stream), then `layernorm_forward` of res, in one dispatch: the same numbers as
/// `elementwise::residual_forward` followed by `layernorm_forward` in the same row form. Overwrites res, out, mean,
/// rstd. The row form is the tuner's choice for this adapter and shape.
#[allow(clippy::too_many_arguments)]
pub fn residual_layernorm_forward(
    gpu: &Gpu,
    res: &Tensor,    // (N, C)
    out: &Tensor,    // (N, C)
    mean: &Tensor,   // (N)
    rstd: &Tensor,   // (N)
    a: &Tensor,      // (N, C)
    b: &Tensor,      // (N, C)
    weight: &Tensor, // (C)
    bias: &Tensor,   // (C)
    n: usize,
    c: usize,
) -> Dispatch {
    let form = choose(gpu, "residual forward", n, c, |form| {
        let z = |what: &str, len: usize| Tensor::zeros(gpu, what, len).ok();
        let (r, o) = (z("tune res", n * c)?, z("tune ln out", n * c)?);
        let (m, s) = (z("tune ln mean", n)?, z("tune ln rstd", n)?);
        let d = residual_layernorm_forward_with(gpu, form, &r, &o, &m, &s, a, b, weight, bias, n, c);
        crate::gpu::tune::time_dispatch(gpu, &d)
    });
    residual_layernorm_forward_with(gpu, form, res, out, mean, rstd, a, b, weight, bias, n, c)
}

/// `residual_layernorm_forward` in the given row form.
#[allow(clippy::too_many_arguments)]
pub fn residual_layernorm_forward_with(
    gpu: &Gpu,
    form: RowForm,
    res: &Tensor,    // (N, C)
    out: &Tensor,    // (N, C)
    mean: &Tensor,   // (N)
    rstd: &Tensor,   // (N)
    a: &Tensor,      // (N, C)
    b: &Tensor,      // (N, C)
    weight: &Tensor, // (C)
    bias: &Tensor,   // (C)
    n: usize,
    c: usize,
) -> Dispatch {
    for (what, t, len) in [
        ("res", res, n * c),
        ("out", out, n * c),
        ("mean", mean, n),
        ("rstd", rstd, n),
        ("a", a, n * c),
        ("b", b, n * c),
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
        entry(form, "residual_layernorm_forward"),
        Some(bytemuck::bytes_of(&p)),
        &bindings(form, &[(1, a), (19, b), (20, res), (2, weight), (3, bias), (4, out), (5, mean), (6, rstd)]),
        grid(form, n),
    )
}

/// dinp += d out / d inp, dweight += sum over rows of norm * dout, dbias += sum over rows of dout
/// (llm.c's layernorm_backward), given the forward's mean and rstd. Two dispatches: rows, then channels. The form of
/// each is the tuner's choice (for the channels: a workgroup of 32 channels x 8 row lanes with a tree in workgroup
/// memory, or, where C is a multiple of 4, an invocation per 4 channels with the same sums in registers).
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
    let scratch = || -> Option<(Tensor, Tensor, Tensor)> {
        let z = |what, len| Tensor::zeros(gpu, what, len).ok();
        Some((z("tune ln dinp", n * c)?, z("tune ln dw", c)?, z("tune ln db", c)?))
    };
    let forms = |dinp_form, params_form| {
        let (di, dw, db) = scratch()?;
        let ds = backward_dispatches(gpu, [dinp_form, params_form], &di, &dw, &db, dout, inp, weight, mean, rstd, n, c);
        Some(ds)
    };
    let dinp_form = choose(gpu, "dinp", n, c, |form| crate::gpu::tune::time_dispatch(gpu, &forms(form, form)?[0]));
    let params_form = if c.is_multiple_of(4) {
        choose(gpu, "params", n, c, |form| crate::gpu::tune::time_dispatch(gpu, &forms(form, form)?[1]))
    } else {
        RowForm::Workgroup
    };
    backward_dispatches(gpu, [dinp_form, params_form], dinp, dweight, dbias, dout, inp, weight, mean, rstd, n, c)
}

/// `layernorm_backward` with both kernels in the given form (`Invocation` for the channels kernel: an invocation
/// per 4 channels, where C is a multiple of 4; otherwise its workgroup form).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward_with(
    gpu: &Gpu,
    form: RowForm,
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
    backward_dispatches(gpu, [form, form], dinp, dweight, dbias, dout, inp, weight, mean, rstd, n, c)
}

/// The two backward dispatches, the rows kernel in `forms[0]` and the channels kernel in `forms[1]`.
#[allow(clippy::too_many_arguments)]
fn backward_dispatches(
    gpu: &Gpu,
    forms: [RowForm; 2],
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
    let [form, params_form] = forms;
    let params = if params_form == RowForm::Invocation && c.is_multiple_of(4) {
        Dispatch::new(
            gpu,
            SHADER,
            SRC,
            "layernorm_backward_params_cols4",
            Some(bytes),
            &[(55, inp), (56, dout), (15, mean), (16, rstd), (57, dweight), (58, dbias)],
            grid_1d(c / 4, 8),
        )
    } else {
        Dispatch::new(
            gpu,
            SHADER,
            SRC,
            "layernorm_backward_params",
            Some(bytes),
            &[(13, inp), (14, dout), (15, mean), (16, rstd), (17, dweight), (18, dbias)],
            grid_1d(c, PARAM_COLS),
        )
    };
    vec![
        Dispatch::new(
            gpu,
            SHADER,
            SRC,
            entry(form, "layernorm_backward_dinp"),
            Some(bytes),
            &bindings(form, &[(7, inp), (8, dout), (9, weight), (10, mean), (11, rstd), (12, dinp)]),
            grid(form, n),
        ),
        params,
    ]
}
