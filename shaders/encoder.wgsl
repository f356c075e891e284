// Encoder op family: GPT-2's input embedding, token embedding plus position embedding, forward and backward.
// out[b, t, :] = wte[tokens[b, t], :] + wpe[t, :]. Backward kernels ACCUMULATE into dwte and dwpe (+=).
//
// The backward is a gather, never a scatter: every dwpe (t, c) and every dwte (v, c) element is owned by exactly one
// invocation, which adds its contributions in increasing position order, so there are no races, no atomics on
// floats, and results are identical run to run (and to the CPU reference, which adds in the same order).
// Cost of encoder_backward_wte: V workgroups that each read all B*T tokens (V * B * T u32 reads) plus C adds per
// position; fine for small vocabularies and still acceptable at GPT-2's V = 50257 with B*T of a few thousand
// (chunks without a match are skipped after one read), but it grows as V * B * T.
//
// tokens are u32 in [0, V); an out-of-range token is a caller bug (the forward reads whatever the robust-access
// rules return, the backward drops it).

struct Params {
    b: u32,     // B
    t: u32,     // T
    c: u32,     // C
    v: u32,     // V (backward only)
    step: u32,  // generation step s (encoder_decode only)
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 256u;
const NO_TOKEN: u32 = 0xffffffffu;

// encoder_forward: out[b, t, c] = wte[tokens[b, t], c] + wpe[t, c]
// bindings: 1 tokens (B, T) u32 read, 2 wte (V, C) read, 3 wpe (T, C) read, 4 out (B, T, C) write.
// grid: one invocation per output element, `grid_1d(B * T * C, 256)`; i = gid.x + gid.y * nwg.x * 256.
@group(0) @binding(1) var<storage, read> encf_tokens: array<u32>;
@group(0) @binding(2) var<storage, read> encf_wte: array<f32>;
@group(0) @binding(3) var<storage, read> encf_wpe: array<f32>;
@group(0) @binding(4) var<storage, read_write> encf_out: array<f32>;

@compute @workgroup_size(256)
fn encoder_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.b * p.t * p.c) { return; }
    let bt = i / p.c;
    let ch = i % p.c;
    let t = bt % p.t;
    encf_out[i] = encf_wte[encf_tokens[bt] * p.c + ch] + encf_wpe[t * p.c + ch];
}

// encoder_decode: the input of one generation step with a KV cache (`model::Decoder`). Row b's newest token sits at
// position pos_b = min(lens[b] - 1 + step, T - 1) of the (B, T) token buffer (prompts of different lengths, each
// continued after its own last token); out[b, c] = wte[tokens[b, pos_b], c] + wpe[pos_b, c], and pos[b] = pos_b for
// the step's attention (`attention_decode`).
// bindings: 1 tokens (B, T) u32 read, 2 wte (V, C) read, 3 wpe (T, C) read, 4 out (B, C) write,
//           10 lens (B) u32 read (>= 1), 11 pos (B) u32 write.
// grid: one invocation per output element, `grid_1d(B * C, 256)`.
@group(0) @binding(10) var<storage, read> encd_lens: array<u32>;
@group(0) @binding(11) var<storage, read_write> encd_pos: array<u32>;

@compute @workgroup_size(256)
fn encoder_decode(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.b * p.c) { return; }
    let b = i / p.c;
    let ch = i % p.c;
    let pos = min(encd_lens[b] - 1u + p.step, p.t - 1u);
    encf_out[i] = encf_wte[encf_tokens[b * p.t + pos] * p.c + ch] + encf_wpe[pos * p.c + ch];
    if (ch == 0u) { encd_pos[b] = pos; }
}

// encoder_backward_wpe: dwpe[t, c] += sum over b (in order) of dout[b, t, c]
// bindings: 5 dout (B, T, C) read, 6 dwpe (T, C) read_write.
// grid: one invocation per dwpe element, `grid_1d(T * C, 256)`; i = gid.x + gid.y * nwg.x * 256.
@group(0) @binding(5) var<storage, read> encp_dout: array<f32>;
@group(0) @binding(6) var<storage, read_write> encp_dwpe: array<f32>;

@compute @workgroup_size(256)
fn encoder_backward_wpe(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let tc = p.t * p.c;
    if (i >= tc) { return; }
    var acc = 0.0;
    for (var b = 0u; b < p.b; b++) {
        acc += encp_dout[b * tc + i];
    }
    encp_dwpe[i] += acc;
}

// encoder_backward_wte: for each vocabulary row v and each position (b, t) in order with tokens[b, t] == v,
//   dwte[v, c] += dout[b, t, c]
// One workgroup per vocabulary row; thread lid owns channels lid, lid + 256, ... of that row. The workgroup walks
// the tokens in chunks of 256: each thread loads one token into workgroup memory and flags the chunk if it matches;
// a flagged chunk is then scanned in order by every thread, which adds the matching dout rows into its channels.
// bindings: 7 tokens (B, T) u32 read, 8 dout (B, T, C) read, 9 dwte (V, C) read_write.
// grid: one workgroup of 256 per vocabulary row, `grid_1d(V, 1)`; v = wid.x + wid.y * nwg.x.
@group(0) @binding(7) var<storage, read> encw_tokens: array<u32>;
@group(0) @binding(8) var<storage, read> encw_dout: array<f32>;
@group(0) @binding(9) var<storage, read_write> encw_dwte: array<f32>;

var<workgroup> tok_tile: array<u32, 256>;
// The number (from 1) of the last chunk in which some thread found token v. It only grows, so it never needs a reset.
var<workgroup> hit_chunk: atomic<u32>;

@compute @workgroup_size(256)
fn encoder_backward_wte(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let v = wid.x + wid.y * nwg.x;
    if (v >= p.v) { return; } // uniform: the whole workgroup leaves together
    let bt = p.b * p.t;
    let row = v * p.c;
    var chunk = 0u;
    for (var start = 0u; start < bt; start += WG) {
        chunk += 1u;
        var tok = NO_TOKEN;
        if (start + lid < bt) {
            tok = encw_tokens[start + lid];
        }
        tok_tile[lid] = tok;
        if (tok == v) {
            atomicMax(&hit_chunk, chunk);
        }
        workgroupBarrier();
        if (atomicLoad(&hit_chunk) == chunk) {
            let len = min(WG, bt - start);
            for (var j = 0u; j < len; j++) {
                if (tok_tile[j] == v) {
                    let src = (start + j) * p.c;
                    for (var ch = lid; ch < p.c; ch += WG) {
                        encw_dwte[row + ch] += encw_dout[src + ch];
                    }
                }
            }
        }
        workgroupBarrier(); // everyone is done with tok_tile before the next chunk overwrites it
    }
}

// encoder_backward_wte_rows: encoder_backward_wte with one invocation per vocabulary row (no workgroup memory, no
// barriers): the invocation scans the B*T tokens in order and adds each matching dout row into its own row, the
// same additions in the same order as encoder_backward_wte (bit-identical results). For CPU adapters and small
// vocabularies, where the workgroup version's barriers dominate; the tuner picks per adapter and shape.
// bindings: as encoder_backward_wte. grid: `grid_1d(V, 64)`, workgroup 64; v = (wid.x + wid.y * nwg.x) * 64 + lid.
@compute @workgroup_size(64)
fn encoder_backward_wte_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let v = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (v >= p.v) { return; }
    let bt = p.b * p.t;
    let row = v * p.c;
    for (var j = 0u; j < bt; j++) {
        if (encw_tokens[j] == v) {
            let src = j * p.c;
            for (var ch = 0u; ch < p.c; ch++) {
                encw_dwte[row + ch] += encw_dout[src + ch];
            }
        }
    }
}
