//! Dispatches of `shaders/matmul.wgsl`: a batched, strided GEMM (nine kernels, `MatmulKernel`, chosen per shape by
//! measurement on the adapter in hand: `choose_kernel`; batches may come in groups, and causal attention's products
//! say where their zeros are: `GemmDims::grouped`, `CAUSAL_*`) and the linear layer built on it, `matmul_forward` /
//! `matmul_backward` (llm.c's names), also with a GELU in the product's epilogue (`matmul_forward_gelu`,
//! `matmul_backward_gelu`: a GPT MLP's two layers without separate GELU dispatches).
//!
//! Most of a transformer's training time is spent here. Every product the linear layer needs (out = inp W^T,
//! dinp += dout W, dweight += dout^T inp) is the same GEMM with different strides, so the kernels are tuned once
//! for all of them.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{Dispatch, Gpu, Tensor};

const SHADER: &str = "matmul";
const SRC: &str = include_str!("../../shaders/matmul.wgsl");
/// The subgroup kernels use matmul.wgsl's parameters, bindings and epilogue, so their module is both files; it is
/// compiled only on devices with subgroups (`MatmulKernel::Subgroup`, `MatmulKernel::SubgroupRows`).
const SHADER_SUBGROUP: &str = "matmul_subgroup";
pub(crate) const SRC_SUBGROUP: &str =
    concat!(include_str!("../../shaders/matmul.wgsl"), include_str!("../../shaders/matmul_subgroup.wgsl"));

/// Which GEMM kernel to run. All compute the same thing (same k order); they differ in speed only, and which is
/// fastest depends on the adapter and the shape, so `matmul_forward`/`matmul_backward`/`gemm` pick one per shape by
/// measurement (`choose_kernel`, `crate::gpu::tune`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulKernel {
    /// One invocation per output element, operands straight from global memory.
    Naive,
    /// 16x16 output tile per workgroup, operands staged through workgroup memory.
    Tiled16,
    /// 64x64 output tile per workgroup of 256 invocations, 4x4 outputs per invocation in registers.
    Blocked64,
    /// For few rows (M small, like the toy's batch of 8): one invocation per 4 output columns, 8 rows at a time in
    /// registers, so each element of B is read once per 8 rows; 16 invocations per workgroup.
    Skinny8,
    /// For CPU adapters: a 4x8 block per invocation with vec4 loads, no workgroup memory (needs unit-stride,
    /// 4-aligned operands; see `supports`).
    Vec4,
    /// For CPU adapters: Vec4's kernel with an 8x16 block per invocation, so each load serves twice the
    /// multiply-adds (same requirements as Vec4).
    Vec8,
    /// For CPU adapters with subgroups: a 16x8 block (24x8 where A and B are both row-major) per invocation whose
    /// rows of A the 8 lanes of a subgroup load once between them and share by subgroupBroadcast (same requirements
    /// as Vec4, and see `available`).
    Subgroup,
    /// For CPU adapters with subgroups and products with few columns (attention's per-head (T, T) @ (T, HS)): lanes
    /// across rows, 8 rows x 16 columns each, B's rows (or B^T's) shared by subgroupBroadcast; Vec4's requirements, or
    /// any A with B row-major and 4-aligned (A read as scalars: an LM head's backward with a vocabulary that is not a
    /// multiple of 4); and see `available`.
    SubgroupRows,
    /// For GPUs: 128x128 output tile per workgroup of 256 invocations, 8x8 outputs per invocation.
    Tile128,
}

impl MatmulKernel {
    pub const ALL: [MatmulKernel; 9] = [
        MatmulKernel::Naive,
        MatmulKernel::Tiled16,
        MatmulKernel::Blocked64,
        MatmulKernel::Skinny8,
        MatmulKernel::Vec4,
        MatmulKernel::Vec8,
        MatmulKernel::Subgroup,
        MatmulKernel::SubgroupRows,
        MatmulKernel::Tile128,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MatmulKernel::Naive => "naive",
            MatmulKernel::Tiled16 => "tiled16",
            MatmulKernel::Blocked64 => "blocked64",
            MatmulKernel::Skinny8 => "skinny8",
            MatmulKernel::Vec4 => "vec4",
            MatmulKernel::Vec8 => "vec8",
            MatmulKernel::Subgroup => "subgroup",
            MatmulKernel::SubgroupRows => "subgroup_rows",
            MatmulKernel::Tile128 => "tile128",
        }
    }

    pub fn from_name(name: &str) -> Option<MatmulKernel> {
        MatmulKernel::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether this kernel can compute `dims` (every kernel but the vec4 family, Vec4, Vec8 and Subgroup, computes
    /// any product).
    pub fn supports(self, dims: &GemmDims) -> bool {
        match self {
            MatmulKernel::Vec4 | MatmulKernel::Vec8 | MatmulKernel::Subgroup => vec4_variant(dims).is_some(),
            MatmulKernel::SubgroupRows => vec4_variant(dims).is_some() || b_rows_aligned(dims),
            _ => true,
        }
    }

    /// Whether this kernel runs on `gpu`: every kernel but Subgroup does. Subgroup needs subgroup operations, a
    /// minimum subgroup size of 8 (lanes 0..7 of a subgroup load the rows), and a first product checked against
    /// Vec4's (`subgroup_probe`), because how lanes map onto a workgroup is the one thing no limit states.
    pub fn available(self, gpu: &Gpu) -> bool {
        match self {
            MatmulKernel::Subgroup | MatmulKernel::SubgroupRows => {
                gpu.info.subgroup_min_size.is_some_and(|s| s >= 8)
                    && gpu.probe(
                        if self == MatmulKernel::Subgroup { "matmul subgroup" } else { "matmul subgroup_rows" },
                        SRC_SUBGROUP,
                        || subgroup_probe(gpu, self),
                    )
            }
            _ => true,
        }
    }

    fn module(self) -> (&'static str, &'static str) {
        match self {
            MatmulKernel::Subgroup | MatmulKernel::SubgroupRows => (SHADER_SUBGROUP, SRC_SUBGROUP),
            _ => (SHADER, SRC),
        }
    }

    fn entry(self, dims: &GemmDims) -> &'static str {
        match self {
            MatmulKernel::Naive => "gemm_naive",
            MatmulKernel::Tiled16 => "gemm_tiled16",
            MatmulKernel::Blocked64 => "gemm_blocked64",
            MatmulKernel::Skinny8 => "gemm_skinny8",
            MatmulKernel::Vec4 => match vec4_variant(dims) {
                Some(Vec4Variant::NN) => "gemm_v4nn",
                Some(Vec4Variant::NT) => "gemm_v4nt",
                Some(Vec4Variant::TN) => "gemm_v4tn",
                None => panic!("gemm: the vec4 kernel cannot compute {dims:?} (see MatmulKernel::supports)"),
            },
            MatmulKernel::Vec8 => match vec4_variant(dims) {
                Some(Vec4Variant::NN) => "gemm_v8nn",
                Some(Vec4Variant::NT) => "gemm_v8nt",
                Some(Vec4Variant::TN) => "gemm_v8tn",
                None => panic!("gemm: the vec8 kernel cannot compute {dims:?} (see MatmulKernel::supports)"),
            },
            MatmulKernel::Subgroup => match vec4_variant(dims) {
                Some(Vec4Variant::NN) => "gemm_sgnn",
                Some(Vec4Variant::NT) => "gemm_sgnt",
                Some(Vec4Variant::TN) => "gemm_sgtn",
                None => panic!("gemm: the subgroup kernel cannot compute {dims:?} (see MatmulKernel::supports)"),
            },
            MatmulKernel::SubgroupRows => match vec4_variant(dims) {
                Some(Vec4Variant::NN) => "gemm_srnn",
                Some(Vec4Variant::NT) => "gemm_srnt",
                Some(Vec4Variant::TN) => "gemm_srtn",
                None if b_rows_aligned(dims) => "gemm_srxn",
                None => panic!("gemm: the subgroup-rows kernel cannot compute {dims:?} (see MatmulKernel::supports)"),
            },
            MatmulKernel::Tile128 => "gemm_tile128",
        }
    }

    /// Output tile (rows, columns) per workgroup.
    fn tile(self, dims: &GemmDims) -> (usize, usize) {
        match self {
            MatmulKernel::Subgroup if vec4_variant(dims) == Some(Vec4Variant::NN) => (24, 128),
            MatmulKernel::Naive | MatmulKernel::Tiled16 => (16, 16),
            MatmulKernel::Blocked64 | MatmulKernel::Skinny8 => (64, 64),
            MatmulKernel::Vec4 => (4, 128),
            MatmulKernel::Vec8 => (8, 256),
            MatmulKernel::Subgroup => (16, 128),
            MatmulKernel::SubgroupRows => (64, 16),
            MatmulKernel::Tile128 => (128, 128),
        }
    }

    /// Storage binding numbers (a, b, c, bias, aux) of this kernel's entry point for `dims`.
    fn bindings(self, dims: &GemmDims) -> [u32; 5] {
        match self {
            // gemm_srxn reads A as scalars
            MatmulKernel::SubgroupRows if vec4_variant(dims).is_none() => [38, 20, 21, 22, 36],
            MatmulKernel::Naive => [1, 2, 3, 4, 31],
            MatmulKernel::Tiled16 => [5, 6, 7, 8, 32],
            MatmulKernel::Blocked64 => [9, 10, 11, 12, 33],
            MatmulKernel::Skinny8 => [15, 16, 17, 18, 35],
            MatmulKernel::Vec4 | MatmulKernel::Vec8 | MatmulKernel::Subgroup | MatmulKernel::SubgroupRows => {
                [19, 20, 21, 22, 36]
            }
            MatmulKernel::Tile128 => [23, 24, 25, 26, 37],
        }
    }
}

/// Which operand of a Vec4 product is stored transposed (see `shaders/matmul.wgsl`, gemm_v4nn/nt/tn).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vec4Variant {
    NN,
    NT,
    TN,
}

/// The Vec4 variant that computes `dims`, if any: its vec4 axes need unit stride and lengths that are multiples of
/// 4, and the other offsets and strides of A and B multiples of 4 (so every vec4 load is aligned).
fn vec4_variant(d: &GemmDims) -> Option<Vec4Variant> {
    let q = |x: usize| x.is_multiple_of(4);
    let starts = |l: &MatrixLayout| q(l.offset) && q(l.batch) && q(l.inner); // every batch's matrix 4-aligned
    let a_rows = d.a.col == 1 && starts(&d.a) && q(d.a.row) && q(d.k); // A (M, K) row-major
    let a_cols = d.a.row == 1 && starts(&d.a) && q(d.a.col) && q(d.m); // A stored (K, M)
    let b_rows = d.b.col == 1 && starts(&d.b) && q(d.b.row) && q(d.n); // B (K, N) row-major
    let b_cols = d.b.row == 1 && starts(&d.b) && q(d.b.col) && q(d.k); // B stored (N, K)
    if d.m == 0 || d.n == 0 || d.k == 0 {
        return None;
    }
    if a_rows && b_rows {
        Some(Vec4Variant::NN)
    } else if a_rows && b_cols {
        Some(Vec4Variant::NT)
    } else if a_cols && b_rows {
        Some(Vec4Variant::TN)
    } else {
        None
    }
}

/// Whether B is row-major with every row 4-aligned (N, its row stride, offset and batch strides multiples of 4): what
/// the subgroup-rows kernel needs of B when A is not aligned (`gemm_srxn`).
fn b_rows_aligned(d: &GemmDims) -> bool {
    let q = |x: usize| x.is_multiple_of(4);
    d.m > 0
        && d.n > 0
        && d.k > 0
        && d.b.col == 1
        && q(d.b.offset)
        && q(d.b.batch)
        && q(d.b.inner)
        && q(d.b.row)
        && q(d.n)
}

/// The kernel `gemm` uses under `DPO3D_KERNELS=rule` and where nothing can be measured (wasm): the register-blocked
/// GPU kernel, except for skinny products (M <= 64 rows, like the toy MLP's batches, or K <= 16, the weight gradient
/// of such a batch), where most of its 64 x 64 tile or 16-deep K tile would be idle.
pub const DEFAULT_KERNEL: MatmulKernel = MatmulKernel::Blocked64;

/// Where a matrix lives inside its tensor, in elements: element (b, row, col) is at
/// `offset + b * batch + row * row_stride + col * col_stride`; in a product whose batches come in groups
/// (`GemmDims::inner` > 1), at `offset + (b / inner) * batch + (b % inner) * self.inner + ...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatrixLayout {
    pub offset: usize,
    pub row: usize,
    pub col: usize,
    pub batch: usize,
    /// The stride between the batches of a group (0 where batches are not grouped).
    pub inner: usize,
}

impl MatrixLayout {
    /// A (rows, cols) matrix stored row by row; batches packed one after another.
    pub fn row_major(rows: usize, cols: usize) -> MatrixLayout {
        MatrixLayout { offset: 0, row: cols, col: 1, batch: rows * cols, inner: 0 }
    }

    /// A (rows, cols) matrix stored column by column, i.e. its transpose (cols, rows) stored row by row.
    pub fn col_major(rows: usize, cols: usize) -> MatrixLayout {
        MatrixLayout { offset: 0, row: 1, col: rows, batch: rows * cols, inner: 0 }
    }

    /// General strides.
    pub fn strided(row: usize, col: usize, batch: usize) -> MatrixLayout {
        MatrixLayout { offset: 0, row, col, batch, inner: 0 }
    }

    /// The same layout starting `offset` elements into the tensor.
    pub fn at(self, offset: usize) -> MatrixLayout {
        MatrixLayout { offset, ..self }
    }

    /// The same layout with batches in groups (see `GemmDims::grouped`): the batches of a group lie `inner` apart,
    /// the groups `batch` apart.
    pub fn grouped(self, inner: usize) -> MatrixLayout {
        MatrixLayout { inner, ..self }
    }

    /// The largest element index a (batch, rows, cols) matrix touches (None when it is empty), batches ungrouped.
    pub fn max_index(&self, batch: usize, rows: usize, cols: usize) -> Option<usize> {
        self.max_index_grouped(batch, 1, rows, cols)
    }

    /// `max_index` for batches in groups of `inner` (`batch` a multiple of it).
    pub fn max_index_grouped(&self, batch: usize, inner: usize, rows: usize, cols: usize) -> Option<usize> {
        if batch == 0 || rows == 0 || cols == 0 {
            return None;
        }
        let (groups, inner) = (batch.div_ceil(inner), inner.min(batch));
        Some(
            self.offset
                + (groups - 1) * self.batch
                + (inner - 1) * self.inner
                + (rows - 1) * self.row
                + (cols - 1) * self.col,
        )
    }
}

/// A batched strided GEMM: `C[b](m, n) = alpha * sum_k A[b](m, k) B[b](k, n) + beta * C[b](m, n)` for b < batch,
/// A (M, K), B (K, N), C (M, N) addressed through their `MatrixLayout`s. beta = 0 never reads C; beta = 1
/// accumulates. Shared by the GPU kernels and the CPU mirror (`crate::reference::matmul::gemm`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmDims {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub a: MatrixLayout,
    pub b: MatrixLayout,
    pub c: MatrixLayout,
    pub alpha: f32,
    pub beta: f32,
    /// The bias's batch stride: 0 adds the same bias (length N) to every batch; replicated linear layers give each
    /// batch its own.
    pub bias_batch: usize,
    /// Batches come in groups of `inner` (1: ungrouped): batch b is group b / inner, member b % inner, and each
    /// layout's `inner` stride separates the members of a group. Attention's per-head products are grouped by
    /// sequence (B groups of NH heads), since head h of sequence b starts at b * T * 3C + h * HS.
    pub inner: usize,
    /// Causal attention's products: `CAUSAL_C`, `CAUSAL_A_LOWER`, `CAUSAL_A_UPPER` bits (0: a plain product).
    pub causal: u32,
}

/// C(m, n) for n > m is written as 0 (attention's scores above the diagonal), whatever alpha, beta and the bias.
pub const CAUSAL_C: u32 = 1;
/// The caller promises A(m, k) = 0 for k > m; kernels may skip those terms (the sums are the same).
pub const CAUSAL_A_LOWER: u32 = 2;
/// The caller promises A(m, k) = 0 for k < m; kernels may skip those terms.
pub const CAUSAL_A_UPPER: u32 = 4;

impl GemmDims {
    /// C (M, N) = A (M, K) @ B (K, N), all row-major and contiguous, batch 1, alpha 1, beta 0.
    pub fn new(m: usize, n: usize, k: usize) -> GemmDims {
        GemmDims {
            m,
            n,
            k,
            batch: 1,
            a: MatrixLayout::row_major(m, k),
            b: MatrixLayout::row_major(k, n),
            c: MatrixLayout::row_major(m, n),
            alpha: 1.0,
            beta: 0.0,
            bias_batch: 0,
            inner: 1,
            causal: 0,
        }
    }

    /// `batch` products; keeps the layouts' batch strides (packed by default).
    pub fn batched(self, batch: usize) -> GemmDims {
        GemmDims { batch, ..self }
    }

    /// A is stored transposed: the buffer holds A^T (K, M) row-major.
    pub fn transpose_a(self) -> GemmDims {
        GemmDims { a: MatrixLayout::col_major(self.m, self.k), ..self }
    }

    /// B is stored transposed: the buffer holds B^T (N, K) row-major (a linear layer's weight).
    pub fn transpose_b(self) -> GemmDims {
        GemmDims { b: MatrixLayout::col_major(self.k, self.n), ..self }
    }

    pub fn with_a(self, a: MatrixLayout) -> GemmDims {
        GemmDims { a, ..self }
    }

    pub fn with_b(self, b: MatrixLayout) -> GemmDims {
        GemmDims { b, ..self }
    }

    pub fn with_c(self, c: MatrixLayout) -> GemmDims {
        GemmDims { c, ..self }
    }

    pub fn scaled(self, alpha: f32, beta: f32) -> GemmDims {
        GemmDims { alpha, beta, ..self }
    }

    /// Batch b adds bias[b * stride + n] instead of bias[n].
    pub fn with_bias_batch(self, stride: usize) -> GemmDims {
        GemmDims { bias_batch: stride, ..self }
    }

    /// Batches in groups of `inner` (see the field); the layouts' `inner` strides say where a group's members lie.
    pub fn grouped(self, inner: usize) -> GemmDims {
        GemmDims { inner, ..self }
    }

    /// Adds the `CAUSAL_*` bits `bits`.
    pub fn causal(self, bits: u32) -> GemmDims {
        GemmDims { causal: self.causal | bits, ..self }
    }

    /// beta = 1: add the product onto C (backward passes).
    pub fn accumulate(self) -> GemmDims {
        GemmDims { beta: 1.0, ..self }
    }

    /// Panic with a readable message unless every element the product touches lies inside the given lengths.
    pub fn check(&self, c_len: usize, a_len: usize, b_len: usize) {
        assert!(
            self.inner >= 1 && self.batch.is_multiple_of(self.inner),
            "gemm: batch {} is not made of whole groups of {}: {self:?}",
            self.batch,
            self.inner
        );
        let fits = |what: &str, l: &MatrixLayout, rows: usize, cols: usize, len: usize| {
            if let Some(max) = l.max_index_grouped(self.batch, self.inner, rows, cols) {
                assert!(
                    max < len,
                    "gemm: {what} ({rows}x{cols}, batch {}) reaches element {max} of a tensor of {len}: {self:?}",
                    self.batch
                );
            }
        };
        if self.m == 0 || self.n == 0 || self.batch == 0 {
            return;
        }
        fits("C", &self.c, self.m, self.n, c_len);
        fits("A", &self.a, self.m, self.k, a_len);
        fits("B", &self.b, self.k, self.n, b_len);
    }
}

/// Floating-point operations of a (batched) M x N x K product: one multiply and one add per term.
pub fn matmul_flops(m: usize, n: usize, k: usize, batch: usize) -> f64 {
    2.0 * m as f64 * n as f64 * k as f64 * batch as f64
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    a: [u32; 4], // offset, row, col, batch strides
    b: [u32; 4],
    c: [u32; 4],
    alpha: f32,
    beta: f32,
    has_bias: u32,
    bias_bs: u32,
    splits: u32,
    k_chunk: u32,
    act: u32,
    causal: u32,
    inner: u32,
    /// The `inner` strides of A, B and C.
    inner_strides: [u32; 3],
}

fn u(x: usize, what: &str) -> u32 {
    u32::try_from(x).unwrap_or_else(|_| panic!("matmul: {what} = {x} does not fit in u32"))
}

fn layout_words(l: &MatrixLayout) -> [u32; 4] {
    [u(l.offset, "offset"), u(l.row, "row stride"), u(l.col, "column stride"), u(l.batch, "batch stride")]
}

fn params(dims: &GemmDims, has_bias: bool) -> Params {
    Params {
        m: u(dims.m, "M"),
        n: u(dims.n, "N"),
        k: u(dims.k, "K"),
        batch: u(dims.batch, "batch"),
        a: layout_words(&dims.a),
        b: layout_words(&dims.b),
        c: layout_words(&dims.c),
        alpha: dims.alpha,
        beta: dims.beta,
        has_bias: has_bias as u32,
        bias_bs: u(dims.bias_batch, "bias batch stride"),
        splits: 1,
        k_chunk: u(dims.k, "K"),
        act: 0,
        causal: dims.causal,
        inner: u(dims.inner, "inner"),
        inner_strides: [
            u(dims.a.inner, "A's inner stride"),
            u(dims.b.inner, "B's inner stride"),
            u(dims.c.inner, "C's inner stride"),
        ],
    }
}

fn grid_dim(n: usize, what: &str) -> u32 {
    let g = n.max(1);
    assert!(g <= 65535, "matmul: {g} workgroups along {what} exceed WebGPU's 65535 per grid dimension");
    g as u32
}

/// A GEMM's GELU epilogue (`shaders/matmul.wgsl`): the MLP's activation fused into the product before or after it.
#[derive(Clone, Copy, Debug)]
enum Act<'a> {
    /// C is the product (+ bias), nothing else.
    None,
    /// C = the product + bias (GELU's input, which the backward needs), and `out` = gelu(C), laid out like C.
    Gelu { out: &'a Tensor },
    /// C = alpha * (product ⊙ gelu'(pre)) + beta * C: the gradient carried back through a GELU whose input `pre`
    /// is laid out like C (the dinp product of the layer after the GELU).
    Dgelu { pre: &'a Tensor },
}

impl Act<'_> {
    fn code(&self) -> u32 {
        match self {
            Act::None => 0,
            Act::Gelu { .. } => 1,
            Act::Dgelu { .. } => 2,
        }
    }
}

/// The GEMM kernel `kernel` with an optional bias (length N) added to every row of C.
fn gemm_dispatch(
    gpu: &Gpu,
    kernel: MatmulKernel,
    c: &Tensor,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    dims: GemmDims,
) -> Dispatch {
    gemm_act_dispatch(gpu, kernel, c, a, b, bias, Act::None, dims)
}

/// `gemm_dispatch` with a GELU epilogue.
#[allow(clippy::too_many_arguments)]
fn gemm_act_dispatch(
    gpu: &Gpu,
    kernel: MatmulKernel,
    c: &Tensor,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    act: Act,
    dims: GemmDims,
) -> Dispatch {
    dims.check(c.len, a.len, b.len);
    if let Some(bias) = bias {
        let need = (dims.batch.max(1) - 1) * dims.bias_batch + dims.n;
        assert!(bias.len >= need, "gemm: bias of {} elements, {need} needed: {dims:?}", bias.len);
    }
    assert!(kernel.supports(&dims), "gemm: the {} kernel cannot compute {dims:?}", kernel.name());
    let aux = match act {
        Act::None => &gpu.unused,
        Act::Gelu { out } => out,
        Act::Dgelu { pre } => pre,
    };
    if !matches!(act, Act::None) {
        assert!(aux.len >= c.len, "gemm: the GELU epilogue's tensor ({}) is shorter than C ({})", aux.len, c.len);
    }
    let p = Params { act: act.code(), ..params(&dims, bias.is_some()) };
    let (tile_m, tile_n) = kernel.tile(&dims);
    let groups =
        [grid_dim(dims.n.div_ceil(tile_n), "N"), grid_dim(dims.m.div_ceil(tile_m), "M"), grid_dim(dims.batch, "batch")];
    let [ba, bb, bc, bbias, baux] = kernel.bindings(&dims);
    // Without a bias the entry point still declares the binding; A stands in (read-only, never read).
    let bias = bias.unwrap_or(a);
    assert!(
        !matches!(kernel, MatmulKernel::Subgroup | MatmulKernel::SubgroupRows) || gpu.info.subgroup_min_size.is_some(),
        "gemm: the subgroup kernel needs a device with subgroups (see MatmulKernel::available)"
    );
    let (shader, src) = kernel.module();
    Dispatch::new(
        gpu,
        shader,
        src,
        kernel.entry(&dims),
        Some(bytemuck::bytes_of(&p)),
        &[(ba, a), (bb, b), (bc, c), (bbias, bias), (baux, aux)],
        groups,
    )
}

/// C = alpha * A @ B + beta * C with the kernel chosen for this shape on this adapter; see `GemmDims`.
pub fn gemm(gpu: &Gpu, c: &Tensor, a: &Tensor, b: &Tensor, dims: GemmDims) -> Dispatch {
    gemm_dispatch(gpu, choose_kernel(gpu, &dims, false), c, a, b, None, dims)
}

/// The rule's kernel for a product (see `DEFAULT_KERNEL`).
pub fn rule_kernel(dims: &GemmDims) -> MatmulKernel {
    if dims.m <= 64 || dims.k <= 16 {
        MatmulKernel::Skinny8
    } else {
        DEFAULT_KERNEL
    }
}

/// The kernel for `dims` on this adapter: measured once per shape class (`crate::gpu::tune`) among the kernels
/// that can compute it (all but Tiled16, which no adapter measured so far runs faster than Blocked64; it stays for
/// the tests and the bench). The shape class is (M, N, K in classes, which operands are transposed, alignment), not
/// the batch: a replicated layer (batch = replicas) uses the kernel a lone layer uses, so replicas stay bit-for-bit
/// equal to lone runs.
pub fn choose_kernel(gpu: &Gpu, dims: &GemmDims, has_bias: bool) -> MatmulKernel {
    let rule = rule_kernel(dims);
    let candidates = gemm_candidates(gpu, dims, &[MatmulKernel::Naive]);
    let key = shape_key(dims);
    let name = gpu.tuner.choose("matmul", &key, &candidates, |name| {
        let kernel = MatmulKernel::from_name(name)?;
        time_gemm(gpu, kernel, dims, has_bias)
    });
    MatmulKernel::from_name(name).unwrap_or(rule)
}

/// The kernels the tuner times for `dims` on `gpu`, the rule's choice first: the vec4 family (Vec4, Vec8, Subgroup;
/// where they apply and run), Skinny8, Blocked64, Tile128, then `extra`.
fn gemm_candidates(gpu: &Gpu, dims: &GemmDims, extra: &[MatmulKernel]) -> Vec<&'static str> {
    let rule = rule_kernel(dims);
    let mut candidates = vec![rule.name()];
    let others = [
        MatmulKernel::Vec4,
        MatmulKernel::Vec8,
        MatmulKernel::Subgroup,
        MatmulKernel::SubgroupRows,
        MatmulKernel::Skinny8,
        MatmulKernel::Blocked64,
        MatmulKernel::Tile128,
    ];
    for &k in others.iter().chain(extra) {
        if k != rule && k.supports(dims) && k.available(gpu) {
            candidates.push(k.name());
        }
    }
    candidates
}

/// The tuner's shape class of a product: (M, N, K) in classes (`crate::gpu::tune::class`), which operands are
/// transposed, whether the vec4 kernel applies (else whether B's rows are 4-aligned), whether it accumulates, the
/// causal offset. Not the batch (see `choose_kernel`).
fn shape_key(dims: &GemmDims) -> String {
    let layout = |l: &MatrixLayout| {
        if l.col == 1 {
            "n"
        } else if l.row == 1 {
            "t"
        } else {
            "s"
        }
    };
    let v4 = vec4_variant(dims).is_some();
    format!(
        "{} {}{}{}{}{}{}",
        crate::gpu::tune::classes(&[dims.m, dims.n, dims.k]),
        layout(&dims.a),
        layout(&dims.b),
        if v4 { " v4" } else { "" },
        // SubgroupRows' other condition (`supports`): with it in the key, a shape class has one candidate list
        if !v4 && b_rows_aligned(dims) { " b4" } else { "" },
        if dims.beta != 0.0 { " acc" } else { "" },
        if dims.causal != 0 { format!(" causal{}", dims.causal) } else { String::new() }
    )
}

/// Seconds per run of `kernel` on scratch buffers shaped like `dims` (batch 1), or None if they cannot be made.
fn time_gemm(gpu: &Gpu, kernel: MatmulKernel, dims: &GemmDims, has_bias: bool) -> Option<f64> {
    let d = GemmDims { batch: 1, inner: 1, ..*dims };
    let len = |l: &MatrixLayout, r: usize, c: usize| l.max_index(1, r, c).map_or(1, |i| i + 1);
    let a = Tensor::zeros(gpu, "tune a", len(&d.a, d.m, d.k)).ok()?;
    let b = Tensor::zeros(gpu, "tune b", len(&d.b, d.k, d.n)).ok()?;
    let c = Tensor::zeros(gpu, "tune c", len(&d.c, d.m, d.n)).ok()?;
    let bias = if has_bias { Some(Tensor::zeros(gpu, "tune bias", d.n).ok()?) } else { None };
    let dispatch = gemm_dispatch(gpu, kernel, &c, &a, &b, bias.as_ref(), d);
    crate::gpu::tune::time_dispatch(gpu, &dispatch)
}

/// Whether a subgroup kernel (Subgroup or SubgroupRows) computes what Vec4 computes on this device, on products that
/// cover its variants and its edges (rows and columns past M and N inside a block, two workgroups across N, or, for
/// the rows kernel, across M): the check behind `MatmulKernel::available`. Run once per device and kernel; false also
/// when the device cannot run the products.
fn subgroup_probe(gpu: &Gpu, kernel: MatmulKernel) -> bool {
    #[cfg(target_arch = "wasm32")]
    {
        let _ = (gpu, kernel);
        false // wgpu offers no subgroups in a browser, so this is never asked there
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        // Errors recorded before the probe belong to the caller's next check: leave them there, and the kernel out.
        if gpu.errors_pending() {
            return false;
        }
        let cases = if kernel == MatmulKernel::SubgroupRows {
            vec![
                GemmDims::new(70, 20, 12).scaled(1.0, 0.5),
                GemmDims::new(9, 36, 8),
                GemmDims::new(66, 20, 12).transpose_b(),
                GemmDims::new(76, 24, 7).transpose_a(),
                GemmDims::new(70, 20, 13).scaled(1.0, 0.5), // gemm_srxn: rows of A 13 floats apart
                GemmDims::new(13, 24, 9).transpose_a(),     // gemm_srxn: A^T's rows 13 floats apart
            ]
        } else {
            vec![
                GemmDims::new(24, 136, 12).scaled(1.0, 0.5),
                GemmDims::new(19, 36, 8).transpose_b(),
                GemmDims::new(20, 140, 7).transpose_a(),
            ]
        };
        cases.into_iter().enumerate().all(|(i, d)| {
            let len = |l: &MatrixLayout, r: usize, c: usize| l.max_index(d.batch, r, c).map_or(1, |x| x + 1);
            let data = |seed: u64, n: usize| {
                let mut v = vec![0f32; n];
                crate::rng::Rng::new(seed).fill_normal(&mut v, 1.0);
                v
            };
            let seed = 3 * i as u64;
            let a = data(seed, len(&d.a, d.m, d.k));
            let b = data(seed + 1, len(&d.b, d.k, d.n));
            let c0 = data(seed + 2, len(&d.c, d.m, d.n));
            let run = |kernel: MatmulKernel| -> crate::Result<Vec<f32>> {
                let ta = Tensor::from_f32(gpu, "probe a", &a)?;
                let tb = Tensor::from_f32(gpu, "probe b", &b)?;
                let tc = Tensor::from_f32(gpu, "probe c", &c0)?;
                // The probe's own scopes, so that what it raises fails the probe instead of a caller's scope; a
                // kernel the driver rejected is recorded for `check` (see `Gpu::pipeline`), which takes it here.
                let scopes = gpu.push_scopes();
                let mut plan = crate::gpu::Plan::new();
                plan.push(gemm_dispatch(gpu, kernel, &tc, &ta, &tb, None, d));
                plan.submit(gpu);
                pollster::block_on(gpu.pop_scopes(scopes, "the subgroup GEMM probe"))?;
                gpu.check()?;
                tc.to_vec(gpu)
            };
            // Vec4 where it applies (the kernel these were derived from), else the naive kernel.
            let reference = if MatmulKernel::Vec4.supports(&d) { MatmulKernel::Vec4 } else { MatmulKernel::Naive };
            match (run(kernel), run(reference)) {
                (Ok(got), Ok(want)) => got.iter().zip(&want).all(|(g, w)| (g - w).abs() <= 1e-4 * w.abs().max(1.0)),
                _ => false,
            }
        })
    }
}

/// `gemm` with a chosen kernel (tests and benchmarks compare them).
pub fn gemm_with(gpu: &Gpu, kernel: MatmulKernel, c: &Tensor, a: &Tensor, b: &Tensor, dims: GemmDims) -> Dispatch {
    gemm_dispatch(gpu, kernel, c, a, b, None, dims)
}

/// Independent copies of a linear layer evaluated by the same dispatches: replica r has its own weight and bias,
/// `param_stride` elements after replica r - 1's, and its own `bt` rows of input and output (packed one replica after
/// another). A model built this way trains several seeds (or data scenarios) at once with the dispatch count of
/// one, which is what small models on launch-bound GPUs (and CPU adapters) need. Each replica's products are the
/// same kernel over the same k order as a lone layer, so a replica computes bit-for-bit what it would alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replicas {
    pub count: usize,
    /// Elements between one replica's parameter (or gradient) tensor and the next one's.
    pub param_stride: usize,
}

impl Replicas {
    /// A single layer.
    pub const ONE: Replicas = Replicas { count: 1, param_stride: 0 };

    pub fn new(count: usize, param_stride: usize) -> Replicas {
        Replicas { count, param_stride }
    }

    /// Elements a parameter tensor of `len` elements per replica spans across all replicas.
    pub fn span(&self, len: usize) -> usize {
        (self.count.max(1) - 1) * self.param_stride + len
    }
}

/// `gemm_with` plus a bias added to every row of C (`dims.bias_batch` apart per batch).
pub fn gemm_bias_with(
    gpu: &Gpu,
    kernel: MatmulKernel,
    c: &Tensor,
    a: &Tensor,
    b: &Tensor,
    bias: &Tensor,
    dims: GemmDims,
) -> Dispatch {
    gemm_dispatch(gpu, kernel, c, a, b, Some(bias), dims)
}

/// out = inp @ weight^T + bias (overwrites out).
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward(
    gpu: &Gpu,
    out: &Tensor,          // (BT, OC)
    inp: &Tensor,          // (BT, C)
    weight: &Tensor,       // (OC, C)
    bias: Option<&Tensor>, // (OC)
    bt: usize,
    c: usize,
    oc: usize,
) -> Dispatch {
    let kernel = choose_kernel(gpu, &forward_dims(bt, c, oc, Replicas::ONE), bias.is_some());
    matmul_forward_with(gpu, kernel, out, inp, weight, bias, bt, c, oc)
}

/// `matmul_forward` with a chosen kernel.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward_with(
    gpu: &Gpu,
    kernel: MatmulKernel,
    out: &Tensor,          // (BT, OC)
    inp: &Tensor,          // (BT, C)
    weight: &Tensor,       // (OC, C)
    bias: Option<&Tensor>, // (OC)
    bt: usize,
    c: usize,
    oc: usize,
) -> Dispatch {
    forward_dispatch(gpu, kernel, out, inp, weight, bias, bt, c, oc, Replicas::ONE)
}

/// Where a linear layer's forward product reads its weight (OC, C) from. On CPU adapters the product with B
/// transposed (`inp @ weight^T` read as is) runs 1.3-1.4x slower than the plain one, so a copy of weight^T written by
/// `elementwise::transpose4` at the start of the forward can pay for itself; the tuner measures both per shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardForm {
    /// `matmul_forward`: the weight read as it is.
    Direct,
    /// `elementwise::transpose4` into a (C, OC) copy, then `matmul_forward_t` on it.
    Transposed,
}

/// The tuner's form for a linear layer's forward at this shape (family "linear", key "forward BTxOCxC", plus
/// " gelu" for the GELU-epilogue form): the direct product against the transpose and the plain product, each timed
/// with the GEMM kernel the tuner chose for it. `Direct` where C or OC is not a multiple of 4 (`transpose4`'s blocks).
pub fn choose_forward_form(gpu: &Gpu, bt: usize, c: usize, oc: usize, has_bias: bool, gelu: bool) -> ForwardForm {
    if !c.is_multiple_of(4) || !oc.is_multiple_of(4) {
        return ForwardForm::Direct;
    }
    let key = format!("forward {}{}", crate::gpu::tune::classes(&[bt, oc, c]), if gelu { " gelu" } else { "" });
    // Both forms' dispatches are built (their kernels chosen) before this choice is timed: a choice made inside
    // another's timing would wait for the tuner's lock forever.
    let z = |what: &str, n: usize| Tensor::zeros(gpu, what, n).ok();
    let scratch = (|| {
        let (inp, w, wt) = (z("tune fwd inp", bt * c)?, z("tune fwd w", oc * c)?, z("tune fwd wt", oc * c)?);
        Some((inp, w, wt, z("tune fwd out", bt * oc)?, z("tune fwd act", bt * oc)?, z("tune fwd bias", oc)?))
    })();
    let Some((inp, w, wt, out, act, bias)) = scratch else { return ForwardForm::Direct };
    let bias = has_bias.then_some(&bias);
    let (direct, plain) = if gelu {
        (
            matmul_forward_gelu(gpu, &act, &out, &inp, &w, bias, bt, c, oc),
            matmul_forward_gelu_t(gpu, &act, &out, &inp, &wt, bias, bt, c, oc),
        )
    } else {
        (matmul_forward(gpu, &out, &inp, &w, bias, bt, c, oc), matmul_forward_t(gpu, &out, &inp, &wt, bias, bt, c, oc))
    };
    let transpose = crate::ops::elementwise::transpose4(gpu, &wt, &w, oc, c);
    let time = |d: &Dispatch| crate::gpu::tune::time_dispatch(gpu, d);
    let name = gpu.tuner.choose("linear", &key, &["direct", "transposed"], |k| match k {
        "direct" => time(&direct),
        _ => Some(time(&transpose)? + time(&plain)?),
    });
    if name == "transposed" {
        ForwardForm::Transposed
    } else {
        ForwardForm::Direct
    }
}

/// out (BT, OC) = inp (BT, C) @ weight_t (C, OC) + bias: `matmul_forward` given the weight's transpose
/// (`ForwardForm::Transposed`), with the kernel chosen for this plain product.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward_t(
    gpu: &Gpu,
    out: &Tensor,          // (BT, OC)
    inp: &Tensor,          // (BT, C)
    weight_t: &Tensor,     // (C, OC)
    bias: Option<&Tensor>, // (OC)
    bt: usize,
    c: usize,
    oc: usize,
) -> Dispatch {
    let dims = GemmDims::new(bt, oc, c);
    gemm_dispatch(gpu, choose_kernel(gpu, &dims, bias.is_some()), out, inp, weight_t, bias, dims)
}

/// `matmul_forward_gelu` given the weight's transpose (C, OC): pre = inp @ weight_t + bias, out = gelu(pre).
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward_gelu_t(
    gpu: &Gpu,
    out: &Tensor,          // (BT, OC) gelu(pre)
    pre: &Tensor,          // (BT, OC)
    inp: &Tensor,          // (BT, C)
    weight_t: &Tensor,     // (C, OC)
    bias: Option<&Tensor>, // (OC)
    bt: usize,
    c: usize,
    oc: usize,
) -> Dispatch {
    let dims = GemmDims::new(bt, oc, c);
    let kernel = choose_kernel(gpu, &dims, bias.is_some());
    gemm_act_dispatch(gpu, kernel, pre, inp, weight_t, bias, Act::Gelu { out }, dims)
}

/// `matmul_forward` for `rep.count` replicated layers: out (R, BT, OC) = inp (R, BT, C) @ weight[r]^T + bias[r], with
/// `weight` and `bias` views starting at replica 0's tensor and spanning `rep.span(len)` elements.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward_replicas(
    gpu: &Gpu,
    out: &Tensor,          // (R, BT, OC)
    inp: &Tensor,          // (R, BT, C)
    weight: &Tensor,       // R x (OC, C), param_stride apart
    bias: Option<&Tensor>, // R x (OC), param_stride apart
    bt: usize,
    c: usize,
    oc: usize,
    rep: Replicas,
) -> Dispatch {
    let kernel = choose_kernel(gpu, &forward_dims(bt, c, oc, rep), bias.is_some());
    forward_dispatch(gpu, kernel, out, inp, weight, bias, bt, c, oc, rep)
}

#[allow(clippy::too_many_arguments)]
fn forward_dispatch(
    gpu: &Gpu,
    kernel: MatmulKernel,
    out: &Tensor,
    inp: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    bt: usize,
    c: usize,
    oc: usize,
    rep: Replicas,
) -> Dispatch {
    gemm_dispatch(gpu, kernel, out, inp, weight, bias, forward_dims(bt, c, oc, rep))
}

/// out (BT, OC) = inp (BT, C) @ B (C, OC) where B(c, oc) = weight[oc, c], per replica.
pub fn forward_dims(bt: usize, c: usize, oc: usize, rep: Replicas) -> GemmDims {
    let d = GemmDims::new(bt, oc, c).transpose_b().batched(rep.count);
    let b = MatrixLayout { batch: rep.param_stride, ..d.b };
    d.with_b(b).with_bias_batch(rep.param_stride)
}

/// dinp (BT, C) += dout (BT, OC) @ weight (OC, C), per replica.
pub fn dinp_dims(bt: usize, c: usize, oc: usize, rep: Replicas) -> GemmDims {
    let d = GemmDims::new(bt, c, oc).accumulate().batched(rep.count);
    let b = MatrixLayout { batch: rep.param_stride, ..d.b };
    d.with_b(b)
}

/// dweight (OC, C) += dout^T (OC, BT) @ inp (BT, C), per replica.
pub fn dweight_dims(bt: usize, c: usize, oc: usize, rep: Replicas) -> GemmDims {
    let d = GemmDims::new(oc, c, bt).transpose_a().accumulate().batched(rep.count);
    let cl = MatrixLayout { batch: rep.param_stride, ..d.c };
    d.with_c(cl)
}

/// The linear layer's gradients, accumulated (+=): dinp += dout @ weight (skipped when None),
/// dweight += dout^T @ inp, dbias += column sums of dout (skipped when None).
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    gpu: &Gpu,
    dinp: Option<&Tensor>,  // (BT, C)
    dweight: &Tensor,       // (OC, C)
    dbias: Option<&Tensor>, // (OC)
    dout: &Tensor,          // (BT, OC)
    inp: &Tensor,           // (BT, C)
    weight: &Tensor,        // (OC, C)
    bt: usize,
    c: usize,
    oc: usize,
) -> Vec<Dispatch> {
    matmul_backward_replicas(gpu, dinp, dweight, dbias, dout, inp, weight, bt, c, oc, Replicas::ONE)
}

/// `matmul_backward` for replicated layers (see `matmul_forward_replicas`): `dweight` and `dbias` are views spanning
/// all replicas' gradients, `param_stride` apart like the parameters.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward_replicas(
    gpu: &Gpu,
    dinp: Option<&Tensor>,  // (R, BT, C)
    dweight: &Tensor,       // R x (OC, C)
    dbias: Option<&Tensor>, // R x (OC)
    dout: &Tensor,          // (R, BT, OC)
    inp: &Tensor,           // (R, BT, C)
    weight: &Tensor,        // R x (OC, C)
    bt: usize,
    c: usize,
    oc: usize,
    rep: Replicas,
) -> Vec<Dispatch> {
    backward_dispatches(
        gpu,
        (choose_kernel(gpu, &dinp_dims(bt, c, oc, rep), false), choose_weight_grad(gpu, &dweight_dims(bt, c, oc, rep))),
        dinp,
        dweight,
        dbias,
        dout,
        inp,
        weight,
        bt,
        c,
        oc,
        rep,
        Act::None,
    )
}

/// `matmul_backward` with a chosen GEMM kernel.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward_with(
    gpu: &Gpu,
    kernel: MatmulKernel,
    dinp: Option<&Tensor>,  // (BT, C)
    dweight: &Tensor,       // (OC, C)
    dbias: Option<&Tensor>, // (OC)
    dout: &Tensor,          // (BT, OC)
    inp: &Tensor,           // (BT, C)
    weight: &Tensor,        // (OC, C)
    bt: usize,
    c: usize,
    oc: usize,
) -> Vec<Dispatch> {
    backward_dispatches(
        gpu,
        (kernel, Some(kernel)),
        dinp,
        dweight,
        dbias,
        dout,
        inp,
        weight,
        bt,
        c,
        oc,
        Replicas::ONE,
        Act::None,
    )
}

/// `matmul_forward` and a GELU in one dispatch (a GPT MLP's c_fc; llm.c's gelu_fusion): pre = inp @ weight^T + bias,
/// the GELU's input, which the backward needs; out = gelu(pre). Gives `matmul_forward` + `elementwise::gelu_forward`'s
/// results.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward_gelu(
    gpu: &Gpu,
    out: &Tensor,          // (BT, OC) gelu(pre)
    pre: &Tensor,          // (BT, OC)
    inp: &Tensor,          // (BT, C)
    weight: &Tensor,       // (OC, C)
    bias: Option<&Tensor>, // (OC)
    bt: usize,
    c: usize,
    oc: usize,
) -> Dispatch {
    let kernel = choose_kernel(gpu, &forward_dims(bt, c, oc, Replicas::ONE), bias.is_some());
    matmul_forward_gelu_with(gpu, kernel, out, pre, inp, weight, bias, bt, c, oc)
}

/// `matmul_forward_gelu` with a chosen kernel.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward_gelu_with(
    gpu: &Gpu,
    kernel: MatmulKernel,
    out: &Tensor,          // (BT, OC) gelu(pre)
    pre: &Tensor,          // (BT, OC)
    inp: &Tensor,          // (BT, C)
    weight: &Tensor,       // (OC, C)
    bias: Option<&Tensor>, // (OC)
    bt: usize,
    c: usize,
    oc: usize,
) -> Dispatch {
    let dims = forward_dims(bt, c, oc, Replicas::ONE);
    gemm_act_dispatch(gpu, kernel, pre, inp, weight, bias, Act::Gelu { out }, dims)
}

/// `matmul_backward` of a layer whose input is gelu(pre) (a GPT MLP's c_proj), with the GELU's backward in the dinp
/// product's epilogue: dpre += (dout @ weight) ⊙ gelu'(pre), dweight += dout^T @ inp, dbias += column sums of dout.
/// `inp` is gelu(pre), the forward's input of this layer. Gives `matmul_backward` into a scratch d(gelu(pre)) followed
/// by `elementwise::gelu_backward`, without the scratch.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward_gelu(
    gpu: &Gpu,
    dpre: &Tensor,          // (BT, C)
    dweight: &Tensor,       // (OC, C)
    dbias: Option<&Tensor>, // (OC)
    dout: &Tensor,          // (BT, OC)
    inp: &Tensor,           // (BT, C) gelu(pre)
    pre: &Tensor,           // (BT, C)
    weight: &Tensor,        // (OC, C)
    bt: usize,
    c: usize,
    oc: usize,
) -> Vec<Dispatch> {
    let rep = Replicas::ONE;
    let kernels =
        (choose_kernel(gpu, &dinp_dims(bt, c, oc, rep), false), choose_weight_grad(gpu, &dweight_dims(bt, c, oc, rep)));
    let act = Act::Dgelu { pre };
    backward_dispatches(gpu, kernels, Some(dpre), dweight, dbias, dout, inp, weight, bt, c, oc, rep, act)
}

/// `matmul_backward_gelu` with a chosen GEMM kernel.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward_gelu_with(
    gpu: &Gpu,
    kernel: MatmulKernel,
    dpre: &Tensor,          // (BT, C)
    dweight: &Tensor,       // (OC, C)
    dbias: Option<&Tensor>, // (OC)
    dout: &Tensor,          // (BT, OC)
    inp: &Tensor,           // (BT, C) gelu(pre)
    pre: &Tensor,           // (BT, C)
    weight: &Tensor,        // (OC, C)
    bt: usize,
    c: usize,
    oc: usize,
) -> Vec<Dispatch> {
    let act = Act::Dgelu { pre };
    let kernels = (kernel, Some(kernel));
    backward_dispatches(gpu, kernels, Some(dpre), dweight, dbias, dout, inp, weight, bt, c, oc, Replicas::ONE, act)
}

/// The backward GEMMs with one kernel for the dinp product and one for the dweight product.
#[allow(clippy::too_many_arguments)]
fn backward_dispatches(
    gpu: &Gpu,
    kernels: (MatmulKernel, Option<MatmulKernel>),
    dinp: Option<&Tensor>,
    dweight: &Tensor,
    dbias: Option<&Tensor>,
    dout: &Tensor,
    inp: &Tensor,
    weight: &Tensor,
    bt: usize,
    c: usize,
    oc: usize,
    rep: Replicas,
    dinp_act: Act,
) -> Vec<Dispatch> {
    let mut ds = Vec::with_capacity(4);
    if let Some(dinp) = dinp {
        ds.push(gemm_act_dispatch(gpu, kernels.0, dinp, dout, weight, None, dinp_act, dinp_dims(bt, c, oc, rep)));
    }
    ds.extend(weight_grad_dispatches(gpu, kernels.1, dweight, dout, inp, dweight_dims(bt, c, oc, rep)));
    if let Some(dbias) = dbias {
        ds.push(matmul_dbias_replicas(gpu, dbias, dout, bt, oc, rep));
    }
    ds
}

/// dbias += sum over rows of dout (a deterministic column sum, one writer per element).
pub fn matmul_dbias(
    gpu: &Gpu,
    dbias: &Tensor, // (OC)
    dout: &Tensor,  // (BT, OC)
    bt: usize,
    oc: usize,
) -> Dispatch {
    matmul_dbias_replicas(gpu, dbias, dout, bt, oc, Replicas::ONE)
}

/// `matmul_dbias` per replica: dbias[r] += column sums of dout[r] (BT, OC).
pub fn matmul_dbias_replicas(
    gpu: &Gpu,
    dbias: &Tensor, // R x (OC), param_stride apart
    dout: &Tensor,  // (R, BT, OC)
    bt: usize,
    oc: usize,
    rep: Replicas,
) -> Dispatch {
    assert!(
        dout.len >= rep.count * bt * oc && dbias.len >= rep.span(oc),
        "matmul_dbias: tensors too small for {} replicas of BT = {bt}, OC = {oc}",
        rep.count
    );
    // p.m = BT, p.n = OC; dout's batch stride travels as A's, dbias's as the bias's.
    let dims = GemmDims::new(bt, oc, 0)
        .with_a(MatrixLayout::strided(oc, 1, bt * oc))
        .batched(rep.count)
        .with_bias_batch(rep.param_stride)
        .accumulate();
    let p = params(&dims, false);
    let build = |entry: &'static str, dbias: &Tensor| dbias_dispatch(gpu, entry, &p, dbias, dout, oc, rep.count);
    // Measured per shape: 32 columns per workgroup (few, wide workgroups: CPU adapters), 4 (GPUs), or 4 per
    // invocation without barriers (CPU adapters; where OC and both batch strides are multiples of 4).
    let mut entries = vec!["matmul_dbias", "matmul_dbias_tall"];
    let cols4 = oc.is_multiple_of(4) && rep.param_stride.is_multiple_of(4);
    if cols4 {
        entries.push("matmul_dbias_cols4");
    }
    let key = format!("{}{}", crate::gpu::tune::classes(&[bt, oc]), if cols4 { " c4" } else { "" });
    let entry = gpu.tuner.choose("dbias", &key, &entries, |entry| {
        let scratch = Tensor::zeros(gpu, "tune dbias", dbias.len).ok()?;
        crate::gpu::tune::time_dispatch(gpu, &build(entry, &scratch))
    });
    build(entry, dbias)
}

/// One dbias dispatch of kernel `entry` (matmul_dbias, matmul_dbias_tall or matmul_dbias_cols4) over `batch` layers.
fn dbias_dispatch(
    gpu: &Gpu,
    entry: &'static str,
    p: &Params,
    dbias: &Tensor,
    dout: &Tensor,
    oc: usize,
    batch: usize,
) -> Dispatch {
    let cols = if entry == "matmul_dbias_tall" { 4 } else { 32 };
    let groups = [grid_dim(oc.div_ceil(cols), "OC"), 1, grid_dim(batch, "replicas")];
    let bindings = if entry == "matmul_dbias_cols4" { [(53, dout), (54, dbias)] } else { [(13, dout), (14, dbias)] };
    Dispatch::new(gpu, SHADER, SRC, entry, Some(bytemuck::bytes_of(p)), &bindings, groups)
}

/// `matmul_dbias` with a chosen kernel (tests compare each with the reference): "matmul_dbias", "matmul_dbias_tall"
/// or "matmul_dbias_cols4" (OC a multiple of 4).
pub fn matmul_dbias_with(
    gpu: &Gpu,
    entry: &'static str,
    dbias: &Tensor,
    dout: &Tensor,
    bt: usize,
    oc: usize,
) -> Dispatch {
    assert!(entry != "matmul_dbias_cols4" || oc.is_multiple_of(4), "matmul_dbias_cols4 needs OC a multiple of 4");
    let dims = GemmDims::new(bt, oc, 0).with_a(MatrixLayout::strided(oc, 1, bt * oc)).accumulate();
    dbias_dispatch(gpu, entry, &params(&dims, false), dbias, dout, oc, 1)
}

/// Split-K for products with few output tiles and a long K (a linear layer's weight gradient, K = B*T): K is cut
/// into chunks summed by separate workgroups (Blocked64 tiles) into a scratch buffer, which a second dispatch
/// reduces in a fixed order. `None` when K is too short for chunks of at least 128 (16 chunks at most).
pub fn split_k_chunks(dims: &GemmDims) -> Option<(usize, usize)> {
    if dims.k < 256 {
        return None;
    }
    let splits = (dims.k / 128).min(16);
    let chunk = dims.k.div_ceil(splits).div_ceil(16) * 16;
    Some((dims.k.div_ceil(chunk), chunk))
}

/// C = alpha * A @ B + beta * C by split-K (two dispatches; see `split_k_chunks`, which must give Some for `dims`).
pub fn gemm_split_k(gpu: &Gpu, c: &Tensor, a: &Tensor, b: &Tensor, dims: GemmDims) -> Vec<Dispatch> {
    assert!(split_k_chunks(&dims).is_some(), "gemm_split_k: K = {} is too short for split-K", dims.k);
    weight_grad_dispatches(gpu, None, c, a, b, dims)
}

/// Name of the split-K choice in the tuner (beside the `MatmulKernel` names).
pub const SPLIT_K: &str = "b64-splitk";

/// The kernel choice for a weight-gradient product: a `MatmulKernel`, or None for split-K.
fn choose_weight_grad(gpu: &Gpu, dims: &GemmDims) -> Option<MatmulKernel> {
    let Some(_) = split_k_chunks(dims) else { return Some(choose_kernel(gpu, dims, false)) };
    let mut candidates = gemm_candidates(gpu, dims, &[]);
    candidates.push(SPLIT_K);
    let key = format!("{} dweight", shape_key(dims));
    let name = gpu.tuner.choose("matmul", &key, &candidates, |name| {
        let d = GemmDims { batch: 1, inner: 1, ..*dims };
        let len = |l: &MatrixLayout, r: usize, c: usize| l.max_index(1, r, c).map_or(1, |i| i + 1);
        let a = Tensor::zeros(gpu, "tune a", len(&d.a, d.m, d.k)).ok()?;
        let b = Tensor::zeros(gpu, "tune b", len(&d.b, d.k, d.n)).ok()?;
        let c = Tensor::zeros(gpu, "tune c", len(&d.c, d.m, d.n)).ok()?;
        let ds = weight_grad_dispatches(gpu, MatmulKernel::from_name(name), &c, &a, &b, d);
        ds.iter().map(|x| crate::gpu::tune::time_dispatch(gpu, x)).sum()
    });
    MatmulKernel::from_name(name)
}

/// The dispatches of one weight-gradient product: one GEMM with `kernel`, or (None) split-K's two.
fn weight_grad_dispatches(
    gpu: &Gpu,
    kernel: Option<MatmulKernel>,
    c: &Tensor,
    a: &Tensor,
    b: &Tensor,
    dims: GemmDims,
) -> Vec<Dispatch> {
    let Some((splits, chunk)) = kernel.is_none().then(|| split_k_chunks(&dims)).flatten() else {
        return vec![gemm_dispatch(gpu, kernel.unwrap_or(MatmulKernel::Blocked64), c, a, b, None, dims)];
    };
    dims.check(c.len, a.len, b.len);
    let part = Tensor::zeros(gpu, "split-k partial sums", splits * dims.batch * dims.m * dims.n)
        .unwrap_or_else(|e| panic!("split-K scratch for {dims:?}: {e}"));
    let mut p = params(&dims, false);
    p.splits = splits as u32;
    p.k_chunk = chunk as u32;
    let bytes = bytemuck::bytes_of(&p);
    let sums = Dispatch::new(
        gpu,
        SHADER,
        SRC,
        "gemm_b64_splitk",
        Some(bytes),
        &[(9, a), (10, b), (27, &part)],
        [
            grid_dim(dims.n.div_ceil(64), "N"),
            grid_dim(dims.m.div_ceil(64), "M"),
            grid_dim(dims.batch * splits, "batch x splits"),
        ],
    );
    let reduce = Dispatch::new(
        gpu,
        SHADER,
        SRC,
        "gemm_splitk_reduce",
        Some(bytes),
        &[(28, &part), (29, c), (30, a), (34, &gpu.unused)],
        [grid_dim(dims.n.div_ceil(16), "N"), grid_dim(dims.m.div_ceil(16), "M"), grid_dim(dims.batch, "batch")],
    );
    vec![sums, reduce]
}
