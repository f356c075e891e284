//! The two policies: a GPT-2-style transformer and the paper's toy MLP, each a parameter table packed into one GPU
//! buffer plus a forward and a backward `Plan` built from `ops`. Objectives talk to either through `Policy`.

pub mod config;
pub mod gpt;
pub mod init;
pub mod inspect;
pub mod mlp;

pub use config::{GptConfig, MlpConfig};
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
}
