//! CPU mirror of `shaders/matmul.wgsl`: the batched strided GEMM (same k order, same epilogue), the linear layer
//! built on it, and the bias-gradient column sum with the kernel's partial-sum order. Backward accumulates (+=)
//! like the kernels. The strides of each linear-layer product are derived here from the tensors' shapes,
//! independently of `ops::matmul`, so a wrong stride on the GPU side shows up as a mismatch.

/// Where the matrices of a batched GEMM operand sit in their buffer: element (b, i, j) is at
/// `offset + b * batch + i * row + j * col`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Strides {
    pub offset: usize,
    pub batch: usize,
    pub row: usize,
    pub col: usize,
}

impl Strides {
    /// A (rows, cols) matrix stored row by row, batches `batch` apart.
    pub fn row_major(cols: usize, batch: usize) -> Strides {
        Strides { offset: 0, batch, row: cols, col: 1 }
    }

    /// A (rows, cols) matrix whose transpose (cols, rows) is stored row by row, batches `batch` apart.
    pub fn transposed(rows: usize, batch: usize) -> Strides {
        Strides { offset: 0, batch, row: 1, col: rows }
    }

    fn max_index(&self, batch: usize, rows: usize, cols: usize) -> Option<usize> {
        (batch > 0 && rows > 0 && cols > 0)
            .then(|| self.offset + (batch - 1) * self.batch + (rows - 1) * self.row + (cols - 1) * self.col)
    }
}

/// C[b](m, n) = alpha * sum_k A[b](m, k) B[b](k, n) + beta * C[b](m, n) (+ bias[b * bias_batch + n]), b < batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub a: Strides,
    pub b: Strides,
    pub c: Strides,
    pub alpha: f32,
    pub beta: f32,
    pub bias_batch: usize,
}

impl Gemm {
    /// Panic with a readable message unless every element the product touches lies inside the given lengths.
    fn check(&self, c_len: usize, a_len: usize, b_len: usize) {
        if self.m == 0 || self.n == 0 || self.batch == 0 {
            return;
        }
        let mut operands = vec![("C", &self.c, self.m, self.n, c_len)];
        if self.k > 0 {
            operands.extend([("A", &self.a, self.m, self.k, a_len), ("B", &self.b, self.k, self.n, b_len)]);
        }
        for (what, l, rows, cols, len) in operands {
            if let Some(max) = l.max_index(self.batch, rows, cols) {
                assert!(max < len, "gemm: {what} ({rows}x{cols}, batch {}) reaches element {max} of {len}", self.batch);
            }
        }
    }
}

/// C[b](m, n) = alpha * sum_k A[b](m, k) B[b](k, n) + beta * C[b](m, n) (+ bias[n]); beta = 0 never reads C.
/// Each output sums k = 0, 1, ..., K-1 in order, as every GPU kernel does.
fn gemm_bias(c: &mut [f32], a: &[f32], b: &[f32], bias: Option<&[f32]>, dims: Gemm) {
    let Gemm { m, n, k, batch, a: la, b: lb, c: lc, alpha, beta, bias_batch } = dims;
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
pub fn gemm(c: &mut [f32], a: &[f32], b: &[f32], dims: Gemm) {
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
    matmul_forward_replicas(out, inp, weight, bias, bt, c, oc, 1, 0)
}

/// Replicated layers: out (R, BT, OC) = inp (R, BT, C) @ weight[r]^T + bias[r] for r < `replicas`, weight and bias
/// sliced from replica 0's tensor onwards, `param_stride` apart.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward_replicas(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    bt: usize,
    c: usize,
    oc: usize,
    replicas: usize,
    param_stride: usize,
) {
    // out[r] (BT, OC) = inp[r] (BT, C) @ weight[r]^T: B(k = i, n = o) = weight[r * param_stride + o * C + i]
    let dims = Gemm {
        m: bt,
        n: oc,
        k: c,
        batch: replicas,
        a: Strides::row_major(c, bt * c),
        b: Strides::transposed(c, param_stride),
        c: Strides::row_major(oc, bt * oc),
        alpha: 1.0,
        beta: 0.0,
        bias_batch: param_stride,
    };
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
    matmul_backward_replicas(dinp, dweight, dbias, dout, inp, weight, bt, c, oc, 1, 0)
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
    replicas: usize,
    param_stride: usize,
) {
    let acc = |m, n, k, a, b, c| Gemm { m, n, k, batch: replicas, a, b, c, alpha: 1.0, beta: 1.0, bias_batch: 0 };
    if let Some(dinp) = dinp {
        // dinp[r] (BT, C) += dout[r] (BT, OC) @ weight[r] (OC, C)
        let d = acc(
            bt,
            c,
            oc,
            Strides::row_major(oc, bt * oc),
            Strides::row_major(c, param_stride),
            Strides::row_major(c, bt * c),
        );
        gemm(dinp, dout, weight, d);
    }
    // dweight[r] (OC, C) += dout[r]^T (OC, BT) @ inp[r] (BT, C): A(m = o, k = t) = dout[r][t * OC + o]
    let d = acc(
        oc,
        c,
        bt,
        Strides::transposed(oc, bt * oc),
        Strides::row_major(c, bt * c),
        Strides::row_major(c, param_stride),
    );
    gemm(dweight, dout, inp, d);
    if let Some(dbias) = dbias {
        matmul_dbias_replicas(dbias, dout, bt, oc, replicas, param_stride);
    }
}

/// dbias[oc] += sum over rows of dout, summed as the kernel does: 8 strided partial sums, then those in order.
pub fn matmul_dbias(dbias: &mut [f32], dout: &[f32], bt: usize, oc: usize) {
    matmul_dbias_replicas(dbias, dout, bt, oc, 1, 0)
}

/// `matmul_dbias` per replica: dbias[r * param_stride + oc] += column sums of dout[r] (BT, OC).
pub fn matmul_dbias_replicas(
    dbias: &mut [f32],
    dout: &[f32],
    bt: usize,
    oc: usize,
    replicas: usize,
    param_stride: usize,
) {
    for r in 0..replicas {
        let dout = &dout[r * bt * oc..];
        let base = r * param_stride;
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
