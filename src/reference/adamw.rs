//! CPU mirror of `shaders/adamw.wgsl`: the global gradient L2 norm, its clip scale, the step state (Adam's t and the
//! running powers beta^t, advanced only by a step whose gradient norm is finite; a non-finite one is skipped and
//! counted), the AdamW update (decoupled weight decay, bias-corrected moments) and plain SGD. The norm accumulates in
//! f64, so it is the more exact of the two.

/// ||grads||_2, accumulated in f64.
pub fn grad_norm(grads: &[f32]) -> f32 {
    grads.iter().map(|&g| g as f64 * g as f64).sum::<f64>().sqrt() as f32
}

/// Factor the gradients are multiplied by: 1 when max_norm <= 0 (no clipping), else min(1, max_norm / (norm + 1e-6)).
pub fn clip_scale(norm: f32, max_norm: f32) -> f32 {
    if max_norm <= 0.0 {
        1.0
    } else {
        (max_norm / (norm + 1e-6)).min(1.0)
    }
}

/// One group's optimizer step state, as the GPU keeps it: applied steps t, the running products beta1^t and beta2^t
/// (one f32 multiply per applied step, so 1 - beta^t is bit-identical to the kernel's), and skipped steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepState {
    pub t: u32,
    pub beta1_pow: f32,
    pub beta2_pow: f32,
    pub skipped: u32,
}

impl Default for StepState {
    fn default() -> Self {
        StepState { t: 0, beta1_pow: 1.0, beta2_pow: 1.0, skipped: 0 }
    }
}

impl StepState {
    /// Take a step with gradient norm `norm`: finite -> t + 1 and the powers advance, returns true (apply the
    /// update); not finite -> skipped + 1, returns false (leave parameters and moments as they are).
    pub fn advance(&mut self, norm: f32, beta1: f32, beta2: f32) -> bool {
        if norm.is_finite() {
            self.t += 1;
            self.beta1_pow *= beta1;
            self.beta2_pow *= beta2;
            true
        } else {
            self.skipped += 1;
            false
        }
    }

    /// (1 - beta1^t, 1 - beta2^t) in f32.
    pub fn bias_corrections(&self) -> (f32, f32) {
        (1.0 - self.beta1_pow, 1.0 - self.beta2_pow)
    }
}

/// One AdamW step with clipping and the non-finite check: norm = ||grads||; if `state.advance` accepts it, the update
/// with grad_scale = clip_scale(norm, max_norm). Returns whether the step was applied.
#[allow(clippy::too_many_arguments)]
pub fn adamw_step(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    state: &mut StepState,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    max_norm: f32,
) -> bool {
    let norm = grad_norm(grads);
    if !state.advance(norm, beta1, beta2) {
        return false;
    }
    let scale = clip_scale(norm, max_norm);
    adamw_update(params, grads, m, v, state, lr, beta1, beta2, eps, weight_decay, scale);
    true
}

/// One plain SGD step with clipping and the non-finite check (see `adamw_step`). SGD uses no bias corrections: this
/// mirror advances t and skipped as the GPU does, and leaves the beta powers at 0.
pub fn sgd_step(
    params: &mut [f32],
    grads: &[f32],
    state: &mut StepState,
    lr: f32,
    weight_decay: f32,
    max_norm: f32,
) -> bool {
    let norm = grad_norm(grads);
    if !state.advance(norm, 0.0, 0.0) {
        return false;
    }
    sgd_update(params, grads, lr, weight_decay, clip_scale(norm, max_norm));
    true
}

/// One AdamW update with `state` already advanced to this step (t >= 1): g = grads * grad_scale;
/// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
/// params -= lr * ((m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) + weight_decay * params).
#[allow(clippy::too_many_arguments)]
pub fn adamw_update(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    state: &StepState,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    grad_scale: f32,
) {
    let (bc1, bc2) = state.bias_corrections();
    for i in 0..params.len() {
        let g = grads[i] * grad_scale;
        let mi = beta1 * m[i] + (1.0 - beta1) * g;
        let vi = beta2 * v[i] + (1.0 - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        let mhat = mi / bc1;
        let vhat = vi / bc2;
        let param = params[i];
        params[i] = param - lr * (mhat / (vhat.sqrt() + eps) + weight_decay * param);
    }
}

/// One plain SGD step: params -= lr * (grads * grad_scale + weight_decay * params).
pub fn sgd_update(params: &mut [f32], grads: &[f32], lr: f32, weight_decay: f32, grad_scale: f32) {
    for i in 0..params.len() {
        let g = grads[i] * grad_scale;
        let param = params[i];
        params[i] = param - lr * (g + weight_decay * param);
    }
}

/// One SGD-with-momentum update (PyTorch's heavy ball, dampening 0): buf = momentum * buf + grads * grad_scale;
/// params -= lr * (buf + weight_decay * params).
pub fn sgd_momentum_update(
    params: &mut [f32],
    grads: &[f32],
    buf: &mut [f32],
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    grad_scale: f32,
) {
    for i in 0..params.len() {
        let b = momentum * buf[i] + grads[i] * grad_scale;
        buf[i] = b;
        let param = params[i];
        params[i] = param - lr * (b + weight_decay * param);
    }
}
