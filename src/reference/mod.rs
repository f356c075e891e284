//! The plain-Rust CPU reference: one module per WGSL op family (mirroring the shader line by line) and the two
//! reference models built from them. The tests compare every GPU kernel and model against this code, and check
//! the reference models' gradients by finite differences. Nothing in the training path calls it.

pub mod adamw;
pub mod attention;
pub mod elementwise;
pub mod encoder;
pub mod gpt;
pub mod layernorm;
pub mod logprobs;
pub mod matmul;
pub mod mlp;
pub mod ppo;
pub mod preference;
pub mod sampling;
