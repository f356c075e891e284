//! The one error type of dpo3d. Every fallible public function returns `dpo3d::Result<T>`; the messages are written
//! for the person at the terminal: they say what went wrong, where (file and line for data), and what to do.

use thiserror::Error;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Error)]
pub enum Error {
    /// No adapter: no GPU driver (or software Vulkan) is installed, or `WGPU_BACKEND` names a backend that is absent.
    #[error("no GPU adapter found (backends tried: {backends}). {hint}")]
    NoAdapter { backends: String, hint: String },

    /// The adapter exists but refused the device (limits, features), a GPU call failed validation, ran out of GPU
    /// memory, or the device was lost (`Gpu::check` returns what the device reported; nothing panics).
    #[error("GPU error: {0}")]
    Gpu(String),

    /// A configuration that cannot work: heads not dividing the width, a buffer over the device's limits, ...
    #[error("invalid config: {0}")]
    Config(String),

    /// A malformed data file: names the file and the 1-based line.
    #[error("{path}:{line}: {msg}")]
    Data { path: String, line: usize, msg: String },

    /// A checkpoint that cannot be read or written.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: String, msg: String },

    /// Training produced a NaN or an infinity: which metric, at which step.
    #[error("non-finite value in training: {0}")]
    NonFinite(String),

    #[error("I/O error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl Error {
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().display().to_string(), source }
    }
}
