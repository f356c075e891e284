//! CPU mirror of `shaders/layernorm.wgsl` (llm.c's layernorm): same formulas, same two-pass backward (rows for
//! `dinp`, then channels for `dweight`/`dbias`), same accumulate-into-d-output convention. The GPU sums each row in
//! a tree and each channel over 8 row lanes; here the sums run in order, so results agree to rounding.

const EPS: f32 = 1e-5;

/// out (N, C) = (inp - mean) * rstd * weight + bias; mean (N), rstd (N) saved for the backward. Overwrites.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    out: &mut [f32],  // (N, C)
    mean: &mut [f32], // (N)
    rstd: &mut [f32], // (N)
    inp: &[f32],      // (N, C)
    weight: &[f32],   // (C)
    bias: &[f32],     // (C)
    n: usize,
    c: usize,
) {
    for row in 0..n {
        let x = &inp[row * c..(row + 1) * c];
        let mut s = 0.0f32;
        for &xi in x {
            s += xi;
        }
        let m = s / c as f32;
        let mut v = 0.0f32;
        for &xi in x {
            let d = xi - m;
            v += d * d;
        }
        let r = 1.0 / (v / c as f32 + EPS).sqrt();
        for i in 0..c {
            let norm = (x[i] - m) * r;
            out[row * c + i] = norm * weight[i] + bias[i];
        }
        mean[row] = m;
        rstd[row] = r;
    }
}

/// dinp (N, C) += ..., dweight (C) += sum_n norm * dout, dbias (C) += sum_n dout.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    dinp: &mut [f32],    // (N, C)
    dweight: &mut [f32], // (C)
    dbias: &mut [f32],   // (C)
    dout: &[f32],        // (N, C)
    inp: &[f32],         // (N, C)
    weight: &[f32],      // (C)
    mean: &[f32],        // (N)
    rstd: &[f32],        // (N)
    n: usize,
    c: usize,
) {
    // layernorm_backward_dinp: one row at a time.
    for row in 0..n {
        let base = row * c;
        let (m, r) = (mean[row], rstd[row]);
        let mut dnorm_sum = 0.0f32;
        let mut dnorm_norm_sum = 0.0f32;
        for i in 0..c {
            let norm = (inp[base + i] - m) * r;
            let dnorm = weight[i] * dout[base + i];
            dnorm_sum += dnorm;
            dnorm_norm_sum += dnorm * norm;
        }
        let dnorm_mean = dnorm_sum / c as f32;
        let dnorm_norm_mean = dnorm_norm_sum / c as f32;
        for i in 0..c {
            let norm = (inp[base + i] - m) * r;
            let dnorm = weight[i] * dout[base + i];
            dinp[base + i] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * r;
        }
    }
    // layernorm_backward_params: one channel at a time, summed over rows.
    for ch in 0..c {
        let mut dw = 0.0f32;
        let mut db = 0.0f32;
        for row in 0..n {
            let d = dout[row * c + ch];
            let norm = (inp[row * c + ch] - mean[row]) * rstd[row];
            dw += norm * d;
            db += d;
        }
        dweight[ch] += dw;
        dbias[ch] += db;
    }
}
