//! Training data: preference pairs (prompt, chosen, rejected) and SFT examples (prompt, completion) as token ids,
//! read from JSONL ([`jsonl`]), tokenized ([`tokenize`]), ordered into batches by a seeded [`Batcher`] (with TRL's
//! truncation, [`batcher`]), collated into fixed-shape batches for the GPU trainers,
//! and a small generated corpus ([`toy_corpus`], [`toy_preferences`]) that ships with the crate so examples and tests
//! need no downloads. Compiles for wasm32 (only the `load_*` path readers and [`HfTokenizer`] are native-only).
//!
//! Batch layout (TRL's concatenated layout for preferences): a sequence is `prompt ++ response`; position `i` holds
//! input `tokens[i] = seq[i]` and target `targets[i] = seq[i + 1]`; `mask[i] = 1.0` exactly where `i + 1` indexes a
//! response token, so the loss sees log p(response | prompt) and nothing else. Padding (and the last token, which has
//! no target) has target `pad_id` and mask 0.

pub mod batcher;
pub mod jsonl;
pub mod tasks;
pub mod tokenize;

pub use batcher::{truncate_pair, truncate_sft, Batcher, BatcherState, LastBatch};

#[cfg(not(target_arch = "wasm32"))]
pub use jsonl::{load_preferences, load_sft};
pub use jsonl::{parse_preferences, parse_sft, read_preferences, read_sft};
#[cfg(not(target_arch = "wasm32"))]
pub use tokenize::HfTokenizer;
pub use tokenize::{ByteTokenizer, TextEncoder};

use crate::rng::Rng;
use crate::{Error, Result};

/// One preference row as token ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreferencePair {
    pub prompt: Vec<u32>,
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
}

impl PreferencePair {
    /// Length of the longer of `prompt ++ chosen` and `prompt ++ rejected`: the T this pair needs.
    pub fn max_len(&self) -> usize {
        self.prompt.len() + self.chosen.len().max(self.rejected.len())
    }
}

/// One SFT row as token ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SftExample {
    pub prompt: Vec<u32>,
    pub completion: Vec<u32>,
}

impl SftExample {
    /// Length of `prompt ++ completion`: the T this example needs.
    pub fn len(&self) -> usize {
        self.prompt.len() + self.completion.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks applied while reading a data file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataOptions {
    /// Reject token ids `>= vocab_size` (the model's V).
    pub vocab_size: Option<usize>,
    /// Reject rows whose `prompt ++ response` is longer than this (the model's context T). Never truncates.
    pub max_len: Option<usize>,
}

/// A batch of preference pairs, every array (2B, T): rows 0..B the chosen sequences, rows B..2B the rejected ones
/// (row `B + i` pairs with row `i`).
#[derive(Clone, Debug, PartialEq)]
pub struct PreferenceBatch {
    /// B: number of pairs
    pub b: usize,
    /// T
    pub t: usize,
    /// (2B, T) input ids
    pub tokens: Vec<u32>,
    /// (2B, T) next-token ids
    pub targets: Vec<u32>,
    /// (2B, T) 1.0 where the target is a response token
    pub mask: Vec<f32>,
}

/// A batch of SFT examples, every array (B, T).
#[derive(Clone, Debug, PartialEq)]
pub struct SftBatch {
    /// B
    pub b: usize,
    /// T
    pub t: usize,
    /// (B, T) input ids
    pub tokens: Vec<u32>,
    /// (B, T) next-token ids
    pub targets: Vec<u32>,
    /// (B, T) 1.0 where the target is a completion token
    pub mask: Vec<f32>,
}

/// Writes one sequence `prompt ++ response` into a row of T positions (see the module docs for the layout).
fn fill_row(tokens: &mut [u32], targets: &mut [u32], mask: &mut [f32], prompt: &[u32], response: &[u32], pad_id: u32) {
    let p = prompt.len();
    let len = p + response.len();
    let seq = |i: usize| if i < p { prompt[i] } else { response[i - p] };
    for i in 0..tokens.len() {
        tokens[i] = if i < len { seq(i) } else { pad_id };
        targets[i] = if i + 1 < len { seq(i + 1) } else { pad_id };
        mask[i] = if i + 1 < len && i + 1 >= p { 1.0 } else { 0.0 };
    }
}

fn check_fits(what: &str, i: usize, n: usize, t: usize) -> Result<()> {
    if n > t {
        return Err(Error::config(format!(
            "{what} {i} is {n} tokens, longer than T = {t}; read the data with DataOptions {{ max_len: Some(T) }} so \
             the file and line are reported, or raise T"
        )));
    }
    Ok(())
}

/// Pads `pairs` to T and lays them out chosen-then-rejected, (2B, T). Errors (never truncates) when a sequence is
/// longer than T.
pub fn collate_preferences(pairs: &[PreferencePair], t: usize, pad_id: u32) -> Result<PreferenceBatch> {
    if pairs.is_empty() || t == 0 {
        return Err(Error::config("collate_preferences needs at least one pair and T > 0"));
    }
    let b = pairs.len();
    let (mut tokens, mut targets, mut mask) = (vec![0u32; 2 * b * t], vec![0u32; 2 * b * t], vec![0f32; 2 * b * t]);
    for (i, pair) in pairs.iter().enumerate() {
        check_fits("pair", i, pair.max_len(), t)?;
        for (row, response) in [(i, &pair.chosen), (b + i, &pair.rejected)] {
            let r = row * t..(row + 1) * t;
            fill_row(&mut tokens[r.clone()], &mut targets[r.clone()], &mut mask[r], &pair.prompt, response, pad_id);
        }
    }
    Ok(PreferenceBatch { b, t, tokens, targets, mask })
}

/// Pads `examples` to T, (B, T). Errors (never truncates) when a sequence is longer than T.
pub fn collate_sft(examples: &[SftExample], t: usize, pad_id: u32) -> Result<SftBatch> {
    if examples.is_empty() || t == 0 {
        return Err(Error::config("collate_sft needs at least one example and T > 0"));
    }
    let b = examples.len();
    let (mut tokens, mut targets, mut mask) = (vec![0u32; b * t], vec![0u32; b * t], vec![0f32; b * t]);
    for (i, ex) in examples.iter().enumerate() {
        check_fits("example", i, ex.len(), t)?;
        let r = i * t..(i + 1) * t;
        fill_row(&mut tokens[r.clone()], &mut targets[r.clone()], &mut mask[r], &ex.prompt, &ex.completion, pad_id);
    }
    Ok(SftBatch { b, t, tokens, targets, mask })
}

// ---- the generated toy corpus -------------------------------------------------------------------------------------

/// Every toy example (byte-level, [`ByteTokenizer`]) fits in this many tokens, prompt and response together.
pub const TOY_MAX_LEN: usize = 64;

/// (animal, where it sits): the fact a sentence example teaches. The place depends only on the animal.
const TOY_ANIMALS: [(&str, &str); 6] =
    [("cat", "mat"), ("dog", "rug"), ("owl", "branch"), ("frog", "log"), ("hen", "nest"), ("fox", "rock")];

/// Toy prompts come in two kinds, half each: one-digit addition (`"what is 3+4? "` -> `"3+4=7.\n"`) and a fixed
/// fact per animal (`"where did the cat sit? "` -> `"the cat sat on the mat.\n"`).
enum ToyPrompt {
    Sum(u32, u32),
    Animal(usize),
}

impl ToyPrompt {
    fn draw(rng: &mut Rng) -> ToyPrompt {
        if rng.below(2) == 0 {
            ToyPrompt::Sum(rng.below(10), rng.below(10))
        } else {
            ToyPrompt::Animal(rng.below(TOY_ANIMALS.len() as u32) as usize)
        }
    }

    fn prompt(&self) -> String {
        match *self {
            ToyPrompt::Sum(a, b) => format!("what is {a}+{b}? "),
            ToyPrompt::Animal(k) => format!("where did the {} sit? ", TOY_ANIMALS[k].0),
        }
    }

    /// The completion with the correct answer, or with `wrong` in its place.
    fn completion(&self, wrong: Option<&mut Rng>) -> String {
        match *self {
            ToyPrompt::Sum(a, b) => {
                let c = a + b;
                let answer = match wrong {
                    None => c,
                    Some(rng) => {
                        let d = 1 + rng.below(2); // off by one or two, up or down, never negative
                        if rng.below(2) == 0 && c >= d {
                            c - d
                        } else {
                            c + d
                        }
                    }
                };
                format!("{a}+{b}={answer}.\n")
            }
            ToyPrompt::Animal(k) => {
                let (animal, place) = TOY_ANIMALS[k];
                let place = match wrong {
                    None => place,
                    Some(rng) => {
                        let j = (k + 1 + rng.below(TOY_ANIMALS.len() as u32 - 1) as usize) % TOY_ANIMALS.len();
                        TOY_ANIMALS[j].1
                    }
                };
                format!("the {animal} sat on the {place}.\n")
            }
        }
    }
}

fn bytes(s: &str) -> Vec<u32> {
    s.bytes().map(u32::from).collect()
}

/// `n` SFT examples of short byte-level text ([`ByteTokenizer`], V = 256), deterministic in `seed`. Each is at most
/// [`TOY_MAX_LEN`] tokens.
pub fn toy_corpus(n: usize, seed: u64) -> Vec<SftExample> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let p = ToyPrompt::draw(&mut rng);
            SftExample { prompt: bytes(&p.prompt()), completion: bytes(&p.completion(None)) }
        })
        .collect()
}

/// `n` preference pairs over the same prompts as [`toy_corpus`]: chosen is the correct completion, rejected the same
/// sentence with a wrong answer (a sum off by one or two, another animal's place), so the two share most tokens.
/// Deterministic in `seed`; each sequence is at most [`TOY_MAX_LEN`] tokens.
pub fn toy_preferences(n: usize, seed: u64) -> Vec<PreferencePair> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let p = ToyPrompt::draw(&mut rng);
            let chosen = p.completion(None);
            let rejected = p.completion(Some(&mut rng));
            PreferencePair { prompt: bytes(&p.prompt()), chosen: bytes(&chosen), rejected: bytes(&rejected) }
        })
        .collect()
}
