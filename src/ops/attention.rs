//! Dispatches of `shaders/attention.wgsl`: causal multi-head self-attention (llm.c's attention_forward /
//! attention_backward). Separately, the forward is three dispatches (scores, softmax, weighted values) and the backward
//! three (datt, softmax backward, the dq/dk/dv gather). Fused (T <= 2048), the forward is one dispatch and the backward
//! two: a row's scores, or its datt, stay in workgroup memory instead of the (B, NH, T, T) scratch. Or the products
//! run as batched GEMMs over the (sequence, head) pairs (`ops::matmul`, each with its own tuned kernel): the forward
//! three dispatches, the backward five (datt, the softmax backward, dq, dk, dv). The tuner picks per adapter and
//! shape. Every output element has exactly one writer, so all forms are deterministic. The backward accumulates into
//! dinp and overwrites its dpreatt scratch (and, separately, datt). `attention_decode` is one generation step with a
//! KV cache (one new position per row, `model::Decoder`).

use bytemuck::{Pod, Zeroable};

use crate::gpu::{grid_1d, Dispatch, Gpu, Tensor, WORKGROUP_1D};
use crate::ops::matmul::{self, GemmDims, MatrixLayout, CAUSAL_A_LOWER, CAUSAL_A_UPPER, CAUSAL_C};

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
    tp: u32,
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

/// The attention's kernel choices: the softmax's form, whether the products (scores, weighted values, datt) use
/// the `_x4` kernels (4 neighbouring outputs per invocation: fewer loads per multiply-add, which CPU adapters need;
/// the values' `_x4` needs HS % 4 == 0 and falls back otherwise), and whether the fused kernels run (one dispatch per
/// row for scores + softmax + values, and for datt + softmax backward; vec4 loads when `x4` and HS % 4 == 0; T at
/// most `FUSED_MAX_T`). Fused, the forward leaves `preatt` and the backward `datt` untouched, and `softmax` is unused.
/// `gemm` (not with `fused`; `x4` then unused) computes the products as batched GEMMs over the B*NH heads
/// (`ops::matmul`, whose kernel the tuner picks per shape like any product's): scores and datt with T columns,
/// the weighted values and dq/dk/dv (one GEMM each) with HS columns, skipping the zero triangle where the kernel can.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionKernels {
    pub softmax: SoftmaxForm,
    pub x4: bool,
    pub fused: bool,
    pub gemm: bool,
}

/// Longest T the fused kernels take: a row's scores live in workgroup memory (8 KiB, the decode step's array).
pub const FUSED_MAX_T: usize = DECODE_MAX_T;

/// The tuner's key for a whole pass ("forward" / "backward") at this shape: BNHxTxHS in classes, and whether the
/// products are x4.
fn pass_key(pass: &str, k: AttentionKernels, b: usize, t: usize, c: usize, nh: usize) -> String {
    format!("{pass} {}{}", head_classes(b, t, c, nh), if k.x4 { " x4" } else { "" })
}

/// The shape part of the attention's tuner keys: (B NH, T, HS) in classes (`crate::gpu::tune::class`).
fn head_classes(b: usize, t: usize, c: usize, nh: usize) -> String {
    crate::gpu::tune::classes(&[b * nh, t, c / nh])
}

/// Whether the tuner picks the fused form of `pass` ("forward" / "backward") at this shape, given the separate form
/// `separate` (its own choices made), timed by `time(kernels)` (seconds, summed over the pass's dispatches).
#[allow(clippy::too_many_arguments)]
fn choose_fused(
    gpu: &Gpu,
    pass: &str,
    separate: AttentionKernels,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    time: impl Fn(AttentionKernels) -> Option<f64>,
) -> bool {
    if t > FUSED_MAX_T {
        return false;
    }
    let key = pass_key(pass, separate, b, t, c, nh);
    // "separate" first: the rule's (and the web's) choice, as before the fused kernels existed; on lavapipe the
    // fused forward measured 2-4.6x slower (most likely its barriers), on GPUs they save dispatches and scratch traffic.
    let name = gpu.tuner.choose("attention", &key, &["separate", "fused"], |k| {
        time(AttentionKernels { fused: k == "fused", ..separate })
    });
    name == "fused"
}

/// Whether the tuner picks the GEMM products (`AttentionKernels::gemm`) over `chosen` (the separate or fused form
/// already picked) for `pass`, timed over the whole pass. The caller builds the GEMM form's dispatches once before
/// (which makes the products' kernel choices): the tuner measures one choice at a time, so a kernel choice made
/// inside this one's timing would wait for it forever.
#[allow(clippy::too_many_arguments)]
fn choose_gemm(
    gpu: &Gpu,
    pass: &str,
    chosen: AttentionKernels,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    time: impl Fn(AttentionKernels) -> Option<f64>,
) -> bool {
    let form = if chosen.fused { "fused" } else { "separate" };
    // Family "attention" (so DPO3D_KERNELS=attention=gemm forces it), a key of its own beside choose_fused's.
    let key = format!("gemm {}", pass_key(pass, chosen, b, t, c, nh));
    let name = gpu.tuner.choose("attention", &key, &[form, "gemm"], |k| {
        time(AttentionKernels { gemm: k == "gemm", fused: chosen.fused && k != "gemm", ..chosen })
    });
    name == "gemm"
}

/// The attention's products as batched GEMMs over the (sequence, head) pairs: B groups of NH batches (head h of
/// sequence b starts at b * T * 3C + h * HS in inp, which no single batch stride reaches).
struct HeadGemms {
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
}

impl HeadGemms {
    fn hs(&self) -> usize {
        self.c / self.nh
    }

    /// q (slot 0), k (1) or v (2) of each head as a (T, HS) matrix inside inp (B, T, 3C).
    fn qkv(&self, slot: usize) -> MatrixLayout {
        let c3 = 3 * self.c;
        MatrixLayout::strided(c3, 1, self.t * c3).grouped(self.hs()).at(slot * self.c)
    }

    /// The same as a (HS, T) matrix: k^T or v^T.
    fn qkv_t(&self, slot: usize) -> MatrixLayout {
        let l = self.qkv(slot);
        MatrixLayout { row: l.col, col: l.row, ..l }
    }

    /// A head's (T, HS) slice of a (B, T, C) activation (out, dout).
    fn heads(&self) -> MatrixLayout {
        MatrixLayout::strided(self.c, 1, self.t * self.c).grouped(self.hs())
    }

    /// A head's (T, T) matrix of a (B, NH, T, T) tensor (preatt, att, datt, dpreatt).
    fn square(&self) -> MatrixLayout {
        let tt = self.t * self.t;
        MatrixLayout::strided(self.t, 1, self.nh * tt).grouped(tt)
    }

    /// Its transpose.
    fn square_t(&self) -> MatrixLayout {
        let l = self.square();
        MatrixLayout { row: l.col, col: l.row, ..l }
    }

    /// An (M, N, K) product over every head, alpha `scale`, beta `beta`.
    #[allow(clippy::too_many_arguments)]
    fn dims(
        &self,
        n: usize,
        k: usize,
        a: MatrixLayout,
        bm: MatrixLayout,
        cm: MatrixLayout,
        scale: f32,
        beta: f32,
    ) -> GemmDims {
        GemmDims::new(self.t, n, k)
            .batched(self.b * self.nh)
            .grouped(self.nh)
            .with_a(a)
            .with_b(bm)
            .with_c(cm)
            .scaled(scale, beta)
    }

    fn scale(&self) -> f32 {
        1.0 / (self.hs() as f32).sqrt()
    }

    /// preatt = q k^T * scale (0 above the diagonal).
    fn scores(&self, gpu: &Gpu, preatt: &Tensor, inp: &Tensor) -> Dispatch {
        let d = self.dims(self.t, self.hs(), self.qkv(0), self.qkv_t(1), self.square(), self.scale(), 0.0);
        matmul::gemm(gpu, preatt, inp, inp, d.causal(CAUSAL_C))
    }

    /// out = att v.
    fn values(&self, gpu: &Gpu, out: &Tensor, att: &Tensor, inp: &Tensor) -> Dispatch {
        let d = self.dims(self.hs(), self.t, self.square(), self.qkv(2), self.heads(), 1.0, 0.0);
        matmul::gemm(gpu, out, att, inp, d.causal(CAUSAL_A_LOWER))
    }

    /// datt = dout v^T (0 above the diagonal).
    fn datt(&self, gpu: &Gpu, datt: &Tensor, dout: &Tensor, inp: &Tensor) -> Dispatch {
        let d = self.dims(self.t, self.hs(), self.heads(), self.qkv_t(2), self.square(), 1.0, 0.0);
        matmul::gemm(gpu, datt, dout, inp, d.causal(CAUSAL_C))
    }

    /// dq += dpreatt k * scale; dk += dpreatt^T q * scale; dv += att^T dout.
    fn dqkv(
        &self,
        gpu: &Gpu,
        dinp: &Tensor,
        dpreatt: &Tensor,
        att: &Tensor,
        dout: &Tensor,
        inp: &Tensor,
    ) -> [Dispatch; 3] {
        let (hs, t, s) = (self.hs(), self.t, self.scale());
        let slot = |i: usize| self.qkv(i);
        let dq = self.dims(hs, t, self.square(), slot(1), slot(0), s, 1.0).causal(CAUSAL_A_LOWER);
        let dk = self.dims(hs, t, self.square_t(), slot(0), slot(1), s, 1.0).causal(CAUSAL_A_UPPER);
        let dv = self.dims(hs, t, self.square_t(), self.heads(), slot(2), 1.0, 1.0).causal(CAUSAL_A_UPPER);
        [
            matmul::gemm(gpu, dinp, dpreatt, inp, dq),
            matmul::gemm(gpu, dinp, dpreatt, inp, dk),
            matmul::gemm(gpu, dinp, att, dout, dv),
        ]
    }
}

/// Sum of `time_dispatch` over `dispatches`.
fn time_all(gpu: &Gpu, dispatches: &[Dispatch]) -> Option<f64> {
    dispatches.iter().map(|d| crate::gpu::tune::time_dispatch(gpu, d)).sum()
}

/// Whether the tuner picks the `_x4` products at this shape, timed on the forward's scores and values.
#[allow(clippy::too_many_arguments)]
fn choose_x4(gpu: &Gpu, inp: &Tensor, att: &Tensor, b: usize, t: usize, c: usize, nh: usize) -> bool {
    let key = format!("products {}", head_classes(b, t, c, nh));
    let name = gpu.tuner.choose("attention", &key, &["elementwise", "x4"], |k| {
        let x4 = k == "x4";
        let (pre, out) =
            (Tensor::zeros(gpu, "tune preatt", b * nh * t * t).ok()?, Tensor::zeros(gpu, "tune out", b * t * c).ok()?);
        let time = |d: &Dispatch| crate::gpu::tune::time_dispatch(gpu, d);
        Some(time(&scores(gpu, x4, &pre, inp, b, t, c, nh))? + time(&values(gpu, x4, &out, inp, att, b, t, c, nh))?)
    });
    name == "x4"
}

#[allow(clippy::too_many_arguments)]
fn scores(gpu: &Gpu, x4: bool, preatt: &Tensor, inp: &Tensor, b: usize, t: usize, c: usize, nh: usize) -> Dispatch {
    let n = b * nh * t * t.div_ceil(4);
    if x4 && (c / nh).is_multiple_of(4) {
        dispatch(gpu, "attention_scores_x4v", b, t, c, nh, Grid::Elements(n), &[(42, inp), (2, preatt)])
    } else if x4 {
        dispatch(gpu, "attention_scores_x4", b, t, c, nh, Grid::Elements(n), &[(1, inp), (2, preatt)])
    } else {
        dispatch(gpu, "attention_scores", b, t, c, nh, Grid::Elements(b * nh * t * t), &[(1, inp), (2, preatt)])
    }
}

#[allow(clippy::too_many_arguments)]
fn values(
    gpu: &Gpu,
    x4: bool,
    out: &Tensor,
    inp: &Tensor,
    att: &Tensor,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Dispatch {
    if x4 && (c / nh).is_multiple_of(4) {
        let bindings = [(40, inp), (6, att), (41, out)];
        dispatch(gpu, "attention_values_x4", b, t, c, nh, Grid::Elements(b * t * c / 4), &bindings)
    } else {
        dispatch(gpu, "attention_values", b, t, c, nh, Grid::Elements(b * t * c), &[(5, inp), (6, att), (7, out)])
    }
}

/// The tuner's form for `entry` at (B NH T rows, T), timed with `build(form, scratch output)`.
fn choose_form(
    gpu: &Gpu,
    entry: &str,
    rows: usize,
    t: usize,
    out_len: usize,
    build: impl Fn(SoftmaxForm, &Tensor) -> Dispatch,
) -> SoftmaxForm {
    let key = format!("{entry} {}", crate::gpu::tune::classes(&[rows, t]));
    crate::gpu::tune::choose_row_form(gpu, "softmax", &key, SoftmaxForm::Workgroup, |form| {
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
        tp: 0,
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
    let x4 = choose_x4(gpu, inp, att, b, t, c, nh);
    let separate = AttentionKernels { softmax: form, x4, fused: false, gemm: false };
    // scratch outputs: timing must not write into the caller's tensors
    let time = |k: AttentionKernels| {
        let z = |what: &str, n: usize| Tensor::zeros(gpu, what, n).ok();
        let (o, pre, a) = (z("tune out", b * t * c)?, z("tune preatt", att.len)?, z("tune att", att.len)?);
        time_all(gpu, &attention_forward_with(gpu, k, &o, &pre, &a, inp, b, t, c, nh))
    };
    let fused = choose_fused(gpu, "forward", separate, b, t, c, nh, time);
    let chosen = AttentionKernels { fused, ..separate };
    // The products' own kernel choices first: the tuner measures one thing at a time (see `choose_gemm`).
    let _ =
        attention_forward_with(gpu, AttentionKernels { gemm: true, ..separate }, out, preatt, att, inp, b, t, c, nh);
    let gemm = choose_gemm(gpu, "forward", chosen, b, t, c, nh, time);
    let k = AttentionKernels { gemm, fused: fused && !gemm, ..chosen };
    attention_forward_with(gpu, k, out, preatt, att, inp, b, t, c, nh)
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
            // the vec4 views of preatt and att
            dispatch(gpu, "attention_softmax_rows", b, t, c, nh, Grid::RowInvocations(rows), &[(51, preatt), (52, att)])
        }
    }
}

/// `attention_forward` with the given kernels.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_with(
    gpu: &Gpu,
    k: AttentionKernels,
    out: &Tensor,    // (B, T, C)
    preatt: &Tensor, // (B, NH, T, T)
    att: &Tensor,    // (B, NH, T, T)
    inp: &Tensor,    // (B, T, 3C) = q | k | v
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Vec<Dispatch> {
    assert!(!(k.fused && k.gemm), "attention_forward: the GEMM products and the fused kernel are two forms, not one");
    if k.fused {
        assert!(t <= FUSED_MAX_T, "attention_forward: the fused kernel takes T <= {FUSED_MAX_T}, not {t}");
        let rows = Grid::Rows(b * nh * t);
        return vec![if k.x4 && (c / nh).is_multiple_of(4) {
            dispatch(gpu, "attention_fused_x4", b, t, c, nh, rows, &[(29, inp), (27, att), (30, out)])
        } else {
            dispatch(gpu, "attention_fused", b, t, c, nh, rows, &[(26, inp), (27, att), (28, out)])
        }];
    }
    if k.gemm {
        let g = HeadGemms { b, t, c, nh };
        return vec![
            g.scores(gpu, preatt, inp),
            softmax(gpu, k.softmax, att, preatt, b, t, c, nh),
            g.values(gpu, out, att, inp),
        ];
    }
    vec![
        scores(gpu, k.x4, preatt, inp, b, t, c, nh),
        softmax(gpu, k.softmax, att, preatt, b, t, c, nh),
        values(gpu, k.x4, out, inp, att, b, t, c, nh),
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
    let x4 = choose_x4(gpu, inp, att, b, t, c, nh);
    let separate = AttentionKernels { softmax: form, x4, fused: false, gemm: false };
    let time = |k: AttentionKernels| {
        let z = |what: &str, n: usize| Tensor::zeros(gpu, what, n).ok();
        let (di, dp, da) = (z("tune dinp", b * t * 3 * c)?, z("tune dpreatt", att.len)?, z("tune datt", att.len)?);
        time_all(gpu, &attention_backward_with(gpu, k, &di, &dp, &da, dout, inp, att, b, t, c, nh))
    };
    let fused = choose_fused(gpu, "backward", separate, b, t, c, nh, time);
    let chosen = AttentionKernels { fused, ..separate };
    let gemm_form = AttentionKernels { gemm: true, ..separate };
    let _ = attention_backward_with(gpu, gemm_form, dinp, dpreatt, datt, dout, inp, att, b, t, c, nh);
    let gemm = choose_gemm(gpu, "backward", chosen, b, t, c, nh, time);
    let k = AttentionKernels { gemm, fused: fused && !gemm, ..chosen };
    attention_backward_with(gpu, k, dinp, dpreatt, datt, dout, inp, att, b, t, c, nh)
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
            let bindings = [(53, att), (54, datt), (55, dpreatt)]; // the vec4 views
            dispatch(gpu, "attention_softmax_backward_rows", b, t, c, nh, Grid::RowInvocations(rows), &bindings)
        }
    }
}

/// `attention_backward` with the given kernels (`x4`: datt and dq/dk/dv by their `_x4` kernels).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_with(
    gpu: &Gpu,
    k: AttentionKernels,
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
    if k.gemm {
        assert!(!k.fused, "attention_backward: the GEMM products and the fused kernels are two forms, not one");
        let g = HeadGemms { b, t, c, nh };
        let [dq, dk, dv] = g.dqkv(gpu, dinp, dpreatt, att, dout, inp);
        return vec![
            g.datt(gpu, datt, dout, inp),
            softmax_backward(gpu, k.softmax, dpreatt, att, datt, b, t, c, nh),
            dq,
            dk,
            dv,
        ];
    }
    let datt_bindings = [(8, inp), (9, dout), (10, datt)];
    let dqkv_bindings = [(14, inp), (15, att), (16, dpreatt), (17, dout), (18, dinp)];
    let x4_heads = k.x4 && (c / nh).is_multiple_of(4);
    let dqkv = if x4_heads {
        let bindings = [(37, inp), (15, att), (16, dpreatt), (38, dout), (39, dinp)];
        dispatch(gpu, "attention_dqkv_x4", b, t, c, nh, Grid::Elements(b * t * c / 4), &bindings)
    } else {
        dispatch(gpu, "attention_dqkv", b, t, c, nh, Grid::Elements(b * t * c), &dqkv_bindings)
    };
    if k.fused {
        assert!(t <= FUSED_MAX_T, "attention_backward: the fused kernel takes T <= {FUSED_MAX_T}, not {t}");
        let rows = Grid::Rows(b * nh * t);
        let fused = if x4_heads {
            let bindings = [(35, inp), (36, dout), (33, att), (34, dpreatt)];
            dispatch(gpu, "attention_softmax_backward_fused_x4", b, t, c, nh, rows, &bindings)
        } else {
            let bindings = [(31, inp), (32, dout), (33, att), (34, dpreatt)];
            dispatch(gpu, "attention_softmax_backward_fused", b, t, c, nh, rows, &bindings)
        };
        return vec![fused, dqkv];
    }
    let datt_dispatch = if x4_heads {
        let n = b * nh * t * t.div_ceil(4);
        dispatch(gpu, "attention_datt_x4v", b, t, c, nh, Grid::Elements(n), &[(43, inp), (44, dout), (10, datt)])
    } else if k.x4 {
        let n = b * nh * t * t.div_ceil(4);
        dispatch(gpu, "attention_datt_x4", b, t, c, nh, Grid::Elements(n), &datt_bindings)
    } else {
        dispatch(gpu, "attention_datt", b, t, c, nh, Grid::Elements(b * nh * t * t), &datt_bindings)
    };
    vec![datt_dispatch, softmax_backward(gpu, k.softmax, dpreatt, att, datt, b, t, c, nh), dqkv]
}

/// Longest T that [`attention_decode`] takes (its workgroup holds one score per position: 8 KiB).
pub const DECODE_MAX_T: usize = 2048;

/// One generation step of causal attention with a KV cache: row b's output at its newest position `pos[b]` from this
/// step's `qkv` (B, 3C) (computed from that one token) and the keys and values of its earlier positions in `cache`
/// (B, T, 3C), which is the qkv activation of a forward pass over the same rows; the new key and value are then written
/// into the cache at `pos[b]`. Equal to [`attention_forward`]'s output at (b, pos[b]) to rounding. One dispatch; its
/// form (scalar or vec4 loads, the latter when HS % 4 == 0) is the tuner's choice per adapter and shape.
#[allow(clippy::too_many_arguments)]
pub fn attention_decode(
    gpu: &Gpu,
    out: &Tensor,   // (B, C)
    cache: &Tensor, // (B, T, 3C), read and written
    qkv: &Tensor,   // (B, 3C)
    pos: &Tensor,   // (B) u32, each < T
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Dispatch {
    let form = if (c / nh.max(1)).is_multiple_of(4) {
        let key = format!("decode {}", head_classes(b, t, c, nh));
        let all: &[&str] =
            if (c / nh).is_multiple_of(16) { &["scalar", "x4", "rows", "rows16"] } else { &["scalar", "x4", "rows"] };
        let name = gpu.tuner.choose("attention", &key, all, |k| {
            // scratch copies: timing must not write into the caller's cache
            let z = |what: &str, n: usize| Tensor::zeros(gpu, what, n).ok();
            let (o, kv, q) =
                (z("tune decode out", b * c)?, z("tune decode cache", b * t * 3 * c)?, z("tune qkv", b * 3 * c)?);
            let p = Tensor::from_u32(gpu, "tune decode pos", &vec![(t - 1) as u32; b]).ok()?;
            let form = DecodeForm::from_name(k);
            crate::gpu::tune::time_dispatch(gpu, &attention_decode_with(gpu, form, &o, &kv, &q, &p, b, t, c, nh))
        });
        DecodeForm::from_name(name)
    } else {
        DecodeForm::Scalar
    };
    attention_decode_with(gpu, form, out, cache, qkv, pos, b, t, c, nh)
}

/// The forms of [`attention_decode`]: a workgroup of 64 per (row, head) with scalar or vec4 loads, or one invocation
/// per (row, head) without barriers and with vec4 loads (CPU adapters), the head taken a vec4 or 16 channels at a
/// time. The vec4 forms need HS % 4 == 0, `Rows16` HS % 16 == 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeForm {
    Scalar,
    X4,
    Rows,
    Rows16,
}

impl DecodeForm {
    pub const ALL: [DecodeForm; 4] = [DecodeForm::Scalar, DecodeForm::X4, DecodeForm::Rows, DecodeForm::Rows16];

    fn from_name(name: &str) -> DecodeForm {
        match name {
            "x4" => DecodeForm::X4,
            "rows" => DecodeForm::Rows,
            "rows16" => DecodeForm::Rows16,
            _ => DecodeForm::Scalar,
        }
    }

    /// Whether this form takes head size `hs`.
    pub fn supports(self, hs: usize) -> bool {
        match self {
            DecodeForm::Scalar => true,
            DecodeForm::X4 | DecodeForm::Rows => hs.is_multiple_of(4),
            DecodeForm::Rows16 => hs.is_multiple_of(16),
        }
    }
}

/// [`attention_decode`] in a given form.
#[allow(clippy::too_many_arguments)]
pub fn attention_decode_with(
    gpu: &Gpu,
    form: DecodeForm,
    out: &Tensor,
    cache: &Tensor,
    qkv: &Tensor,
    pos: &Tensor,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Dispatch {
    assert!(t <= DECODE_MAX_T, "attention_decode: T = {t} is over {DECODE_MAX_T}");
    assert!(
        out.len >= b * c && cache.len >= b * t * 3 * c && qkv.len >= b * 3 * c && pos.len >= b,
        "attention_decode: a buffer is smaller than its shape"
    );
    assert!(form.supports(c / nh), "attention_decode {form:?}: head size {} does not suit it", c / nh);
    match form {
        DecodeForm::Scalar => {
            let bindings = [(19, qkv), (20, cache), (21, out), (22, pos)];
            dispatch(gpu, "attention_decode", b, t, c, nh, Grid::Rows(b * nh), &bindings)
        }
        DecodeForm::X4 => {
            let bindings = [(23, qkv), (24, cache), (25, out), (22, pos)];
            dispatch(gpu, "attention_decode_x4", b, t, c, nh, Grid::Rows(b * nh), &bindings)
        }
        DecodeForm::Rows | DecodeForm::Rows16 => {
            // The scores' scratch row per (b, h), made once with the plan (the dispatch's bind group keeps it).
            let scores = Tensor::zeros(gpu, "decode scores", b * nh * t)
                .unwrap_or_else(|e| panic!("attention_decode: the scores' scratch for B {b} NH {nh} T {t}: {e}"));
            let bindings = [(23, qkv), (24, cache), (25, out), (22, pos), (48, &scores)];
            let entry = if form == DecodeForm::Rows { "attention_decode_rows" } else { "attention_decode_rows16" };
            dispatch(gpu, entry, b, t, c, nh, Grid::RowInvocations(b * nh), &bindings)
        }
    }
}

/// Fills the first `tp` positions of a KV cache (B, T, 3C) from the qkv activation of a prefill over (B, T_p, 3C),
/// T_p = `tp` <= T: the prefill computes only the prompts' positions, the cache also holds the generated ones.
pub fn attention_cache_fill(
    gpu: &Gpu,
    cache: &Tensor,
    qkv: &Tensor,
    b: usize,
    t: usize,
    tp: usize,
    c: usize,
) -> Dispatch {
    assert!(tp <= t, "attention_cache_fill: T_p = {tp} is over the cache's T = {t}");
    assert!(
        qkv.len >= b * tp * 3 * c && cache.len >= b * t * 3 * c,
        "attention_cache_fill: a buffer is smaller than its shape"
    );
    let n = b * tp * 3 * c;
    let p =
        Params { b: b as u32, t: t as u32, c: c as u32, nh: 1, hs: c as u32, n: n as u32, scale: 1.0, tp: tp as u32 };
    let groups = grid_1d(n, WORKGROUP_1D);
    Dispatch::new(
        gpu,
        SHADER,
        SRC,
        "attention_cache_fill",
        Some(bytemuck::bytes_of(&p)),
        &[(49, qkv), (50, cache)],
        groups,
    )
}
