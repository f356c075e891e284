//! CPU mirror of `shaders/matmul.wgsl`: the batched strided GEMM (same k order, same epilogue), the linear layer
//! built on it exactly as `crate::ops::matmul` builds it, and the bias-gradient column sum with the kernel's
//! partial-sum order. Backward accumulates (+=) like the kernels.

use crate::ops::matmul::{dinp_dims, dweight_dims, forward_dims, GemmDims, Replicas};

/// C[b](m, n) = alpha * sum_k A[b](m, k) B[b](k, n) + beta * C[b](m, n) (+ bias[n]); beta = 0 never reads C.
/// Each output sums k = 0, 1, ..., K-1 in order, as every GPU kernel does.
fn gemm_bias(c: &mut [f32], a: &[f32], b: &[f32], bias: Option<&[f32]>, dims: GemmDims) {
    let GemmDims { m, n, k, batch, a: la, b: lb, c: lc, alpha, beta, bias_batch } = dims;
    let mut acc = vec![0.0f32; n];
    for bt in 0..batch {
        let a_base = la.offset + bt * la.batch;
        let b_base = lb.offset + bt * lb.batch;
        let c_base = lc.offset + bt * lc.batch;
        for mi in 0..m {
            acc.iter_mut().for_each(|x| *x = 0.0);
            // k outermost so that B is walked along its rows; each acc[ni] still sums k in order.
            for ki in 0..k {
                let av = a[a_base + mi * la.row + ki * la.col];
                let brow = b_base + ki * lb.row;
                for (ni, x) in acc.iter_mut().enumerate() {
                    *x += av * b[brow + ni * lb.col];
                }
            }
            for (ni, &x) in acc.iter().enumerate() {
                let ci = c_base + mi * lc.row + ni * lc.col;
                let mut v = alpha * x;
                if beta != 0.0 {
                    v += beta * c[ci];
                }
                let bv = bias.map_or(0.0, |bias| bias[bt * bias_batch + ni]);
                c[ci] = v + bv;
            }
        }
    }
}

/// The GPU `gemm`'s semantics on the CPU (any kernel: they agree up to rounding).
pub fn gemm(c: &mut [f32], a: &[f32], b: &[f32], dims: GemmDims) {
    dims.check(c.len(), a.len(), b.len());
    gemm_bias(c, a, b, None, dims);
}

/// out (BT, OC) = inp (BT, C) @ weight (OC, C)^T + bias (OC); overwrites out.
pub fn matmul_forward(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    bt: usize,
    c: usize,
    oc: usize,
) {
    matmul_forward_replicas(out, inp, weight, bias, bt, c, oc, Replicas::ONE)
}

/// Replicated layers (`crate::ops::matmul::Replicas`): out (R, BT, OC) = inp (R, BT, C) @ weight[r]^T + bias[r],
/// weight and bias sliced from replica 0's tensor onwards, `param_stride` apart.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward_replicas(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    bt: usize,
    c: usize,
    oc: usize,
    rep: Replicas,
) {
    let dims = forward_dims(bt, c, oc, rep);
    dims.check(out.len(), inp.len(), weight.len());
    gemm_bias(out, inp, weight, bias, dims);
}

/// dinp (BT, C) += dout @ weight; dweight (OC, C) += dout^T @ inp; dbias (OC) += column sums of dout (BT, OC).
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    dinp: Option<&mut [f32]>,
    dweight: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    bt: usize,
    c: usize,
    oc: usize,
) {
    matmul_backward_replicas(dinp, dweight, dbias, dout, inp, weight, bt, c, oc, Replicas::ONE)
}

/// `matmul_backward` per replica (the GPU's `matmul_backward_replicas`).
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward_replicas(
    dinp: Option<&mut [f32]>,
    dweight: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    bt: usize,
    c: usize,
    oc: usize,
    rep: Replicas,
) {
    if let Some(dinp) = dinp {
        gemm(dinp, dout, weight, dinp_dims(bt, c, oc, rep));
    }
    gemm(dweight, dout, inp, dweight_dims(bt, c, oc, rep));
    if let Some(dbias) = dbias {
        matmul_dbias_replicas(dbias, dout, bt, oc, rep);
    }
}

/// dbias[oc] += sum over rows of dout, summed as the kernel does: 8 strided partial sums, then those in order.
pub fn matmul_dbias(dbias: &mut [f32], dout: &[f32], bt: usize, oc: usize) {
    matmul_dbias_replicas(dbias, dout, bt, oc, Replicas::ONE)
}

/// `matmul_dbias` per replica: dbias[r * param_stride + oc] += column sums of dout[r] (BT, OC).
pub fn matmul_dbias_replicas(dbias: &mut [f32], dout: &[f32], bt: usize, oc: usize, rep: Replicas) {
    for r in 0..rep.count {
        let dout = &dout[r * bt * oc..];
        let base = r * rep.param_stride;
        for col in 0..oc {
            let mut part = [0.0f32; 8];
            for (y, s) in part.iter_mut().enumerate() {
                let mut row = y;
                while row < bt {
                    *s += dout[row * oc + col];
                    row += 8;
                }
            }
            let mut t = 0.0f32;
            for s in part {
                t += s;
            }
            dbias[base + col] += t;
        }
    }
}
