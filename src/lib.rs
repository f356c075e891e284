//! # dpo3d
//!
//! Train small transformers (and the paper's toy MLP) with preference-learning objectives (SFT, reward models, the
//! DPO family, RLHF-PPO) in WGSL compute shaders on any GPU wgpu reaches: Vulkan, Metal, DX12, and WebGPU in the
//! browser. It exists to reproduce and explore "3D-Properties: Identifying Challenges in DPO and Charting a Path
//! Forward" (Yan et al., ICLR 2025).
//!
//! Layout:
//! - [`gpu`]: device, tensors (views into storage buffers), recorded dispatch plans;
//! - [`ops`]: one module per `shaders/*.wgsl` family, each building ready-to-record dispatches;
//! - [`reference`]: the plain-Rust CPU mirror of every kernel and model, which the tests compare the GPU against;
//! - [`model`]: the GPT and the toy MLP policies, built from ops;
//! - [`train`]: optimizer and training loops; [`objectives`]: SFT and the preference losses.
//!
//! All model and loss math runs on the GPU; the CPU code in `reference` is for checking it, never a fallback.

pub mod error;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod reference;
pub mod rng;
pub mod toy;
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod web;

#[cfg(not(target_arch = "wasm32"))]
pub mod checkpoint;
pub mod data;
pub mod objectives;

pub use error::{Error, Result};

/// The README's Rust snippet, compiled as a doctest so it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
pub use gpu::{Gpu, Tensor};
