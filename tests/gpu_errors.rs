//! GPU errors come back as `dpo3d::Error`s instead of panics: a shader the compiler rejects, a buffer larger than the
//! adapter allows (inside an error scope and outside any), a trainer too large for the adapter, and a lost device.

mod common;
use common::*;
use dpo3d::gpu::Plan;
use dpo3d::train::run_step;
use dpo3d::Error;

fn huge_buffer(gpu: &dpo3d::Gpu) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("too big"),
        size: gpu.limits.max_buffer_size.saturating_add(4),
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    })
}

#[test]
fn should_report_a_rejected_shader_by_name_instead_of_panicking() {
    let gpu = gpu();
    gpu.check().unwrap();
    let _ = gpu.pipeline("broken", "fn main( {", "main");
    let err = gpu.check().unwrap_err();
    assert!(matches!(err, Error::Gpu(_)), "{err}");
    assert!(err.to_string().contains("broken.wgsl"), "the error names the shader: {err}");
    // reported once; the device still works
    gpu.check().unwrap();
    pollster::block_on(run_step(&gpu, &[&Plan::new()], None)).unwrap();
}

#[test]
fn should_return_an_error_saying_what_was_asked_and_what_the_adapter_allows() {
    let gpu = gpu();
    let err = gpu.scoped_blocking("allocating the test buffer", || Ok(huge_buffer(&gpu))).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("allocating the test buffer"), "{msg}");
    assert!(msg.contains(&format!("max_buffer_size {}", gpu.limits.max_buffer_size)), "{msg}");
    gpu.check().unwrap();
}

#[test]
fn should_record_an_error_outside_any_scope_for_the_next_step() {
    let gpu = gpu();
    let _b = huge_buffer(&gpu);
    let err = pollster::block_on(run_step(&gpu, &[&Plan::new()], None)).unwrap_err();
    assert!(matches!(err, Error::Gpu(_)) && err.to_string().contains("too big"), "{err}");
    pollster::block_on(run_step(&gpu, &[&Plan::new()], None)).unwrap();
}

#[test]
fn should_refuse_a_trainer_too_large_for_the_adapter() {
    use dpo3d::model::GptConfig;
    use dpo3d::train::sft::SftTrainer;
    let gpu = gpu();
    // The logits alone are B * T * V * 4 bytes: 4096 * 1024 * 1024 * 4 = 16 GiB, beyond any binding limit here.
    let cfg = GptConfig { vocab_size: 1024, context: 1024, layers: 1, heads: 1, width: 8, scalar_head: false };
    let params = dpo3d::model::init::gpt_params(&cfg, 1).unwrap();
    let err = match SftTrainer::new(&gpu, &cfg, &params, 4096, 1024, &Default::default()) {
        Ok(_) => panic!("a 16 GiB logits buffer was accepted"),
        Err(e) => e.to_string(),
    };
    let max = gpu.limits.max_storage_buffer_binding_size;
    assert!(err.contains(&max.to_string()), "the error says what the adapter allows ({max}): {err}");
    gpu.check().unwrap();
}

#[test]
fn should_return_device_loss_as_an_error() {
    let gpu = gpu();
    gpu.device.destroy();
    gpu.wait();
    let err = pollster::block_on(run_step(&gpu, &[&Plan::new()], None)).unwrap_err();
    assert!(matches!(err, Error::Gpu(_)), "{err}");
    assert!(err.to_string().contains("lost"), "{err}");
    // and stays an error
    assert!(gpu.check().is_err());
}
