//! The two policies: a GPT-2-style transformer and the paper's toy MLP, each a parameter table packed into one GPU
//! buffer plus a forward/backward `Plan` built from `ops`.

pub mod config;

pub use config::{GptConfig, MlpConfig};
