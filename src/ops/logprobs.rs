//! Dispatches of `shaders/logprobs.wgsl`: per-token log-probabilities of targets (log-softmax + gather) and their
//! backward, the full log-softmax, the masked SFT loss and per-sequence log-prob sums. Each function returns a
//! ready-to-record `Dispatch`; `logprobs_backward` overwrites the logits with their gradient, `sft_loss` overwrites
//! `dlogps`.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{grid_1d, Dispatch, Gpu, Tensor, WORKGROUP_1D};

const SHADER: &str = "logprobs";
const SRC: &str = include_str!("../../shaders/logprobs.wgsl");

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    v: u32,
    _p: [u32; 2],
}

fn dispatch(
    gpu: &Gpu,
    entry: &'static str,
    n: usize,
    v: usize,
    bindings: &[(u32, &Tensor)],
    groups: [u32; 3],
) -> Dispatch {
    let p = Params { n: n as u32, v: v as u32, _p: [0; 2] };
    Dispatch::new(gpu, SHADER, SRC, entry, Some(bytemuck::bytes_of(&p)), bindings, groups)
}

pub use crate::gpu::tune::RowForm;

/// Up to this vocabulary size `DPO3D_KERNELS=rule` (the browser) gives a row one invocation instead of a workgroup
/// (the toy's 10 responses: a 256-thread workgroup per row left 246 threads idle). Otherwise the tuner measures.
pub const SMALL_V: usize = 64;

fn rule(v: usize) -> RowForm {
    if v <= SMALL_V {
        RowForm::Invocation
    } else {
        RowForm::Workgroup
    }
}

/// lse[i] = logsumexp(logits[i, :]); logps[i] = logits[i, targets[i]] - lse[i]; the row form chosen by the tuner.
/// Every target must be < V.
pub fn logprobs_forward(
    gpu: &Gpu,
    logps: &Tensor,   // (N)
    lse: &Tensor,     // (N)
    logits: &Tensor,  // (N, V)
    targets: &Tensor, // (N) u32
    n: usize,
    v: usize,
) -> Dispatch {
    logprobs_forward_replicas(gpu, logps, lse, logits, targets, n, 1, v)
}

/// `logprobs_forward` over `replicas` models' rows (N = replicas x rows, replica-major), its row form chosen for one
/// model's `rows`: the forms sum a row in different orders, so a replica must use the form its model would use alone
/// (the tuner may pick differently for N rows than for `rows`).
#[allow(clippy::too_many_arguments)]
pub fn logprobs_forward_replicas(
    gpu: &Gpu,
    logps: &Tensor,   // (N)
    lse: &Tensor,     // (N)
    logits: &Tensor,  // (N, V)
    targets: &Tensor, // (N) u32
    rows: usize,
    replicas: usize,
    v: usize,
) -> Dispatch {
    let key = format!("forward {}", crate::gpu::tune::classes(&[rows, v]));
    let form = crate::gpu::tune::choose_row_form(gpu, "logprobs", &key, rule(v), |form| {
        let (a, b) = (Tensor::zeros(gpu, "tune logps", rows).ok()?, Tensor::zeros(gpu, "tune lse", rows).ok()?);
        crate::gpu::tune::time_dispatch(gpu, &logprobs_forward_with(gpu, form, &a, &b, logits, targets, rows, v))
    });
    logprobs_forward_with(gpu, form, logps, lse, logits, targets, rows * replicas, v)
}

/// `logprobs_forward` in the given row form.
#[allow(clippy::too_many_arguments)]
pub fn logprobs_forward_with(
    gpu: &Gpu,
    form: RowForm,
    logps: &Tensor,   // (N)
    lse: &Tensor,     // (N)
    logits: &Tensor,  // (N, V)
    targets: &Tensor, // (N) u32
    n: usize,
    v: usize,
) -> Dispatch {
    if form == RowForm::Invocation {
        return dispatch(
            gpu,
            "logprobs_forward_small",
            n,
            v,
            &[(19, logits), (20, targets), (21, logps), (22, lse)],
            grid_1d(n, 64),
        );
    }
    dispatch(gpu, "logprobs_forward", n, v, &[(1, logits), (2, targets), (3, logps), (4, lse)], grid_1d(n, 1))
}

/// How `logprobs_backward` lays its threads over the logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackwardForm {
    /// One invocation per logit (`logprobs_backward`): row = index / V, the row's values read per logit.
    Elements,
    /// A workgroup per 256 logits of one row, 4 per invocation (`logprobs_backward_rows`): the row's values read
    /// once per 4 logits, no division.
    Rows,
}

/// In place: logits[i, j] <- dlogps[i] * (1[j == targets[i]] - exp(logits[i, j] - lse[i])), the gradient of
/// sum_i dlogps[i] logps[i] with respect to the logits, written over them (they are not needed after it, and a
/// second (N, V) buffer is the largest one a model at GPT-2's vocabulary would hold). The form chosen by the tuner,
/// timed on a scratch (N, V) buffer (allocated for the timing only), so the logits given are left alone until the
/// dispatch returned runs.
pub fn logprobs_backward(
    gpu: &Gpu,
    logits: &Tensor,  // (N, V) in: logits; out: dlogits
    dlogps: &Tensor,  // (N)
    lse: &Tensor,     // (N)
    targets: &Tensor, // (N) u32
    n: usize,
    v: usize,
) -> Dispatch {
    let names = ["rows", "elements"];
    let form = |k: &str| if k == "rows" { BackwardForm::Rows } else { BackwardForm::Elements };
    let key = format!("backward {}", crate::gpu::tune::classes(&[n, v]));
    let chosen = gpu.tuner.choose("logprobs", &key, &names, |k| {
        let scratch = Tensor::zeros(gpu, "tune dlogits", n * v).ok()?;
        let d = logprobs_backward_with(gpu, form(k), &scratch, dlogps, lse, targets, n, v);
        crate::gpu::tune::time_dispatch(gpu, &d)
    });
    logprobs_backward_with(gpu, form(chosen), logits, dlogps, lse, targets, n, v)
}

/// `logprobs_backward` in the given form.
#[allow(clippy::too_many_arguments)]
pub fn logprobs_backward_with(
    gpu: &Gpu,
    form: BackwardForm,
    logits: &Tensor,  // (N, V) in: logits; out: dlogits
    dlogps: &Tensor,  // (N)
    lse: &Tensor,     // (N)
    targets: &Tensor, // (N) u32
    n: usize,
    v: usize,
) -> Dispatch {
    let bindings = [(5, logits), (6, lse), (7, targets), (8, dlogps)];
    match form {
        BackwardForm::Elements => dispatch(gpu, "logprobs_backward", n, v, &bindings, grid_1d(n * v, WORKGROUP_1D)),
        BackwardForm::Rows => {
            let y = n.clamp(1, 65535);
            let groups = [v.div_ceil(256).max(1) as u32, y as u32, n.div_ceil(y).max(1) as u32];
            dispatch(gpu, "logprobs_backward_rows", n, v, &bindings, groups)
        }
    }
}

/// out[i, j] = logits[i, j] - logsumexp(logits[i, :]): the full next-token log-probabilities; the row form chosen
/// by the tuner.
pub fn log_softmax(
    gpu: &Gpu,
    out: &Tensor,    // (N, V)
    logits: &Tensor, // (N, V)
    n: usize,
    v: usize,
) -> Dispatch {
    log_softmax_replicas(gpu, out, logits, n, 1, v)
}

/// `log_softmax` over `replicas` models' rows, its row form chosen for one model's `rows` (see
/// `logprobs_forward_replicas`).
pub fn log_softmax_replicas(
    gpu: &Gpu,
    out: &Tensor,    // (N, V)
    logits: &Tensor, // (N, V)
    rows: usize,
    replicas: usize,
    v: usize,
) -> Dispatch {
    let key = format!("log_softmax {}", crate::gpu::tune::classes(&[rows, v]));
    let form = crate::gpu::tune::choose_row_form(gpu, "logprobs", &key, rule(v), |form| {
        let scratch = Tensor::zeros(gpu, "tune log_softmax", rows * v).ok()?;
        crate::gpu::tune::time_dispatch(gpu, &log_softmax_with(gpu, form, &scratch, logits, rows, v))
    });
    log_softmax_with(gpu, form, out, logits, rows * replicas, v)
}

/// `log_softmax` in the given row form.
pub fn log_softmax_with(
    gpu: &Gpu,
    form: RowForm,
    out: &Tensor,    // (N, V)
    logits: &Tensor, // (N, V)
    n: usize,
    v: usize,
) -> Dispatch {
    if form == RowForm::Invocation {
        return dispatch(gpu, "log_softmax_small", n, v, &[(23, logits), (24, out)], grid_1d(n, 64));
    }
    dispatch(gpu, "log_softmax", n, v, &[(10, logits), (11, out)], grid_1d(n, 1))
}

/// Masked mean NLL: loss[0] = -sum(mask * logps) / max(sum(mask), 1); dlogps[i] = -mask[i] / max(sum(mask), 1)
/// (overwrites dlogps). One workgroup, fixed reduction order, any N.
pub fn sft_loss(
    gpu: &Gpu,
    loss: &Tensor,   // (1)
    dlogps: &Tensor, // (N)
    logps: &Tensor,  // (N)
    mask: &Tensor,   // (N)
    n: usize,
) -> Dispatch {
    sft_loss_groups(gpu, loss, dlogps, logps, mask, n, 1)
}

/// `sft_loss` per group of n / groups consecutive positions (the replicas of a replicated model): loss[g] and the
/// gradient of group g's own loss, each reduced in the order a lone model of n / groups positions uses.
pub fn sft_loss_groups(
    gpu: &Gpu,
    loss: &Tensor,   // (G)
    dlogps: &Tensor, // (N)
    logps: &Tensor,  // (N)
    mask: &Tensor,   // (N)
    n: usize,
    groups: usize,
) -> Dispatch {
    assert!(
        groups >= 1 && n.is_multiple_of(groups) && loss.len >= groups,
        "sft_loss: {n} positions in {groups} groups"
    );
    let g = u32::try_from(groups).ok().filter(|&g| g <= 65535).expect("sft_loss: too many groups");
    dispatch(gpu, "sft_loss", n / groups, 0, &[(12, logps), (13, mask), (14, loss), (15, dlogps)], [g, 1, 1])
}

/// Per sequence s: seq_sum[s] = sum_t mask[s, t] * logps[s, t]; seq_mean[s] = seq_sum[s] / max(sum_t mask[s, t], 1).
pub fn sequence_logps(
    gpu: &Gpu,
    seq_sum: &Tensor,  // (S)
    seq_mean: &Tensor, // (S)
    logps: &Tensor,    // (S, T)
    mask: &Tensor,     // (S, T)
    s: usize,
    t: usize,
) -> Dispatch {
    dispatch(
        gpu,
        "sequence_logps",
        s,
        t,
        &[(16, logps), (17, mask), (18, seq_sum), (19, seq_mean)],
        grid_1d(s, WORKGROUP_1D),
    )
}
