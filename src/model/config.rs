//! Model configurations (serde) and the parameter table of each model: every tensor's name and shape, in the order
//! the parameters are packed into one GPU buffer. GPT tensor names are Hugging Face transformers' GPT-2 names, so a
//! checkpoint maps one to one; shapes here are dpo3d's internal (out, in) layout (HF's Conv1D stores the transpose,
//! and `checkpoint` converts).
//!
//! Dimension letters, used everywhere: B batch, T sequence length, C channels (width), V vocabulary, NH heads,
//! L layers, H hidden width of the MLP, P prompts (MLP inputs), R responses (MLP outputs).

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    /// V
    pub vocab_size: usize,
    /// maximum T (`n_positions` in GPT2Config)
    pub context: usize,
    /// L
    pub layers: usize,
    /// NH
    pub heads: usize,
    /// C
    pub width: usize,
    /// A scalar head on the final hidden state (`score.weight`, (1, C), no bias, as in HF's
    /// GPT2ForSequenceClassification): reward and value models.
    #[serde(default)]
    pub scalar_head: bool,
}

impl GptConfig {
    pub fn validate(&self) -> Result<()> {
        let z =
            |n: usize, what: &str| if n == 0 { Err(Error::config(format!("{what} must be positive"))) } else { Ok(()) };
        z(self.vocab_size, "vocab_size")?;
        z(self.context, "context")?;
        z(self.layers, "layers")?;
        z(self.heads, "heads")?;
        z(self.width, "width")?;
        if !self.width.is_multiple_of(self.heads) {
            return Err(Error::config(format!("heads ({}) must divide width ({})", self.heads, self.width)));
        }
        Ok(())
    }

    /// (name, shape) of every parameter, in packing order. Internal layout: linear weights are (out, in).
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (v, t, c) = (self.vocab_size, self.context, self.width);
        let mut p = vec![
            ("transformer.wte.weight".to_string(), vec![v, c]),
            ("transformer.wpe.weight".to_string(), vec![t, c]),
        ];
        for l in 0..self.layers {
            let h = |s: &str| format!("transformer.h.{l}.{s}");
            p.push((h("ln_1.weight"), vec![c]));
            p.push((h("ln_1.bias"), vec![c]));
            p.push((h("attn.c_attn.weight"), vec![3 * c, c]));
            p.push((h("attn.c_attn.bias"), vec![3 * c]));
            p.push((h("attn.c_proj.weight"), vec![c, c]));
            p.push((h("attn.c_proj.bias"), vec![c]));
            p.push((h("ln_2.weight"), vec![c]));
            p.push((h("ln_2.bias"), vec![c]));
            p.push((h("mlp.c_fc.weight"), vec![4 * c, c]));
            p.push((h("mlp.c_fc.bias"), vec![4 * c]));
            p.push((h("mlp.c_proj.weight"), vec![c, 4 * c]));
            p.push((h("mlp.c_proj.bias"), vec![c]));
        }
        p.push(("transformer.ln_f.weight".to_string(), vec![c]));
        p.push(("transformer.ln_f.bias".to_string(), vec![c]));
        if self.scalar_head {
            p.push(("score.weight".to_string(), vec![1, c]));
        }
        p
    }

    pub fn num_params(&self) -> usize {
        self.param_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }
}

/// The paper's toy policy: one-hot prompt (P) -> hidden (H) -> hidden (H) -> response logits (R), ReLU between
/// (`depth` hidden layers: 2 in the paper).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// P: number of prompts (one-hot input width)
    pub prompts: usize,
    /// H
    pub hidden: usize,
    /// R: number of responses (output logits)
    pub responses: usize,
    /// The paper's re-implementation uses no bias on the first layer.
    #[serde(default)]
    pub first_bias: bool,
    /// A scalar head on the last hidden layer (`score.weight` (1, H) and `score.bias` (1)): toy reward/value models.
    #[serde(default)]
    pub scalar_head: bool,
    /// Hidden layers (>= 1): fc1 (P -> H), then depth - 1 layers H -> H (fc2 .. fc{depth}), then the response head
    /// fc{depth + 1} (H -> R). The paper's toy has 2.
    #[serde(default = "two")]
    pub depth: usize,
}

fn two() -> usize {
    2
}

impl MlpConfig {
    pub fn paper_toy() -> MlpConfig {
        MlpConfig { prompts: 4, hidden: 256, responses: 10, first_bias: false, scalar_head: false, depth: 2 }
    }

    /// Name prefix of the response head: "fc3" for the paper's 2 hidden layers.
    pub fn head(&self) -> String {
        format!("fc{}", self.depth + 1)
    }

    pub fn validate(&self) -> Result<()> {
        if self.prompts == 0 || self.hidden == 0 || self.responses == 0 {
            return Err(Error::config("MLP prompts, hidden and responses must be positive"));
        }
        if !(1..=16).contains(&self.depth) {
            return Err(Error::config(format!("MLP depth (hidden layers) must be 1 to 16, got {}", self.depth)));
        }
        Ok(())
    }

    /// (name, shape) of every parameter, in packing order; weights are (out, in).
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (p, h, r) = (self.prompts, self.hidden, self.responses);
        let mut v = vec![("fc1.weight".to_string(), vec![h, p])];
        if self.first_bias {
            v.push(("fc1.bias".to_string(), vec![h]));
        }
        for l in 2..=self.depth {
            v.push((format!("fc{l}.weight"), vec![h, h]));
            v.push((format!("fc{l}.bias"), vec![h]));
        }
        v.push((format!("{}.weight", self.head()), vec![r, h]));
        v.push((format!("{}.bias", self.head()), vec![r]));
        if self.scalar_head {
            v.push(("score.weight".to_string(), vec![1, h]));
            v.push(("score.bias".to_string(), vec![1]));
        }
        v
    }
}
