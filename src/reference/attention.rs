//! CPU mirror of `shaders/attention.wgsl`: causal multi-head self-attention, forward and backward, with llm.c's
//! `attention_forward` / `attention_backward` semantics. Same formulas as the WGSL (scores, max-subtracted softmax,
//! weighted sum of values; backward through values, softmax and scores), written as llm.c's per-(b, t, h) loops.
//!
//! Layouts: `inp` (B, T, 3C) holds q | k | v per position (q at channels [0, C), k at [C, 2C), v at [2C, 3C)); head h
//! owns channels h*HS..(h+1)*HS of each, HS = C / NH. `preatt` and `att` are (B, NH, T, T); entries t2 > t (the
//! future) are written as 0 in both, so every element is defined. `datt` and `dpreatt` are scratch that the backward
//! overwrites (entries t2 > t zeroed too); `dinp` (B, T, 3C) accumulates (+=), like every backward in this crate.

/// out (B, T, C), preatt (B, NH, T, T), att (B, NH, T, T) from inp (B, T, 3C). Overwrites out, preatt, att.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    out: &mut [f32],    // (B, T, C)
    preatt: &mut [f32], // (B, NH, T, T)
    att: &mut [f32],    // (B, NH, T, T)
    inp: &[f32],        // (B, T, 3C)
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    let (bsz, tsz) = (b, t);
    let c3 = 3 * c;
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    for b in 0..bsz {
        for t in 0..tsz {
            for h in 0..nh {
                let q = b * tsz * c3 + t * c3 + h * hs;
                let row = b * nh * tsz * tsz + h * tsz * tsz + t * tsz;
                // scores (kernel attention_scores): preatt[t2] = q . k[t2] * scale for t2 <= t, 0 in the future
                for t2 in 0..tsz {
                    let mut val = 0.0f32;
                    if t2 <= t {
                        let k = b * tsz * c3 + t2 * c3 + h * hs + c;
                        for i in 0..hs {
                            val += inp[q + i] * inp[k + i];
                        }
                        val *= scale;
                    }
                    preatt[row + t2] = val;
                }
                // softmax over t2 <= t (kernel attention_softmax), max subtracted for stability
                let mut maxval = preatt[row];
                for t2 in 1..=t {
                    maxval = maxval.max(preatt[row + t2]);
                }
                let mut expsum = 0.0f32;
                for t2 in 0..=t {
                    expsum += (preatt[row + t2] - maxval).exp();
                }
                let expsum_inv = 1.0 / expsum;
                for t2 in 0..tsz {
                    att[row + t2] = if t2 <= t { (preatt[row + t2] - maxval).exp() * expsum_inv } else { 0.0 };
                }
                // weighted sum of values (kernel attention_values)
                let o = b * tsz * c + t * c + h * hs;
                for i in 0..hs {
                    let mut acc = 0.0f32;
                    for t2 in 0..=t {
                        let v = b * tsz * c3 + t2 * c3 + h * hs + 2 * c;
                        acc += att[row + t2] * inp[v + i];
                    }
                    out[o + i] = acc;
                }
            }
        }
    }
}

/// dinp (B, T, 3C) += d(out)/d(inp)^T dout, given the forward's att. datt and dpreatt (B, NH, T, T) are overwritten
/// scratch: datt[t, t2] = dout[t] . v[t2], dpreatt = softmax backward of datt (both 0 for t2 > t).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dinp: &mut [f32],    // (B, T, 3C)
    dpreatt: &mut [f32], // (B, NH, T, T)
    datt: &mut [f32],    // (B, NH, T, T)
    dout: &[f32],        // (B, T, C)
    inp: &[f32],         // (B, T, 3C)
    att: &[f32],         // (B, NH, T, T)
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    let (bsz, tsz) = (b, t);
    let c3 = 3 * c;
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    for b in 0..bsz {
        for t in 0..tsz {
            for h in 0..nh {
                let row = b * nh * tsz * tsz + h * tsz * tsz + t * tsz;
                let o = b * tsz * c + t * c + h * hs;
                // through the value sum, part 1 (kernel attention_datt): datt[t2] = dout[t] . v[t2]
                for t2 in 0..tsz {
                    let mut val = 0.0f32;
                    if t2 <= t {
                        let v = b * tsz * c3 + t2 * c3 + h * hs + 2 * c;
                        for i in 0..hs {
                            val += dout[o + i] * inp[v + i];
                        }
                    }
                    datt[row + t2] = val;
                }
                // through the softmax (kernel attention_softmax_backward):
                // dpreatt[t2] = att[t2] * (datt[t2] - sum_j att[j] datt[j])
                let mut dot = 0.0f32;
                for t2 in 0..=t {
                    dot += att[row + t2] * datt[row + t2];
                }
                for t2 in 0..tsz {
                    dpreatt[row + t2] = if t2 <= t { att[row + t2] * (datt[row + t2] - dot) } else { 0.0 };
                }
            }
        }
    }
    // through the scores and the value sum, part 2 (kernel attention_dqkv): each (b, t, h, i) gathers its dq, dk, dv
    for b in 0..bsz {
        for t in 0..tsz {
            for h in 0..nh {
                for i in 0..hs {
                    let mut dq = 0.0f32;
                    for t2 in 0..=t {
                        let row = b * nh * tsz * tsz + h * tsz * tsz + t * tsz;
                        let k = b * tsz * c3 + t2 * c3 + h * hs + c;
                        dq += dpreatt[row + t2] * inp[k + i];
                    }
                    let mut dk = 0.0f32;
                    let mut dv = 0.0f32;
                    for t1 in t..tsz {
                        let row = b * nh * tsz * tsz + h * tsz * tsz + t1 * tsz;
                        let q = b * tsz * c3 + t1 * c3 + h * hs;
                        dk += dpreatt[row + t] * inp[q + i];
                        dv += att[row + t] * dout[b * tsz * c + t1 * c + h * hs + i];
                    }
                    let d = b * tsz * c3 + t * c3 + h * hs + i;
                    dinp[d] += dq * scale;
                    dinp[d + c] += dk * scale;
                    dinp[d + 2 * c] += dv;
                }
            }
        }
    }
}
