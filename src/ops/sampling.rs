//! Dispatches of `shaders/sampling.wgsl`: seeded categorical sampling with temperature and top-k (Gumbel-max), the
//! GPT's token appending with end-of-sequence handling, the log-probability of each sampled token (generation without a
//! scoring forward), per-epoch minibatch permutations, and a u32 copy. All
//! randomness is a hash of (seed, step, stream, row, column) read from a 2-element u32 `rng` tensor the host writes
//! before each step ([`write_rng`]), so the plan is fixed and a seed reproduces a run. The CPU mirror is
//! `crate::reference::sampling` (and `crate::reference::logprobs` for the sampled tokens' log-probabilities).

use bytemuck::{Pod, Zeroable};

use crate::gpu::{grid_1d, Dispatch, Gpu, Tensor};

const SHADER: &str = "sampling";
const SRC: &str = include_str!("../../shaders/sampling.wgsl");

/// The WGSL parameter block (see `Params` in the shader).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct SamplingParams {
    pub rows: u32,
    pub v: u32,
    pub row_stride: u32,
    pub row_offset: u32,
    pub top_k: u32,
    pub stream: u32,
    pub t: u32,
    pub pos: u32,
    pub prompt_len: u32,
    pub has_eos: u32,
    pub eos: u32,
    pub n: u32,
    pub temperature: f32,
    pub pos_stride: u32,
    pub _p: [u32; 2],
}

fn dispatch(
    gpu: &Gpu,
    entry: &'static str,
    p: &SamplingParams,
    bindings: &[(u32, &Tensor)],
    groups: [u32; 3],
) -> Dispatch {
    Dispatch::new(gpu, SHADER, SRC, entry, Some(bytemuck::bytes_of(p)), bindings, groups)
}

/// Write the step's random state: `rng` (2 u32) = [low 32 bits of seed ^ high 32 bits, step].
pub fn write_rng(gpu: &Gpu, rng: &Tensor, seed: u64, step: u32) {
    rng.write_u32(gpu, &rng_words(seed, step));
}

/// The two words `write_rng` writes (the CPU reference takes them too).
pub fn rng_words(seed: u64, step: u32) -> [u32; 2] {
    [(seed as u32) ^ ((seed >> 32) as u32), step]
}

/// out[b] = a sample of softmax(logits_b / temperature) over the top-k logits of row b (top_k 0: all; temperature
/// <= 0: greedy argmax), where row b's V logits start at element `b * row_stride + row_offset` of `logits`. `stream`
/// separates independent draws of one step (the GPT passes the generated position). One workgroup per row.
#[allow(clippy::too_many_arguments)]
pub fn sample_categorical(
    gpu: &Gpu,
    out: &Tensor,    // (B) u32
    logits: &Tensor, // (B, row_stride) with V logits at row_offset
    rng: &Tensor,    // (2) u32 [seed, step]
    b: usize,
    v: usize,
    row_stride: usize,
    row_offset: usize,
    temperature: f32,
    top_k: usize,
    stream: u32,
) -> Dispatch {
    assert!(
        row_offset + v <= row_stride,
        "sample_categorical: row_offset {row_offset} + V {v} exceeds the row stride {row_stride}"
    );
    let p = SamplingParams {
        rows: b as u32,
        v: v as u32,
        row_stride: row_stride as u32,
        row_offset: row_offset as u32,
        top_k: top_k as u32,
        stream,
        temperature,
        ..Default::default()
    };
    dispatch(gpu, "sample_categorical", &p, &[(1, logits), (2, rng), (3, out)], grid_1d(b, 1))
}

/// Append each row's sampled token after position `pos`: tokens[b, pos+1] = targets[b, pos] = sampled[b] and
/// mask[b, pos] = 1 while the row has not produced `eos` among tokens[b, prompt_len..=pos]; after that the token is
/// `eos` again and the mask 0.
#[allow(clippy::too_many_arguments)]
pub fn append_token(
    gpu: &Gpu,
    tokens: &Tensor,  // (B, T) u32
    targets: &Tensor, // (B, T) u32
    mask: &Tensor,    // (B, T)
    sampled: &Tensor, // (B) u32
    b: usize,
    t: usize,
    pos: usize,
    prompt_len: usize,
    eos: Option<u32>,
) -> Dispatch {
    assert!(
        pos + 1 < t && pos + 1 >= prompt_len,
        "append_token: position {pos} outside the response of T = {t}, Lp = {prompt_len}"
    );
    let p = SamplingParams {
        rows: b as u32,
        t: t as u32,
        pos: pos as u32,
        prompt_len: prompt_len as u32,
        has_eos: eos.is_some() as u32,
        eos: eos.unwrap_or(0),
        ..Default::default()
    };
    dispatch(gpu, "append_token", &p, &[(4, sampled), (5, tokens), (6, targets), (7, mask)], grid_1d(b, 64))
}

/// [`sample_categorical`] for B prompts of different lengths in (B, T) sequences: row b samples the token after its
/// position `lens[b] - 1 + step` from `logits` (B, T, V). `stream` separates the draws of one call (pass `step`).
#[allow(clippy::too_many_arguments)]
pub fn sample_ragged(
    gpu: &Gpu,
    out: &Tensor,    // (B) u32
    logits: &Tensor, // (B, T, V)
    rng: &Tensor,    // (2) u32 [seed, step]
    lens: &Tensor,   // (B) u32 prompt lengths, >= 1
    b: usize,
    t: usize,
    v: usize,
    step: usize,
    temperature: f32,
    top_k: usize,
) -> Dispatch {
    assert!(logits.len >= b * t * v && lens.len >= b, "sample_ragged: logits or lens smaller than (B, T, V) / B");
    let p = SamplingParams {
        rows: b as u32,
        v: v as u32,
        t: t as u32,
        pos: step as u32,
        top_k: top_k as u32,
        stream: step as u32,
        temperature,
        ..Default::default()
    };
    dispatch(gpu, "sample_ragged", &p, &[(1, logits), (2, rng), (3, out), (12, lens)], grid_1d(b, 1))
}

/// The log-probability (temperature 1) of each row's sampled token, written at its target slot:
/// `out[b, pos_b] = logits_b[sampled[b]] - logsumexp(logits_b)` with `pos_b = min(lens[b] - 1 + step, T - 1)`.
/// `logits` is a prefill's (B, T_l, V) when `logits_t` is `Some(T_l)` (row b's logits at pos_b, which must be
/// < T_l), or a decode step's (B, V) when it is None.
#[allow(clippy::too_many_arguments)]
pub fn sampled_logprob(
    gpu: &Gpu,
    out: &Tensor,     // (B, T)
    logits: &Tensor,  // (B, T_l, V) or (B, V)
    sampled: &Tensor, // (B) u32
    lens: &Tensor,    // (B) u32 prompt lengths, >= 1
    b: usize,
    t: usize,
    v: usize,
    step: usize,
    logits_t: Option<usize>,
) -> Dispatch {
    let (row_stride, pos_stride) = match logits_t {
        Some(tl) => (tl * v, v),
        None => (v, 0),
    };
    assert!(
        logits.len >= b * row_stride && out.len >= b * t && sampled.len >= b && lens.len >= b,
        "sampled_logprob: a buffer is smaller than its shape"
    );
    let p = SamplingParams {
        rows: b as u32,
        v: v as u32,
        t: t as u32,
        pos: step as u32,
        row_stride: row_stride as u32,
        pos_stride: pos_stride as u32,
        ..Default::default()
    };
    dispatch(gpu, "sampled_logprob", &p, &[(1, logits), (4, sampled), (12, lens), (13, out)], grid_1d(b, 1))
}

/// [`append_token`] for B prompts of different lengths: row b's sampled token goes after its position
/// `lens[b] - 1 + step` (rows whose next position falls outside T are left as they are).
#[allow(clippy::too_many_arguments)]
pub fn append_ragged(
    gpu: &Gpu,
    tokens: &Tensor,  // (B, T) u32
    targets: &Tensor, // (B, T) u32
    mask: &Tensor,    // (B, T)
    sampled: &Tensor, // (B) u32
    lens: &Tensor,    // (B) u32
    b: usize,
    t: usize,
    step: usize,
    eos: Option<u32>,
) -> Dispatch {
    let p = SamplingParams {
        rows: b as u32,
        t: t as u32,
        pos: step as u32,
        has_eos: eos.is_some() as u32,
        eos: eos.unwrap_or(0),
        ..Default::default()
    };
    let bind = [(4, sampled), (5, tokens), (6, targets), (7, mask), (12, lens)];
    dispatch(gpu, "append_ragged", &p, &bind, grid_1d(b, 64))
}

/// ranks[epoch, b] = row b's position in a random permutation of the B rows, drawn from (seed, step, epoch).
pub fn minibatch_ranks(
    gpu: &Gpu,
    ranks: &Tensor, // (E, B) u32; this dispatch writes row `epoch`
    rng: &Tensor,   // (2) u32
    b: usize,
    epoch: usize,
) -> Dispatch {
    assert!(ranks.len >= (epoch + 1) * b, "minibatch_ranks: ranks too small for epoch {epoch}");
    let p = SamplingParams { rows: b as u32, stream: epoch as u32, ..Default::default() };
    dispatch(gpu, "minibatch_ranks", &p, &[(8, rng), (9, ranks)], grid_1d(b, 64))
}

/// dst[..n] = src[..n] (u32 token ids).
pub fn copy_u32(gpu: &Gpu, dst: &Tensor, src: &Tensor, n: usize) -> Dispatch {
    assert!(src.len >= n && dst.len >= n, "copy_u32 of {n} elements: src {} dst {}", src.len, dst.len);
    let p = SamplingParams { n: n as u32, ..Default::default() };
    dispatch(gpu, "copy_u32", &p, &[(10, src), (11, dst)], grid_1d(n, 256))
}
