//! Text to token ids. Data files may hold text, which a [`TextEncoder`] turns into ids: [`ByteTokenizer`] (UTF-8
//! bytes as ids 0..255, no files, works in the browser) or, natively, [`HfTokenizer`] (a Hugging Face
//! `tokenizer.json`, e.g. GPT-2's BPE). Neither adds special tokens: the data file says exactly what the model sees.

#[cfg(not(target_arch = "wasm32"))]
use crate::Error;
use crate::Result;

/// Anything that turns text into token ids.
pub trait TextEncoder {
    fn encode(&self, text: &str) -> Result<Vec<u32>>;

    /// The number of ids the encoder can produce (ids are `0..vocab_size`), when known.
    fn vocab_size(&self) -> Option<usize> {
        None
    }
}

/// UTF-8 bytes as token ids: V = 256, id = byte value. Tiny models, tests and the browser demo use it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    pub const VOCAB_SIZE: usize = 256;

    /// The text back from ids; ids >= 256 and invalid UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().map(|&i| if i < 256 { i as u8 } else { 0xFF }).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl TextEncoder for ByteTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(text.bytes().map(u32::from).collect())
    }

    fn vocab_size(&self) -> Option<usize> {
        Some(Self::VOCAB_SIZE)
    }
}

/// A Hugging Face `tokenizers` tokenizer loaded from a `tokenizer.json` (native only). Encodes without special
/// tokens (`add_special_tokens = false`).
#[cfg(not(target_arch = "wasm32"))]
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
}

#[cfg(not(target_arch = "wasm32"))]
impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer").field("vocab_size", &self.inner.get_vocab_size(true)).finish()
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl HfTokenizer {
    /// Load a `tokenizer.json` file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<HfTokenizer> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&json).map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Parse the contents of a `tokenizer.json`.
    pub fn from_json(json: &str) -> Result<HfTokenizer> {
        let inner: tokenizers::Tokenizer = json
            .parse()
            .map_err(|e| Error::Config(format!("not a valid tokenizer.json (Hugging Face tokenizers format): {e}")))?;
        Ok(HfTokenizer { inner })
    }

    /// The wrapped tokenizer, for decoding and anything else this wrapper does not expose.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// The text back from ids (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| Error::Config(format!("tokenizer failed to decode: {e}")))
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl TextEncoder for HfTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Config(format!("tokenizer failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    fn vocab_size(&self) -> Option<usize> {
        Some(self.inner.get_vocab_size(true))
    }
}
