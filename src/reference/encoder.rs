//! CPU mirror of `shaders/encoder.wgsl`: token + position embedding and its backward, written as the same gather
//! (each dwpe/dwte element sums its contributions in increasing position order, exactly as the GPU does).
//! Accumulates into dwte and dwpe.

/// out (B, T, C) = wte[tokens[b, t]] + wpe[t]. Overwrites out.
pub fn encoder_forward(
    out: &mut [f32], // (B, T, C)
    tokens: &[u32],  // (B, T)
    wte: &[f32],     // (V, C)
    wpe: &[f32],     // (maxT, C)
    b: usize,
    t: usize,
    c: usize,
) {
    for bt in 0..b * t {
        let tok = tokens[bt] as usize;
        let pos = bt % t;
        for ch in 0..c {
            out[bt * c + ch] = wte[tok * c + ch] + wpe[pos * c + ch];
        }
    }
}

/// dwpe (T, C) += sum over b of dout; dwte (V, C) += sum over positions holding each token of dout.
/// V is dwte.len() / C.
pub fn encoder_backward(
    dwte: &mut [f32], // (V, C)
    dwpe: &mut [f32], // (maxT, C)
    dout: &[f32],     // (B, T, C)
    tokens: &[u32],   // (B, T)
    b: usize,
    t: usize,
    c: usize,
) {
    // encoder_backward_wpe
    let tc = t * c;
    for i in 0..tc {
        let mut acc = 0.0f32;
        for bi in 0..b {
            acc += dout[bi * tc + i];
        }
        dwpe[i] += acc;
    }
    // encoder_backward_wte: per vocabulary row, the matching positions in order.
    let v = dwte.len() / c;
    for vi in 0..v {
        for (pos, &tok) in tokens[..b * t].iter().enumerate() {
            if tok as usize == vi {
                for ch in 0..c {
                    dwte[vi * c + ch] += dout[pos * c + ch];
                }
            }
        }
    }
}
