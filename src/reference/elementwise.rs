//! CPU mirror of `shaders/elementwise.wgsl`. Same formulas, same accumulate-into-d-output convention.

const GELU_SCALE: f32 = 0.797_884_6; // sqrt(2/pi)

pub fn gelu_forward(out: &mut [f32], inp: &[f32]) {
    for (o, &x) in out.iter_mut().zip(inp) {
        let cube = 0.044715 * x * x * x;
        *o = 0.5 * x * (1.0 + (GELU_SCALE * (x + cube)).tanh());
    }
}

pub fn gelu_backward(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    for i in 0..inp.len() {
        let x = inp[i];
        let cube = 0.044715 * x * x * x;
        let tanh_arg = GELU_SCALE * (x + cube);
        let tanh_out = tanh_arg.tanh();
        let cosh_out = tanh_arg.cosh();
        let sech2 = 1.0 / (cosh_out * cosh_out);
        let local_grad = 0.5 * (1.0 + tanh_out) + x * 0.5 * sech2 * GELU_SCALE * (1.0 + 3.0 * 0.044715 * x * x);
        dinp[i] += local_grad * dout[i];
    }
}

pub fn relu_forward(out: &mut [f32], inp: &[f32]) {
    for (o, &x) in out.iter_mut().zip(inp) {
        *o = x.max(0.0);
    }
}

pub fn relu_backward(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    for i in 0..inp.len() {
        if inp[i] > 0.0 {
            dinp[i] += dout[i];
        }
    }
}

pub fn residual_forward(out: &mut [f32], inp1: &[f32], inp2: &[f32]) {
    for i in 0..out.len() {
        out[i] = inp1[i] + inp2[i];
    }
}

pub fn residual_backward(dinp1: &mut [f32], dinp2: &mut [f32], dout: &[f32]) {
    for i in 0..dout.len() {
        dinp1[i] += dout[i];
        dinp2[i] += dout[i];
    }
}
