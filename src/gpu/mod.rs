//! GPU plumbing: the device (`Gpu`), tensors as views into storage buffers (`Tensor`), and the recorded list of
//! compute dispatches a training step replays (`Plan`). Nothing here knows about models or losses; `ops/` builds
//! dispatches from these pieces and `model/` strings them together.
//!
//! The rules this module enforces: pipelines are compiled once per (shader, entry point) and cached; buffers, bind
//! groups and uniform parameter blocks are created when a plan is built, never while it runs; a step is one command
//! encoder, one compute pass, one submit.

mod context;
mod plan;
mod tensor;
pub mod tune;

pub use context::{Gpu, GpuInfo};
pub use plan::{dispatch_count, encode_all, grid_1d, submit_all, Dispatch, Plan, WORKGROUP_1D};
pub use tensor::{check_buffer, create_buffer, Readback, Tensor, TensorArena, ARENA_ALIGN_ELEMS};
