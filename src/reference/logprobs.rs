//! CPU mirror of `shaders/logprobs.wgsl`: log-probabilities of targets, their backward, the full log-softmax, the
//! masked SFT loss and per-sequence sums. Same formulas and the same log-space care (max-subtracted logsumexp);
//! reductions run in plain sequential order (the GPU's fixed tree order differs only by rounding).

/// logsumexp of one row, max-subtracted as in the shader.
fn row_lse(row: &[f32]) -> f32 {
    let mut m = f32::MIN;
    for &x in row {
        m = m.max(x);
    }
    let mut s = 0.0f32;
    for &x in row {
        s += (x - m).exp();
    }
    m + s.ln()
}

/// lse[i] = logsumexp(logits[i, :]); logps[i] = logits[i, targets[i]] - lse[i].
pub fn logprobs_forward(logps: &mut [f32], lse: &mut [f32], logits: &[f32], targets: &[u32], n: usize, v: usize) {
    for i in 0..n {
        let row = &logits[i * v..(i + 1) * v];
        let l = row_lse(row);
        lse[i] = l;
        logps[i] = row[targets[i] as usize] - l;
    }
}

/// dlogits[i, j] = dlogps[i] * (1[j == targets[i]] - exp(logits[i, j] - lse[i])) (overwrites).
pub fn logprobs_backward(
    dlogits: &mut [f32],
    dlogps: &[f32],
    logits: &[f32],
    lse: &[f32],
    targets: &[u32],
    n: usize,
    v: usize,
) {
    for i in 0..n {
        for j in 0..v {
            let idx = i * v + j;
            let prob = (logits[idx] - lse[i]).exp();
            let indicator = if j == targets[i] as usize { 1.0 } else { 0.0 };
            dlogits[idx] = dlogps[i] * (indicator - prob);
        }
    }
}

/// out[i, j] = logits[i, j] - logsumexp(logits[i, :]).
pub fn log_softmax(out: &mut [f32], logits: &[f32], n: usize, v: usize) {
    for i in 0..n {
        let row = &logits[i * v..(i + 1) * v];
        let l = row_lse(row);
        for j in 0..v {
            out[i * v + j] = row[j] - l;
        }
    }
}

/// loss[0] = -sum(mask * logps) / max(sum(mask), 1); dlogps[i] = -mask[i] / max(sum(mask), 1) (overwrites).
/// Masked-out positions contribute nothing, even a logp of -inf.
pub fn sft_loss(loss: &mut [f32], dlogps: &mut [f32], logps: &[f32], mask: &[f32], n: usize) {
    let mut s = 0.0f32;
    let mut c = 0.0f32;
    for i in 0..n {
        let m = mask[i];
        if m != 0.0 {
            s += m * logps[i];
            c += m;
        }
    }
    let denom = c.max(1.0);
    loss[0] = -s / denom;
    for i in 0..n {
        dlogps[i] = -mask[i] / denom;
    }
}

/// `sft_loss` per group of n / groups consecutive positions.
pub fn sft_loss_groups(loss: &mut [f32], dlogps: &mut [f32], logps: &[f32], mask: &[f32], n: usize, groups: usize) {
    let len = n / groups;
    for g in 0..groups {
        let r = g * len..(g + 1) * len;
        sft_loss(&mut loss[g..g + 1], &mut dlogps[r.clone()], &logps[r.clone()], &mask[r], len);
    }
}

/// Per sequence s: seq_sum[s] = sum_t mask[s, t] * logps[s, t]; seq_mean[s] = seq_sum[s] / max(sum_t mask[s, t], 1).
pub fn sequence_logps(seq_sum: &mut [f32], seq_mean: &mut [f32], logps: &[f32], mask: &[f32], s: usize, t: usize) {
    for q in 0..s {
        let base = q * t;
        let mut total = 0.0f32;
        let mut count = 0.0f32;
        for k in 0..t {
            let m = mask[base + k];
            if m != 0.0 {
                total += m * logps[base + k];
                count += m;
            }
        }
        seq_sum[q] = total;
        seq_mean[q] = total / count.max(1.0);
    }
}
