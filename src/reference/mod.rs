//! The plain-Rust CPU reference: one module per WGSL op family (mirroring the shader line by line) and the two
//! reference models built from them. The tests compare every GPU kernel and model against this code, and check
//! the reference models' gradients by finite differences. Nothing in the training path calls it.

pub mod elementwise;
