//! Print a GPT checkpoint's full next-token log-probabilities for a sequence of token ids, as JSON, computed on the
//! GPU (the model's forward plan, then a log-softmax over its logits: `Gpt::full_logprobs`).
//!
//!     cargo run --release --example logprobs -- runs/sft 119,104,97,116
//!
//! prints `{"logprobs": [[V floats], ... one row per id]}` to stdout: row i is log p(next token | ids[..=i]).
//! It is the hook for comparing dpo3d with another implementation (e.g. transformers' `GPT2LMHeadModel` on the same
//! checkpoint: `torch.log_softmax(model(ids).logits, -1)`).

use std::path::PathBuf;

use clap::Parser;
use dpo3d::checkpoint::load_gpt;
use dpo3d::model::Gpt;
use dpo3d::{Error, Gpu, Result};

#[derive(Parser, Debug)]
#[command(about = "Full next-token log-probabilities of a GPT checkpoint for a list of token ids, as JSON on stdout")]
struct Args {
    /// Checkpoint directory (config.json + model.safetensors), e.g. written by `examples/sft.rs`.
    dir: PathBuf,
    /// Token ids, comma-separated (e.g. 119,104,97,116); at most the model's context, each below its vocabulary.
    ids: String,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// "5,17,3" -> [5, 17, 3], with an error naming the offending entry.
fn parse_ids(s: &str, vocab_size: usize, context: usize) -> Result<Vec<u32>> {
    let ids = s
        .split(',')
        .enumerate()
        .map(|(i, part)| {
            let part = part.trim();
            let id: u64 = part.parse().map_err(|_| {
                Error::config(format!(
                    "token id #{} is {part:?}, not a non-negative integer (expected e.g. 5,17,3)",
                    i + 1
                ))
            })?;
            if id >= vocab_size as u64 {
                return Err(Error::config(format!(
                    "token id #{} is {id}, outside the model's vocabulary (V = {vocab_size}: ids 0..={})",
                    i + 1,
                    vocab_size - 1
                )));
            }
            Ok(id as u32)
        })
        .collect::<Result<Vec<u32>>>()?;
    if ids.len() > context {
        return Err(Error::config(format!("{} token ids given but the model's context is {context}", ids.len())));
    }
    Ok(ids)
}

fn run(args: &Args) -> Result<()> {
    let (cfg, params) = load_gpt(&args.dir)?;
    let ids = parse_ids(&args.ids, cfg.vocab_size, cfg.context)?;
    let gpu = Gpu::new_blocking()?;
    let gpt = Gpt::new(&gpu, &cfg, 1, ids.len(), &params)?; // B = 1, T = number of ids
    let logps = pollster::block_on(gpt.full_logprobs(&gpu, &ids))?; // (T, V)
                                                                    // Serialized straight from f32 (not through serde_json::Value, which widens to f64), so each number is the
                                                                    // shortest decimal that reads back to the same f32.
    #[derive(serde::Serialize)]
    struct Output<'a> {
        logprobs: Vec<&'a [f32]>, // (T, V)
    }
    let out = Output { logprobs: logps.chunks(cfg.vocab_size).collect() };
    println!("{}", serde_json::to_string(&out).expect("serializes"));
    Ok(())
}
