//! Objectives: each reads a policy's per-token log-probs (and scalar head) on the GPU and writes d loss / d logps
//! (and d loss / d scalar) for the shared backward pass, plus its metrics, all in WGSL.

pub mod ppo;
pub mod preference;
pub mod reward;
pub mod sft;

pub use preference::{Preference, PreferenceLoss, PreferenceMetrics};
pub use reward::RewardObjective;
pub use sft::Sft;
