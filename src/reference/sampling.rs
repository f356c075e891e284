//! CPU mirror of `shaders/sampling.wgsl`: the PCG counter hash, Gumbel-max categorical sampling with temperature and
//! top-k, the GPT's token appending with end-of-sequence handling, and per-epoch minibatch permutations. Same hash,
//! same draws: for a seed the GPU and this code pick the same tokens (up to float rounding of near-ties).

const STREAM_SAMPLE: u32 = 0x10000;
const STREAM_SHUFFLE: u32 = 0x20000;
const NEG_BIG: f32 = -3.0e38;

pub fn pcg_hash(x: u32) -> u32 {
    let state = x.wrapping_mul(747796405).wrapping_add(2891336453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277803737);
    (word >> 22) ^ word
}

/// A 32-bit hash of five counters.
pub fn hash5(a: u32, b: u32, c: u32, d: u32, e: u32) -> u32 {
    let mut h = pcg_hash(a);
    h = pcg_hash(h ^ b);
    h = pcg_hash(h ^ c);
    h = pcg_hash(h ^ d);
    pcg_hash(h ^ e)
}

/// Uniform in the open interval (0, 1).
pub fn uniform01(h: u32) -> f32 {
    ((h >> 8) as f32 + 0.5) / 16_777_216.0
}

/// The top-k threshold of one row: every logit >= it is kept (NEG_BIG when top_k is 0 or >= V).
pub fn top_k_threshold(row: &[f32], top_k: usize) -> f32 {
    let v = row.len();
    let mut thr = NEG_BIG;
    if top_k > 0 && top_k < v {
        let mut above = 3.4e38f32;
        for _ in 0..top_k {
            let mut m = NEG_BIG;
            for &x in row {
                if x < above {
                    m = m.max(x);
                }
            }
            let cnt = row.iter().filter(|&&x| x >= m).count();
            thr = m;
            above = m;
            if cnt >= top_k {
                break;
            }
        }
    }
    thr
}

/// out[b] = Gumbel-max sample of softmax(logits_b / temperature) over the top-k logits; row b's V logits start at
/// `b * row_stride + row_offset`. temperature <= 0: greedy.
#[allow(clippy::too_many_arguments)]
pub fn sample_categorical(
    out: &mut [u32], // (B)
    logits: &[f32],  // (B, row_stride)
    rng: [u32; 2],
    b: usize,
    v: usize,
    row_stride: usize,
    row_offset: usize,
    temperature: f32,
    top_k: usize,
    stream: u32,
) {
    for (bi, o) in out.iter_mut().enumerate().take(b) {
        let row = &logits[bi * row_stride + row_offset..bi * row_stride + row_offset + v];
        *o = sample_row(row, rng, bi, temperature, top_k, stream);
    }
}

/// Row `bi`'s Gumbel-max draw from its logits `row` (V).
fn sample_row(row: &[f32], rng: [u32; 2], bi: usize, temperature: f32, top_k: usize, stream: u32) -> u32 {
    let (seed, step) = (rng[0], rng[1]);
    let thr = top_k_threshold(row, top_k);
    let mut best = NEG_BIG;
    let mut best_j = u32::MAX;
    for (j, &x) in row.iter().enumerate() {
        if x >= thr {
            let mut key = x;
            if temperature > 0.0 {
                let u = uniform01(hash5(seed, step, STREAM_SAMPLE + stream, bi as u32, j as u32));
                key = x / temperature - (-u.ln()).ln();
            }
            if key > best || best_j == u32::MAX {
                best = key;
                best_j = j as u32;
            }
        }
    }
    best_j
}

/// The distribution `sample_categorical` samples from: softmax(row / temperature) over the top-k logits, zero
/// elsewhere (for temperature > 0).
pub fn sampling_probs(row: &[f32], temperature: f32, top_k: usize) -> Vec<f32> {
    let thr = top_k_threshold(row, top_k);
    let mx = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> =
        row.iter().map(|&x| if x >= thr { (((x - mx) / temperature) as f64).exp() } else { 0.0 }).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|&x| (x / z) as f32).collect()
}

/// tokens[b, pos+1] = targets[b, pos] = sampled[b], mask[b, pos] = 1 while row b has no `eos` in
/// tokens[b, prompt_len..=pos]; otherwise eos and mask 0.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub fn append_token(
    tokens: &mut [u32],  // (B, T)
    targets: &mut [u32], // (B, T)
    mask: &mut [f32],    // (B, T)
    sampled: &[u32],     // (B)
    b: usize,
    t: usize,
    pos: usize,
    prompt_len: usize,
    eos: Option<u32>,
) {
    for bi in 0..b {
        let row = bi * t;
        let mut alive = true;
        if let Some(e) = eos {
            for j in prompt_len..=pos {
                if tokens[row + j] == e {
                    alive = false;
                }
            }
        }
        let (tok, m) = if alive { (sampled[bi], 1.0) } else { (eos.unwrap_or(0), 0.0) };
        tokens[row + pos + 1] = tok;
        targets[row + pos] = tok;
        mask[row + pos] = m;
    }
}

/// `sample_categorical` for prompts of different lengths: row b draws from logits (B, T, V) at position
/// min(lens[b] - 1 + step, T - 1), stream `step`.
#[allow(clippy::too_many_arguments)]
pub fn sample_ragged(
    out: &mut [u32], // (B)
    logits: &[f32],  // (B, T, V)
    rng: [u32; 2],
    lens: &[u32], // (B)
    t: usize,
    v: usize,
    step: usize,
    temperature: f32,
    top_k: usize,
) {
    for (bi, o) in out.iter_mut().enumerate() {
        let pos = (lens[bi] as usize - 1 + step).min(t - 1);
        *o = sample_row(&logits[(bi * t + pos) * v..(bi * t + pos + 1) * v], rng, bi, temperature, top_k, step as u32);
    }
}

/// `append_token` for prompts of different lengths: row b's token goes after position lens[b] - 1 + step, when
/// that is inside T.
#[allow(clippy::too_many_arguments)]
pub fn append_ragged(
    tokens: &mut [u32],  // (B, T)
    targets: &mut [u32], // (B, T)
    mask: &mut [f32],    // (B, T)
    sampled: &[u32],     // (B)
    lens: &[u32],        // (B)
    t: usize,
    step: usize,
    eos: Option<u32>,
) {
    for (bi, &lp) in lens.iter().enumerate() {
        let lp = lp as usize;
        let pos = lp - 1 + step;
        if pos + 1 >= t {
            continue;
        }
        let row = bi * t;
        let alive = eos.is_none_or(|e| !tokens[row + lp..=row + pos].contains(&e));
        let (tok, m) = if alive { (sampled[bi], 1.0) } else { (eos.unwrap_or(0), 0.0) };
        tokens[row + pos + 1] = tok;
        targets[row + pos] = tok;
        mask[row + pos] = m;
    }
}

/// ranks[epoch, b] = rank of hash(seed, step, epoch, b) among the B rows' hashes (ties by index).
pub fn minibatch_ranks(ranks: &mut [u32] /* (E, B) */, rng: [u32; 2], b: usize, epoch: usize) {
    let (seed, step) = (rng[0], rng[1]);
    let key = |j: usize| hash5(seed, step, STREAM_SHUFFLE + epoch as u32, j as u32, 0);
    for bi in 0..b {
        let kb = key(bi);
        let mut rank = 0u32;
        for j in 0..b {
            let kj = key(j);
            if kj < kb || (kj == kb && j < bi) {
                rank += 1;
            }
        }
        ranks[epoch * b + bi] = rank;
    }
}
