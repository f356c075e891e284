//! The two policies: a GPT-2-style transformer and the paper's toy MLP, each a parameter table packed into one GPU
//! buffer plus a forward and a backward `Plan` built from `ops`. Objectives talk to either through `Policy`.

pub mod config;
pub mod decode;
pub mod fused_mlp;
pub mod generate;
pub mod gpt;
pub mod init;
pub mod inspect;
pub mod mlp;

pub use config::{GptConfig, MlpConfig};
pub use decode::Decoder;
pub use fused_mlp::FusedMlp;
pub use generate::{Completion, GenerationConfig, Generator};
pub use gpt::Gpt;
pub use mlp::Mlp;

use crate::gpu::{Plan, Tensor, TensorArena};

/// What an objective needs from a policy: per-token log-probs of the targets (B, T) and their gradient buffer,
/// the optional scalar head, the parameter and gradient buffers, and the two plans.
pub trait Policy {
    fn forward_plan(&self) -> &Plan;
    fn backward_plan(&self) -> &Plan;
    fn params(&self) -> &TensorArena;
    fn grads(&self) -> &TensorArena;
    /// (B, T) log pi(target).
    fn logps(&self) -> &Tensor;
    /// (B, T) d loss / d logps, written by the objective before `backward` runs.
    fn dlogps(&self) -> &Tensor;
    /// (B, T) scalar head output.
    fn scalar(&self) -> Option<&Tensor>;
    fn dscalar(&self) -> Option<&Tensor>;
    /// B
    fn rows(&self) -> usize;
    /// T (1 for the MLP: one response per row)
    fn seq_len(&self) -> usize;
    /// Independent models sharing these dispatches (a replicated MLP: several seeds at once). Rows split into
    /// `replicas` equal consecutive blocks, one per replica, and the parameter and gradient arenas into `replicas`
    /// equal consecutive blocks; objectives reduce, and optimizers clip, per replica.
    fn replicas(&self) -> usize {
        1
    }
    /// Some for a policy whose backward leaves part of the gradient factored instead of in `grads()` (the fused toy
    /// MLP's fc2.weight): the optimizer must then be the fused one (`train::Optimizer::for_policy` picks it), and
    /// gradients cannot be accumulated over micro-batches by keeping `grads()`.
    fn factored_grads(&self) -> Option<FactoredGrads<'_>> {
        None
    }
}

/// What the fused toy-MLP update needs from its policy (`FusedMlp`): the kernels' shape block, the factors of
/// fc2.weight's gradient, and the partial sums of squares the backward wrote for the gradient norm.
pub struct FactoredGrads<'a> {
    pub shape: crate::ops::toy_mlp::ToyShape,
    /// (N, H) vec4: relu(fc1) per prompt.
    pub h1t: &'a Tensor,
    /// (N, H) vec4: d loss / d fc2 pre-activation per prompt.
    pub dt: &'a Tensor,
    /// (N, 2 nblk) partial sums of squares of the whole gradient.
    pub partials: &'a Tensor,
}
