//! What every `dpo3d` subcommand sets up before touching the GPU: the tokenizer, the starting model (a checkpoint
//! or one from scratch), the data (with TRL's formats and truncation), and the output directory's state. Every
//! problem surfaces here, before anything is written.

use std::path::{Path, PathBuf};

use dpo3d::checkpoint::{gpt_config_from_json, load_gpt};
use dpo3d::data::{
    parse_preferences, parse_sft, truncate_pair, truncate_sft, ByteTokenizer, DataOptions, HfTokenizer, PreferencePair,
    SftExample, TextEncoder,
};
use dpo3d::model::GptConfig;
use dpo3d::rng::Rng;
use dpo3d::{Error, Result};
use serde_json::Value;

use crate::config::{read_structured, Config};

/// The initial weights of a model from scratch (`dpo3d::model::init::gpt_params`: GPT-2's initialisation).
pub fn init_params(cfg: &GptConfig, seed: u64) -> Result<Vec<f32>> {
    cfg.validate()?;
    dpo3d::model::init::gpt_params(cfg, seed)
}

pub enum Tok {
    Bytes,
    Hf { tok: Box<HfTokenizer>, path: PathBuf },
}

impl Tok {
    pub fn encoder(&self) -> &dyn TextEncoder {
        match self {
            Tok::Bytes => &ByteTokenizer,
            Tok::Hf { tok, .. } => tok.as_ref(),
        }
    }
    pub fn vocab_size(&self) -> usize {
        self.encoder().vocab_size().unwrap_or(ByteTokenizer::VOCAB_SIZE)
    }
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Tok::Bytes => Ok(ByteTokenizer.decode(ids)),
            Tok::Hf { tok, .. } => tok.decode(ids),
        }
    }
    /// The tokenizer.json text to copy into checkpoints (none for bytes).
    pub fn json(&self) -> Result<Option<String>> {
        match self {
            Tok::Bytes => Ok(None),
            Tok::Hf { path, .. } => Ok(Some(std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?)),
        }
    }
    pub fn describe(&self) -> String {
        match self {
            Tok::Bytes => "UTF-8 bytes (V = 256)".into(),
            Tok::Hf { path, .. } => format!("{} (V = {})", path.display(), self.vocab_size()),
        }
    }
    /// The id that pads batches and ends generations: `<|endoftext|>` when the tokenizer has it, else 0.
    pub fn eos_id(&self) -> u32 {
        match self {
            Tok::Bytes => 0,
            Tok::Hf { tok, .. } => tok.inner().token_to_id("<|endoftext|>").unwrap_or(0),
        }
    }
}

/// `--tokenizer FILE`, else `MODEL/tokenizer.json` when the model has one, else bytes.
pub fn load_tokenizer(explicit: Option<&str>, model_dir: Option<&Path>) -> Result<Tok> {
    if let Some(p) = explicit {
        let path = PathBuf::from(p);
        if !path.is_file() {
            return Err(Error::config(format!("tokenizer {}: no such file", path.display())));
        }
        return Ok(Tok::Hf { tok: Box::new(HfTokenizer::from_file(&path)?), path });
    }
    if let Some(dir) = model_dir {
        let path = dir.join("tokenizer.json");
        if path.is_file() {
            return Ok(Tok::Hf { tok: Box::new(HfTokenizer::from_file(&path)?), path });
        }
    }
    Ok(Tok::Bytes)
}

/// The starting model: `model_name_or_path` (a checkpoint), else `init_config` or the `layers`/`width`/`heads` keys
/// (from scratch, seeded; V from the tokenizer, context from `max_length`).
pub fn starting_model(cfg: &Config, tok: &Tok) -> Result<(GptConfig, Vec<f32>)> {
    let (mcfg, params, from) = if let Some(dir) = &cfg.model_name_or_path {
        let dir = PathBuf::from(dir);
        if !dir.join("config.json").is_file() {
            return Err(Error::config(format!(
                "model {}: no config.json there (a model is a directory with model.safetensors and config.json)",
                dir.display()
            )));
        }
        let (mcfg, params) = load_gpt(&dir)?;
        (mcfg, params, dir.display().to_string())
    } else {
        let mcfg = match &cfg.init_config {
            Some(file) => model_config_file(Path::new(file), tok.vocab_size())?,
            None => GptConfig {
                vocab_size: tok.vocab_size(),
                context: cfg.max_length,
                layers: cfg.layers,
                heads: cfg.heads,
                width: cfg.width,
                scalar_head: false,
            },
        };
        let params = init_params(&mcfg, cfg.seed)?;
        (mcfg, params, cfg.init_config.clone().unwrap_or_else(|| "the layers/width/heads keys".into()))
    };
    check_vocab(tok, &mcfg, &from)?;
    Ok((mcfg, params))
}

pub fn check_vocab(tok: &Tok, mcfg: &GptConfig, model: &str) -> Result<()> {
    if tok.vocab_size() > mcfg.vocab_size {
        return Err(Error::config(format!(
            "vocabulary mismatch: tokenizer {} has {} tokens but model {model} has vocab_size {}",
            tok.describe(),
            tok.vocab_size(),
            mcfg.vocab_size
        )));
    }
    Ok(())
}

/// A model config file: a GPT2Config (`n_embd`, ...) or dpo3d's own keys; a missing `vocab_size` is the tokenizer's.
fn model_config_file(path: &Path, vocab: usize) -> Result<GptConfig> {
    let mut v = read_structured(path)?;
    if v.get("n_embd").is_some() {
        return gpt_config_from_json(&v, path);
    }
    if let Value::Object(o) = &mut v {
        o.entry("vocab_size").or_insert(Value::from(vocab));
    }
    let c: GptConfig = serde_path_to_error::deserialize(v)
        .map_err(|e| Error::config(format!("{}: key `{}`: {}", path.display(), e.path(), e.inner())))?;
    c.validate()?;
    Ok(c)
}

/// Rewrites TRL's other row formats, line by line (so errors keep their line numbers), into the loaders' own:
/// implicit-prompt preferences `{"chosen", "rejected"}` (the prompt is their common text prefix, as TRL's
/// `extract_prompt`) and SFT language-modeling rows `{"text"}` (the first character is the prompt, the rest the
/// completion, so every later token is trained on).
fn normalise_rows(text: &str, sft: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim();
        let row = serde_json::from_str::<Value>(body).ok();
        let rewritten = row.and_then(|v| {
            let o = v.as_object()?;
            if o.contains_key("prompt") {
                return None;
            }
            let mut o = o.clone();
            if sft {
                let text = o.remove("text")?;
                let text = text.as_str()?;
                let first = text.chars().next()?;
                let (p, c) = text.split_at(first.len_utf8());
                o.insert("prompt".into(), Value::from(p));
                o.insert("completion".into(), Value::from(c));
            } else {
                let (c, r) = (o.get("chosen")?.as_str()?.to_string(), o.get("rejected")?.as_str()?.to_string());
                let mut k = c.char_indices().zip(r.chars()).take_while(|((_, a), b)| a == b).count();
                // Leave each response at least one character.
                while k > 0 && (k >= c.chars().count() || k >= r.chars().count()) {
                    k -= 1;
                }
                let split = c.char_indices().nth(k).map_or(c.len(), |(i, _)| i);
                let rsplit = r.char_indices().nth(k).map_or(r.len(), |(i, _)| i);
                o.insert("prompt".into(), Value::from(&c[..split]));
                o.insert("chosen".into(), Value::from(&c[split..]));
                o.insert("rejected".into(), Value::from(&r[rsplit..]));
            }
            Some(serde_json::to_string(&o).expect("row serializes"))
        });
        match rewritten {
            Some(s) => {
                out.push_str(&s);
                out.push('\n');
            }
            None => out.push_str(line),
        }
    }
    out
}

fn read_text(path: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

pub fn load_pairs(path: &str, tok: &Tok, vocab: usize) -> Result<Vec<PreferencePair>> {
    let text = normalise_rows(&read_text(path)?, false);
    let opts = DataOptions { vocab_size: Some(vocab), max_len: None };
    let rows = parse_preferences(&text, path, Some(tok.encoder()), &opts)?;
    if rows.is_empty() {
        return Err(Error::config(format!("{path}: no rows")));
    }
    Ok(rows)
}

pub fn load_examples(path: &str, tok: &Tok, vocab: usize) -> Result<Vec<SftExample>> {
    let text = normalise_rows(&read_text(path)?, true);
    let opts = DataOptions { vocab_size: Some(vocab), max_len: None };
    let rows = parse_sft(&text, path, Some(tok.encoder()), &opts)?;
    if rows.is_empty() {
        return Err(Error::config(format!("{path}: no rows")));
    }
    Ok(rows)
}

/// Splits off `frac` of the rows (seeded shuffle, as TRL's `train_test_split`) as the evaluation set.
pub fn split<T: Clone>(rows: Vec<T>, frac: f64, seed: u64) -> Result<(Vec<T>, Vec<T>)> {
    if !(0.0..1.0).contains(&frac) {
        return Err(Error::config(format!("eval_split must be in [0, 1), got {frac}")));
    }
    let n_eval = (frac * rows.len() as f64).ceil() as usize;
    if n_eval == 0 {
        return Ok((rows, Vec::new()));
    }
    if n_eval >= rows.len() {
        return Err(Error::config("eval_split leaves no training rows"));
    }
    let mut idx: Vec<usize> = (0..rows.len()).collect();
    Rng::new(seed ^ 0xE7A1).shuffle(&mut idx);
    let eval = idx[..n_eval].iter().map(|&i| rows[i].clone()).collect();
    let mut train_idx = idx[n_eval..].to_vec();
    train_idx.sort_unstable();
    Ok((train_idx.iter().map(|&i| rows[i].clone()).collect(), eval))
}

/// Truncates pairs to `max_length` (and the prompt to `max_prompt_length`); returns how many were cut.
pub fn truncate_pairs(rows: &mut [PreferencePair], max_length: usize, max_prompt: Option<usize>) -> usize {
    rows.iter_mut().map(|p| truncate_pair(p, max_length, max_prompt) as usize).sum()
}

pub fn truncate_examples(rows: &mut [SftExample], max_length: usize, max_prompt: Option<usize>) -> usize {
    rows.iter_mut()
        .map(|e| {
            let mut cut = false;
            if let Some(mp) = max_prompt {
                if e.prompt.len() > mp.max(1) {
                    e.prompt.drain(..e.prompt.len() - mp.max(1));
                    cut = true;
                }
            }
            (truncate_sft(e, max_length) || cut) as usize
        })
        .sum()
}
