//! CPU mirror of `shaders/adamw.wgsl`: the global gradient L2 norm, its clip scale, the AdamW update (decoupled
//! weight decay, bias-corrected moments) and plain SGD. The norm accumulates in f64, so it is the more exact of the
//! two.

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

/// (1 - beta1^step, 1 - beta2^step) in f32, the values `ops::adamw::AdamHyper::for_step` hands the shader.
pub fn bias_corrections(step: u32, beta1: f32, beta2: f32) -> (f32, f32) {
    (1.0 - beta1.powi(step as i32), 1.0 - beta2.powi(step as i32))
}

/// One AdamW step (step is 1-based): g = grads * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
/// params -= lr * ((m / (1-b1^step)) / (sqrt(v / (1-b2^step)) + eps) + weight_decay * params).
#[allow(clippy::too_many_arguments)]
pub fn adamw_update(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    step: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    grad_scale: f32,
) {
    let (bc1, bc2) = bias_corrections(step, beta1, beta2);
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
