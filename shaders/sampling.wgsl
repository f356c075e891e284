// Sampling op family: seeded, counter-based randomness on the GPU and what RLHF rollouts build from it.
//   sample_categorical: one token per row from logits, with temperature and top-k (Gumbel-max trick);
//   append_token:       the GPT's autoregressive bookkeeping (tokens, targets, response mask, end of sequence);
//   sample_ragged, append_ragged: the same two for a batch of prompts of different lengths (one position per row);
//   sampled_logprob:    the log-probability of each row's sampled token (generation without a scoring forward);
//   minibatch_ranks:    a seeded random permutation of the batch rows per PPO epoch (minibatch membership);
//   copy_u32:           copies token buffers from the policy into the reference / value / reward models.
//
// Randomness is a pure function of (seed, step, stream, row, column) through the PCG hash (Jarzynski & Olano 2020,
// "Hash Functions for GPU Rendering"), so a run is reproducible for a seed on every device and the CPU reference
// (src/reference/sampling.rs) draws exactly the same numbers. The host writes [seed, step] into a 2-element u32
// storage buffer before each step; the plan itself never changes.
//
// Sampling uses the Gumbel-max trick: argmax_j (logit_j / temperature + g_j), g_j = -log(-log(u_j)), u_j uniform in
// (0, 1), is an exact sample of softmax(logits / temperature). It needs one parallel argmax per row instead of a
// sequential inverse-CDF scan, and ties break to the lowest index, so it is deterministic.

struct Params {
    rows: u32,        // B: rows to sample (or to rank)
    v: u32,           // V: logits per row (vocabulary or responses)
    row_stride: u32,  // elements between row b's logits and row b+1's (T*V for the GPT, V for the MLP)
    row_offset: u32,  // element offset of the sampled position inside a row (pos*V for the GPT, 0 for the MLP)
    top_k: u32,       // 0 or >= V: no top-k filter
    stream: u32,      // random stream: which draw this is (the generated position, the PPO epoch, ...)
    t: u32,           // T (append_token)
    pos: u32,         // position whose next token is appended (append_token)
    prompt_len: u32,  // Lp: response tokens start at position Lp (append_token)
    has_eos: u32,     // 1: eos is a stop token (append_token)
    eos: u32,         // stop token id; after it every position holds eos again, masked out (append_token)
    n: u32,           // elements (copy_u32)
    temperature: f32, // <= 0: greedy (argmax)
    pos_stride: u32,  // sampled_logprob: elements between a row's positions (V for (B, T, V) logits, 0 for (B, V))
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// Stream tags, so different uses of the RNG never draw the same numbers.
const STREAM_SAMPLE: u32 = 0x10000u;
const STREAM_SHUFFLE: u32 = 0x20000u;

fn pcg_hash(x: u32) -> u32 {
    let state = x * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// A 32-bit hash of five counters.
fn hash5(a: u32, b: u32, c: u32, d: u32, e: u32) -> u32 {
    var h = pcg_hash(a);
    h = pcg_hash(h ^ b);
    h = pcg_hash(h ^ c);
    h = pcg_hash(h ^ d);
    return pcg_hash(h ^ e);
}

// Uniform in the open interval (0, 1): 24 random bits, centred in their cell.
fn uniform01(h: u32) -> f32 {
    return (f32(h >> 8u) + 0.5) / 16777216.0;
}

const NEG_BIG: f32 = -3.0e38;

// sample_categorical: out[b] = a sample of softmax(logits[b] / temperature) restricted to the top-k logits.
// bindings: 1 logits (rows, row_stride) read (row b's V logits at b*row_stride + row_offset), 2 rng (2: seed, step)
//           read, 3 out (rows) u32 write.
// grid: grid_1d(rows, 1): one workgroup of 64 per row; row b = wid.x + wid.y * nwg.x.
// Top-k keeps every logit >= the k-th largest (ties at the threshold are all kept).
@group(0) @binding(1) var<storage, read> s_logits: array<f32>;
@group(0) @binding(2) var<storage, read> s_rng: array<u32>;
@group(0) @binding(3) var<storage, read_write> s_out: array<u32>;

var<workgroup> red_val: array<f32, 64>;
var<workgroup> red_idx: array<u32, 64>;
var<workgroup> red_cnt: array<u32, 64>;
var<workgroup> shared_thr: f32;
var<workgroup> shared_cnt: u32;

@compute @workgroup_size(64)
fn sample_categorical(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let b = wid.x + wid.y * nwg.x;
    if (b >= p.rows) { return; }
    sample_row(b, b * p.row_stride + p.row_offset, lid.x);
}

// sample_ragged: sample_categorical for rows whose prompts have different lengths (generation from a batch of
// prompts of Lp_b tokens each, right-padded to T): row b samples the token after position Lp_b - 1 + s, s = p.pos
// (the generation step), from logits (B, T, V).
// bindings: 1 logits (B, T, V) read, 2 rng read, 3 out (B) u32 write, 12 lens (B) u32 read (Lp_b >= 1).
// grid: grid_1d(B, 1), as sample_categorical.
@group(0) @binding(12) var<storage, read> g_lens: array<u32>;

@compute @workgroup_size(64)
fn sample_ragged(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let b = wid.x + wid.y * nwg.x;
    if (b >= p.rows) { return; }
    let pos = min(g_lens[b] - 1u + p.pos, p.t - 1u);
    sample_row(b, (b * p.t + pos) * p.v, lid.x);
}

// One row's draw by the workgroup (lane l of 64): s_out[b] = the sample from the V logits at s_logits[base..].
fn sample_row(b: u32, base: u32, l: u32) {
    let seed = s_rng[0];
    let step = s_rng[1];

    // Top-k threshold: walk down the distinct logit values until at least k logits are >= the current one.
    var thr = NEG_BIG;
    if (p.top_k > 0u && p.top_k < p.v) {
        var above = 3.4e38; // strict upper bound of the next distinct value
        for (var it = 0u; it < p.top_k; it++) {
            var m = NEG_BIG;
            for (var j = l; j < p.v; j += 64u) {
                let x = s_logits[base + j];
                if (x < above) { m = max(m, x); }
            }
            red_val[l] = m;
            workgroupBarrier();
            for (var s = 32u; s > 0u; s >>= 1u) {
                if (l < s) { red_val[l] = max(red_val[l], red_val[l + s]); }
                workgroupBarrier();
            }
            if (l == 0u) { shared_thr = red_val[0]; }
            let cur = workgroupUniformLoad(&shared_thr);
            var c = 0u;
            for (var j = l; j < p.v; j += 64u) {
                if (s_logits[base + j] >= cur) { c += 1u; }
            }
            red_cnt[l] = c;
            workgroupBarrier();
            for (var s = 32u; s > 0u; s >>= 1u) {
                if (l < s) { red_cnt[l] += red_cnt[l + s]; }
                workgroupBarrier();
            }
            if (l == 0u) { shared_cnt = red_cnt[0]; }
            let cnt = workgroupUniformLoad(&shared_cnt);
            thr = cur;
            above = cur;
            if (cnt >= p.top_k) { break; }
        }
    }

    // Gumbel-max over the kept logits; ties go to the lowest index.
    var best = NEG_BIG;
    var best_j = 0xffffffffu;
    for (var j = l; j < p.v; j += 64u) {
        let x = s_logits[base + j];
        if (x >= thr) {
            var key = x;
            if (p.temperature > 0.0) {
                let u = uniform01(hash5(seed, step, STREAM_SAMPLE + p.stream, b, j));
                key = x / p.temperature - log(-log(u));
            }
            if (key > best || best_j == 0xffffffffu) {
                best = key;
                best_j = j;
            }
        }
    }
    red_val[l] = best;
    red_idx[l] = best_j;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (l < s) {
            let ov = red_val[l + s];
            let oi = red_idx[l + s];
            if (oi != 0xffffffffu && (red_idx[l] == 0xffffffffu || ov > red_val[l] || (ov == red_val[l] && oi < red_idx[l]))) {
                red_val[l] = ov;
                red_idx[l] = oi;
            }
        }
        workgroupBarrier();
    }
    if (l == 0u) {
        s_out[b] = red_idx[0];
    }
}

// sampled_logprob: the log-probability at temperature 1 of the token each row has just sampled, so that generation
// needs no scoring forward pass afterwards:
//   out[b, pos_b] = logits_b[sampled[b]] - logsumexp(logits_b),  pos_b = min(lens[b] - 1 + step, T - 1),
// pos_b being the position whose next token was sampled (the token's target slot, as in the GPT's logps). logits_b is
// row b's V logits at b * row_stride + pos_b * pos_stride: the prefill's (B, T, V) logits (row_stride T*V, pos_stride
// V) or a decode step's (B, V) ones (row_stride V, pos_stride 0). Max first, then the sum of exp: log space throughout.
// bindings: 1 logits read, 4 sampled (B) u32 read, 12 lens (B) u32 read, 13 out (B, T) read_write (only pos_b is
// written). grid: grid_1d(B, 1): one workgroup of 64 per row.
@group(0) @binding(13) var<storage, read_write> lp_out: array<f32>;

@compute @workgroup_size(64)
fn sampled_logprob(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let b = wid.x + wid.y * nwg.x;
    if (b >= p.rows) { return; }
    let l = lid.x;
    let pos = min(g_lens[b] - 1u + p.pos, p.t - 1u);
    let base = b * p.row_stride + pos * p.pos_stride;
    var m = NEG_BIG;
    for (var j = l; j < p.v; j += 64u) {
        m = max(m, s_logits[base + j]);
    }
    red_val[l] = m;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (l < s) { red_val[l] = max(red_val[l], red_val[l + s]); }
        workgroupBarrier();
    }
    let row_max = red_val[0];
    workgroupBarrier();
    var sum = 0.0;
    for (var j = l; j < p.v; j += 64u) {
        sum += exp(s_logits[base + j] - row_max);
    }
    red_val[l] = sum;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (l < s) { red_val[l] += red_val[l + s]; }
        workgroupBarrier();
    }
    if (l == 0u) {
        lp_out[b * p.t + pos] = s_logits[base + a_sampled[b]] - (row_max + log(red_val[0]));
    }
}

// append_token: the sampled token for position pos+1 of each row goes into the GPT's inputs and targets:
//   tokens[b, pos+1] = tok, targets[b, pos] = tok, mask[b, pos] = 1 while the row is alive,
// where a row is alive until it has produced eos (the eos token itself is part of the response); once it has, tok is
// eos again and mask[b, pos] = 0, so padding never enters a loss. One invocation per row.
// bindings: 4 sampled (B) u32 read, 5 tokens (B, T) u32 read_write, 6 targets (B, T) u32 read_write,
//           7 mask (B, T) f32 read_write.
// grid: grid_1d(B, 64)
@group(0) @binding(4) var<storage, read> a_sampled: array<u32>;
@group(0) @binding(5) var<storage, read_write> a_tokens: array<u32>;
@group(0) @binding(6) var<storage, read_write> a_targets: array<u32>;
@group(0) @binding(7) var<storage, read_write> a_mask: array<f32>;

@compute @workgroup_size(64)
fn append_token(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = gid.x + gid.y * nwg.x * 64u;
    if (b >= p.rows) { return; }
    append_row(b, p.prompt_len, p.pos);
}

// Row b: its sampled token after position pos, unless tokens[b, lp..=pos] already hold eos (then eos, masked out).
fn append_row(b: u32, lp: u32, pos: u32) {
    let row = b * p.t;
    var alive = true;
    if (p.has_eos == 1u) {
        for (var j = lp; j <= pos; j++) {
            if (a_tokens[row + j] == p.eos) { alive = false; }
        }
    }
    var tok = a_sampled[b];
    var m = 1.0;
    if (!alive) {
        tok = p.eos;
        m = 0.0;
    }
    a_tokens[row + pos + 1u] = tok;
    a_targets[row + pos] = tok;
    a_mask[row + pos] = m;
}

// append_ragged: append_token for rows of different prompt lengths (see sample_ragged): row b's sampled token goes
// after position pos_b = Lp_b - 1 + s (s = p.pos), alive until the row has produced eos in tokens[b, Lp_b..=pos_b];
// rows whose pos_b + 1 falls outside T are left as they are.
// bindings: 4 sampled, 5 tokens, 6 targets, 7 mask (as append_token), 12 lens (B) u32 read.
// grid: grid_1d(B, 64)
@compute @workgroup_size(64)
fn append_ragged(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = gid.x + gid.y * nwg.x * 64u;
    if (b >= p.rows) { return; }
    let lp = g_lens[b];
    let pos = lp - 1u + p.pos;
    if (pos + 1u >= p.t) { return; }
    append_row(b, lp, pos);
}

// minibatch_ranks: ranks[e, b] = position of row b in epoch e's random permutation of the B rows (e = stream).
// Row b's key is a hash of (seed, step, epoch, b); its rank counts the rows with a smaller key (ties by index).
// PPO's minibatch m of size S holds the rows with rank in [m S, (m+1) S).
// bindings: 8 rng (2) read, 9 ranks (E, B) u32 read_write (this dispatch writes row e = stream).
// grid: grid_1d(B, 64)
@group(0) @binding(8) var<storage, read> r_rng: array<u32>;
@group(0) @binding(9) var<storage, read_write> r_ranks: array<u32>;

@compute @workgroup_size(64)
fn minibatch_ranks(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = gid.x + gid.y * nwg.x * 64u;
    if (b >= p.rows) { return; }
    let seed = r_rng[0];
    let step = r_rng[1];
    let kb = hash5(seed, step, STREAM_SHUFFLE + p.stream, b, 0u);
    var rank = 0u;
    for (var j = 0u; j < p.rows; j++) {
        let kj = hash5(seed, step, STREAM_SHUFFLE + p.stream, j, 0u);
        if (kj < kb || (kj == kb && j < b)) { rank += 1u; }
    }
    r_ranks[p.stream * p.rows + b] = rank;
}

// copy_u32: dst[i] = src[i], n elements (token ids from the policy's buffers into another model's).
// bindings: 10 src (N) u32 read, 11 dst (N) u32 write.
// grid: grid_1d(N, 256)
@group(0) @binding(10) var<storage, read> c_src: array<u32>;
@group(0) @binding(11) var<storage, read_write> c_dst: array<u32>;

@compute @workgroup_size(256)
fn copy_u32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) { return; }
    c_dst[i] = c_src[i];
}
