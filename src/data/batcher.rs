//! `Batcher`: the order in which a trainer sees a data set. Every epoch is a fresh permutation of the rows, drawn from
//! the run's seed and the epoch number alone (so a resumed run needs only `(epoch, cursor)` to continue the same
//! order), cut into batches of B rows; the short last batch is dropped or topped up from the start of the same
//! epoch's order (`LastBatch`). Collating the rows into fixed (B, T) arrays with padding and masks is
//! `collate_preferences` / `collate_sft`; `truncate_pair` / `truncate_sft` shorten over-long rows as TRL does.

use serde::{Deserialize, Serialize};

use super::{PreferencePair, SftExample};
use crate::rng::Rng;
use crate::{Error, Result};

/// What to do with the last, short batch of an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LastBatch {
    /// Skip it (TRL's `dataloader_drop_last = true`); an epoch is `n / B` batches.
    Drop,
    /// Fill it with rows from the start of the epoch's order; an epoch is `ceil(n / B)` batches.
    TopUp,
}

/// Where a `Batcher` stands: all a resumed run needs to continue the same sequence of batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatcherState {
    /// Epochs started so far (0 before the first batch).
    pub epoch: u64,
    /// Batches already taken from the current epoch.
    pub cursor: usize,
}

/// Batches of row indices into a data set of `n` rows: B per batch, reshuffled every epoch from `seed`.
#[derive(Clone, Debug)]
pub struct Batcher {
    /// Rows in the data set.
    pub n: usize,
    /// B: rows per batch.
    pub b: usize,
    pub seed: u64,
    /// Shuffle each epoch (false: rows in file order, e.g. for evaluation).
    pub shuffle: bool,
    pub last: LastBatch,
    state: BatcherState,
    order: Vec<usize>,
}

impl Batcher {
    pub fn new(n: usize, b: usize, seed: u64, shuffle: bool, last: LastBatch) -> Result<Batcher> {
        if b == 0 {
            return Err(Error::config("batch size must be positive"));
        }
        if n == 0 || (last == LastBatch::Drop && n < b) {
            return Err(Error::config(format!(
                "{n} rows cannot fill one batch of {b}: add rows or lower the batch size"
            )));
        }
        Ok(Batcher { n, b, seed, shuffle, last, state: BatcherState { epoch: 0, cursor: 0 }, order: Vec::new() })
    }

    /// Batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        match self.last {
            LastBatch::Drop => self.n / self.b,
            LastBatch::TopUp => self.n.div_ceil(self.b),
        }
    }

    /// The permutation of epoch `epoch` (0-based): depends only on (seed, epoch).
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.n).collect();
        if self.shuffle {
            let mut rng = Rng::new(self.seed ^ epoch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            rng.shuffle(&mut order);
        }
        order
    }

    pub fn state(&self) -> BatcherState {
        self.state
    }

    /// Continue from a saved state (the same data set size, B and seed give the same batches from here on).
    pub fn set_state(&mut self, state: BatcherState) {
        self.state = state;
        self.order = if state.epoch > 0 { self.epoch_order(state.epoch - 1) } else { Vec::new() };
    }

    /// The epoch (1-based) the last batch came from, as a fraction: TRL's `epoch` log field.
    pub fn epoch_progress(&self) -> f64 {
        if self.state.epoch == 0 {
            return 0.0;
        }
        (self.state.epoch - 1) as f64 + self.state.cursor as f64 / self.batches_per_epoch() as f64
    }

    /// The next batch's B row indices.
    pub fn next_indices(&mut self) -> Vec<usize> {
        if self.state.epoch == 0 || self.state.cursor == self.batches_per_epoch() {
            self.order = self.epoch_order(self.state.epoch);
            self.state.epoch += 1;
            self.state.cursor = 0;
        }
        let start = self.state.cursor * self.b;
        self.state.cursor += 1;
        (start..start + self.b).map(|i| self.order[i % self.n]).collect()
    }

    /// The next batch's rows, cloned out of `rows` (which must have `n` rows).
    pub fn next_rows<T: Clone>(&mut self, rows: &[T]) -> Vec<T> {
        debug_assert_eq!(rows.len(), self.n);
        self.next_indices().into_iter().map(|i| rows[i].clone()).collect()
    }
}

/// Truncates a pair as TRL's DPOTrainer does: the prompt keeps its last `max_prompt_length` tokens, then each
/// response keeps its first `max_length - prompt` tokens (and at least one). Returns whether anything was cut.
pub fn truncate_pair(pair: &mut PreferencePair, max_length: usize, max_prompt_length: Option<usize>) -> bool {
    let mut cut = false;
    let max_prompt = max_prompt_length.unwrap_or(usize::MAX).min(max_length.saturating_sub(1)).max(1);
    if pair.prompt.len() > max_prompt {
        pair.prompt.drain(..pair.prompt.len() - max_prompt);
        cut = true;
    }
    let room = max_length.saturating_sub(pair.prompt.len()).max(1);
    for r in [&mut pair.chosen, &mut pair.rejected] {
        if r.len() > room {
            r.truncate(room);
            cut = true;
        }
    }
    cut
}

/// Truncates an SFT example as TRL's SFTTrainer does: the sequence keeps its first `max_length` tokens (at least
/// one completion token survives: the prompt is cut from the left if it alone fills `max_length`). Returns whether
/// anything was cut.
pub fn truncate_sft(ex: &mut SftExample, max_length: usize) -> bool {
    if ex.len() <= max_length {
        return false;
    }
    let max_prompt = max_length.saturating_sub(1).max(1);
    if ex.prompt.len() > max_prompt {
        ex.prompt.drain(..ex.prompt.len() - max_prompt);
    }
    let room = max_length.saturating_sub(ex.prompt.len()).max(1);
    ex.completion.truncate(room);
    true
}
