//! JSONL readers for preference rows `{"prompt", "chosen", "rejected"}` and SFT rows `{"prompt", "completion"}`.
//! Each field is either text (encoded with the given [`TextEncoder`]) or an array of token ids. Every problem is an
//! [`Error::Data`] naming the file and the 1-based line; rows are never truncated or dropped (only blank lines are
//! skipped). Extra fields in a row (ids, scores, ...) are ignored.
//!
//! Three entry points per row kind: `parse_*` (a string), `read_*` (any reader) work everywhere, wasm32 included;
//! `load_*` (a path) is native only.

use std::io::BufRead;

use serde_json::{Map, Value};

use super::{DataOptions, PreferencePair, SftExample, TextEncoder};
use crate::{Error, Result};

/// Where a row came from, and how to turn its fields into ids.
struct RowCtx<'a> {
    source: &'a str,
    line: usize,
    encoder: Option<&'a dyn TextEncoder>,
    opts: &'a DataOptions,
}

impl RowCtx<'_> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Data { path: self.source.to_string(), line: self.line, msg: msg.into() }
    }

    /// One field as token ids: text through the encoder, or an array of ids; ids checked against the vocabulary.
    fn tokens(&self, row: &Map<String, Value>, name: &str, required_fields: &str) -> Result<Vec<u32>> {
        let value = row
            .get(name)
            .ok_or_else(|| self.err(format!("missing field `{name}` (each row needs {required_fields})")))?;
        let ids = match value {
            Value::String(text) => {
                let enc = self.encoder.ok_or_else(|| {
                    self.err(format!(
                        "field `{name}` is text but no tokenizer was given: pass a tokenizer (a tokenizer.json, or the \
                         byte tokenizer) or store the field as an array of token ids"
                    ))
                })?;
                enc.encode(text).map_err(|e| self.err(format!("field `{name}`: {e}")))?
            }
            Value::Array(items) => {
                let mut ids = Vec::with_capacity(items.len());
                for (k, item) in items.iter().enumerate() {
                    match item.as_u64() {
                        Some(id) if id <= u32::MAX as u64 => ids.push(id as u32),
                        _ => {
                            let hint = if item.is_object() {
                                " (conversational rows with lists of messages are not supported: apply the chat \
                                 template first and store the text or the token ids)"
                            } else {
                                ""
                            };
                            return Err(self.err(format!(
                                "field `{name}`[{k}] is {}, not a token id (an integer in 0..2^32){hint}",
                                describe(item)
                            )));
                        }
                    }
                }
                ids
            }
            other => {
                return Err(self.err(format!(
                    "field `{name}` must be a string (text) or an array of token ids, got {}",
                    describe(other)
                )))
            }
        };
        if let Some(v) = self.opts.vocab_size {
            if let Some((k, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= v) {
                return Err(self
                    .err(format!("field `{name}`: token id {id} (position {k}) is out of range for vocab_size {v}")));
            }
        }
        Ok(ids)
    }

    fn check_nonempty(&self, ids: &[u32], name: &str, hint: &str) -> Result<()> {
        if ids.is_empty() {
            return Err(self.err(format!("field `{name}` is empty{hint}")));
        }
        Ok(())
    }

    fn check_len(&self, prompt: &[u32], response: &[u32], name: &str) -> Result<()> {
        if let Some(max) = self.opts.max_len {
            let n = prompt.len() + response.len();
            if n > max {
                return Err(self.err(format!(
                    "prompt + {name} is {n} tokens ({} + {}), longer than max_len {max}; rows are never truncated: \
                     shorten the row or raise max_len",
                    prompt.len(),
                    response.len()
                )));
            }
        }
        Ok(())
    }
}

const EMPTY_PROMPT_HINT: &str =
    ": the first response token would have nothing to be predicted from; start every prompt \
                                 with at least one token (e.g. a BOS/EOS id)";

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Reads every non-blank line as a JSON object and hands it to `row` with its context.
fn read_rows<T>(
    mut reader: impl BufRead,
    source: &str,
    encoder: Option<&dyn TextEncoder>,
    opts: &DataOptions,
    mut row: impl FnMut(&RowCtx, &Map<String, Value>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|e| Error::Io { path: source.to_string(), source: e })?;
        if n == 0 {
            break;
        }
        line += 1;
        let ctx = RowCtx { source, line, encoder, opts };
        let mut bytes = buf.as_slice();
        if line == 1 {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes); // a UTF-8 byte order mark
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| ctx.err(format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to() + 1)))?;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(text).map_err(|e| {
            let full = e.to_string();
            let what = full.rsplit_once(" at line ").map_or(full.as_str(), |(m, _)| m);
            ctx.err(format!("invalid JSON at column {}: {what}", e.column()))
        })?;
        let Value::Object(obj) = value else {
            return Err(ctx.err(format!("expected a JSON object per line, got {}", describe(&value))));
        };
        out.push(row(&ctx, &obj)?);
    }
    Ok(out)
}

fn preference_row(ctx: &RowCtx, row: &Map<String, Value>) -> Result<PreferencePair> {
    let fields = "`prompt`, `chosen` and `rejected`";
    let prompt = ctx.tokens(row, "prompt", fields)?;
    let chosen = ctx.tokens(row, "chosen", fields)?;
    let rejected = ctx.tokens(row, "rejected", fields)?;
    ctx.check_nonempty(&prompt, "prompt", EMPTY_PROMPT_HINT)?;
    ctx.check_nonempty(&chosen, "chosen", "")?;
    ctx.check_nonempty(&rejected, "rejected", "")?;
    ctx.check_len(&prompt, &chosen, "chosen")?;
    ctx.check_len(&prompt, &rejected, "rejected")?;
    Ok(PreferencePair { prompt, chosen, rejected })
}

fn sft_row(ctx: &RowCtx, row: &Map<String, Value>) -> Result<SftExample> {
    let fields = "`prompt` and `completion`";
    let prompt = ctx.tokens(row, "prompt", fields)?;
    let completion = ctx.tokens(row, "completion", fields)?;
    ctx.check_nonempty(&prompt, "prompt", EMPTY_PROMPT_HINT)?;
    ctx.check_nonempty(&completion, "completion", "")?;
    ctx.check_len(&prompt, &completion, "completion")?;
    Ok(SftExample { prompt, completion })
}

/// Preference rows from JSONL text; `source_name` is what errors call the file.
pub fn parse_preferences(
    text: &str,
    source_name: &str,
    encoder: Option<&dyn TextEncoder>,
    opts: &DataOptions,
) -> Result<Vec<PreferencePair>> {
    read_rows(text.as_bytes(), source_name, encoder, opts, preference_row)
}

/// Preference rows from any reader of JSONL.
pub fn read_preferences(
    reader: impl std::io::Read,
    source_name: &str,
    encoder: Option<&dyn TextEncoder>,
    opts: &DataOptions,
) -> Result<Vec<PreferencePair>> {
    read_rows(std::io::BufReader::new(reader), source_name, encoder, opts, preference_row)
}

/// Preference rows from a JSONL file.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_preferences(
    path: impl AsRef<std::path::Path>,
    encoder: Option<&dyn TextEncoder>,
    opts: &DataOptions,
) -> Result<Vec<PreferencePair>> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    read_preferences(file, &path.display().to_string(), encoder, opts)
}

/// SFT rows from JSONL text; `source_name` is what errors call the file.
pub fn parse_sft(
    text: &str,
    source_name: &str,
    encoder: Option<&dyn TextEncoder>,
    opts: &DataOptions,
) -> Result<Vec<SftExample>> {
    read_rows(text.as_bytes(), source_name, encoder, opts, sft_row)
}

/// SFT rows from any reader of JSONL.
pub fn read_sft(
    reader: impl std::io::Read,
    source_name: &str,
    encoder: Option<&dyn TextEncoder>,
    opts: &DataOptions,
) -> Result<Vec<SftExample>> {
    read_rows(std::io::BufReader::new(reader), source_name, encoder, opts, sft_row)
}

/// SFT rows from a JSONL file.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_sft(
    path: impl AsRef<std::path::Path>,
    encoder: Option<&dyn TextEncoder>,
    opts: &DataOptions,
) -> Result<Vec<SftExample>> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    read_sft(file, &path.display().to_string(), encoder, opts)
}
