//! Dispatches of `shaders/encoder.wgsl`: the token + position embedding (forward), its race-free backward (a gather:
//! each dwte/dwpe element is owned by one invocation), and the one-position input of a KV-cached generation step
//! (`encoder_decode`). `tokens` is a Tensor of u32.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{grid_1d, Dispatch, Gpu, Tensor, WORKGROUP_1D};

const SHADER: &str = "encoder";
const SRC: &str = include_str!("../../shaders/encoder.wgsl");

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    b: u32,
    t: u32,
    c: u32,
    v: u32,
    /// Generation step (encoder_decode only).
    step: u32,
    _p: [u32; 3],
}

fn check(what: &str, t: &Tensor, len: usize) {
    assert!(t.len >= len, "encoder: {what} has {} elements, needs {len}", t.len);
}

/// out[b, t, :] = wte[tokens[b, t], :] + wpe[t, :]. Overwrites out. Tokens must be < V.
#[allow(clippy::too_many_arguments)]
pub fn encoder_forward(
    gpu: &Gpu,
    out: &Tensor,    // (B, T, C)
    tokens: &Tensor, // (B, T) u32
    wte: &Tensor,    // (V, C)
    wpe: &Tensor,    // (maxT, C), maxT >= T
    b: usize,
    t: usize,
    c: usize,
) -> Dispatch {
    for (what, x, len) in [("out", out, b * t * c), ("tokens", tokens, b * t), ("wpe", wpe, t * c)] {
        check(what, x, len);
    }
    let p = Params { b: b as u32, t: t as u32, c: c as u32, v: 0, step: 0, _p: [0; 3] }; // v: backward only
    Dispatch::new(
        gpu,
        SHADER,
        SRC,
        "encoder_forward",
        Some(bytemuck::bytes_of(&p)),
        &[(1, tokens), (2, wte), (3, wpe), (4, out)],
        grid_1d(b * t * c, WORKGROUP_1D),
    )
}

/// The input of generation step `step` with a KV cache: row b's newest token is at position
/// `pos_b = min(lens[b] - 1 + step, T - 1)`; out[b, :] = wte[tokens[b, pos_b], :] + wpe[pos_b, :], and pos[b] = pos_b.
#[allow(clippy::too_many_arguments)]
pub fn encoder_decode(
    gpu: &Gpu,
    out: &Tensor,    // (B, C)
    pos: &Tensor,    // (B) u32, written
    tokens: &Tensor, // (B, T) u32
    lens: &Tensor,   // (B) u32 prompt lengths, >= 1
    wte: &Tensor,    // (V, C)
    wpe: &Tensor,    // (maxT, C), maxT >= T
    b: usize,
    t: usize,
    c: usize,
    step: usize,
) -> Dispatch {
    for (what, x, len) in
        [("out", out, b * c), ("pos", pos, b), ("tokens", tokens, b * t), ("lens", lens, b), ("wpe", wpe, t * c)]
    {
        check(what, x, len);
    }
    let p = Params { b: b as u32, t: t as u32, c: c as u32, v: 0, step: step as u32, _p: [0; 3] };
    Dispatch::new(
        gpu,
        SHADER,
        SRC,
        "encoder_decode",
        Some(bytemuck::bytes_of(&p)),
        &[(1, tokens), (2, wte), (3, wpe), (4, out), (10, lens), (11, pos)],
        grid_1d(b * c, WORKGROUP_1D),
    )
}

pub use crate::gpu::tune::RowForm;

/// dwpe[t, :] += sum over b of dout[b, t, :]; dwte[v, :] += sum over positions with token v of dout[b, t, :].
/// Two dispatches. The dwte pass reads all B*T tokens per vocabulary row, so its cost grows as V * B * T (see
/// `shaders/encoder.wgsl`); its form (a workgroup or an invocation per row) is the tuner's choice.
#[allow(clippy::too_many_arguments)]
pub fn encoder_backward(
    gpu: &Gpu,
    dwte: &Tensor,   // (V, C)
    dwpe: &Tensor,   // (maxT, C); rows t < T accumulate
    dout: &Tensor,   // (B, T, C)
    tokens: &Tensor, // (B, T) u32
    b: usize,
    t: usize,
    c: usize,
    v: usize,
) -> Vec<Dispatch> {
    let key = format!("wte {}", crate::gpu::tune::classes(&[b * t, v, c]));
    let form = crate::gpu::tune::choose_row_form(gpu, "encoder", &key, RowForm::Workgroup, |form| {
        let (w, pe) = (Tensor::zeros(gpu, "tune dwte", v * c).ok()?, Tensor::zeros(gpu, "tune dwpe", t * c).ok()?);
        crate::gpu::tune::time_dispatch(gpu, &encoder_backward_with(gpu, form, &w, &pe, dout, tokens, b, t, c, v)[1])
    });
    encoder_backward_with(gpu, form, dwte, dwpe, dout, tokens, b, t, c, v)
}

/// `encoder_backward` with the dwte pass in the given form.
#[allow(clippy::too_many_arguments)]
pub fn encoder_backward_with(
    gpu: &Gpu,
    form: RowForm,
    dwte: &Tensor,   // (V, C)
    dwpe: &Tensor,   // (maxT, C); rows t < T accumulate
    dout: &Tensor,   // (B, T, C)
    tokens: &Tensor, // (B, T) u32
    b: usize,
    t: usize,
    c: usize,
    v: usize,
) -> Vec<Dispatch> {
    for (what, x, len) in
        [("dwte", dwte, v * c), ("dwpe", dwpe, t * c), ("dout", dout, b * t * c), ("tokens", tokens, b * t)]
    {
        check(what, x, len);
    }
    let p = Params { b: b as u32, t: t as u32, c: c as u32, v: v as u32, step: 0, _p: [0; 3] };
    let bytes = bytemuck::bytes_of(&p);
    vec![
        Dispatch::new(
            gpu,
            SHADER,
            SRC,
            "encoder_backward_wpe",
            Some(bytes),
            &[(5, dout), (6, dwpe)],
            grid_1d(t * c, WORKGROUP_1D),
        ),
        Dispatch::new(
            gpu,
            SHADER,
            SRC,
            if form == RowForm::Workgroup { "encoder_backward_wte" } else { "encoder_backward_wte_rows" },
            Some(bytes),
            &[(7, tokens), (8, dout), (9, dwte)],
            if form == RowForm::Workgroup { grid_1d(v, 1) } else { grid_1d(v, 64) },
        ),
    ]
}
