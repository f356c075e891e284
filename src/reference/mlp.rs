//! The CPU reference of the paper's toy policy: one-hot prompt (P) -> fc1 -> ReLU -> fc2 -> ReLU -> fc3 -> response
//! logits (R) (with `depth` hidden layers: depth - 1 H -> H layers, then the head), with an optional scalar head (`score`, (1, H) + bias) on the last hidden layer for toy reward and
//! value models. The GPU MLP's logits, log-probabilities and gradients are compared against it; its own gradients
//! are checked by finite differences (tests/reference_models.rs).
//!
//! A one-hot input times fc1.weight^T is a column select, so the first layer is written as one: h1pre[b, :] =
//! fc1.weight[:, prompt[b]] (+ fc1.bias). Parameters are packed in `MlpConfig::param_shapes` order, no padding;
//! gradients use the same layout, and backward accumulates (+=) like every backward in this crate.
//!
//! Dimension letters: B batch (rows), P prompts, H hidden, R responses.

use crate::model::config::MlpConfig;
use crate::reference::elementwise::{relu_backward, relu_forward};
use crate::reference::gpt::{packed_offsets, split_packed, split_packed_mut};
use crate::reference::logprobs::{log_softmax, logprobs_backward, logprobs_forward};
use crate::reference::matmul::{matmul_backward, matmul_forward};

/// Every MLP tensor as a view `S` (`&[f32]` or `&mut [f32]`) into one packed buffer.
#[derive(Debug)]
pub struct MlpTensors<S> {
    pub fc1w: S,             // (H, P)
    pub fc1b: Option<S>,     // (H), iff cfg.first_bias
    pub hidden: Vec<(S, S)>, // fc2 .. fc{depth}: weight (H, H), bias (H)
    pub headw: S,            // fc{depth + 1}.weight (R, H)
    pub headb: S,            // (R)
    pub scorew: Option<S>,   // (1, H), iff cfg.scalar_head
    pub scoreb: Option<S>,   // (1), iff cfg.scalar_head
}

impl<S> MlpTensors<S> {
    fn from_parts(cfg: &MlpConfig, parts: Vec<S>) -> MlpTensors<S> {
        let mut it = parts.into_iter();
        let mut next = || it.next().expect("MLP parameter table shorter than the config says");
        let fc1w = next();
        let fc1b = if cfg.first_bias { Some(next()) } else { None };
        let hidden = (2..=cfg.depth).map(|_| (next(), next())).collect();
        let (headw, headb) = (next(), next());
        let (scorew, scoreb) = if cfg.scalar_head { (Some(next()), Some(next())) } else { (None, None) };
        MlpTensors { fc1w, fc1b, hidden, headw, headb, scorew, scoreb }
    }
}

/// (name, offset into the packed buffer, shape) of every tensor, in packing order.
pub fn offsets(cfg: &MlpConfig) -> Vec<(String, usize, Vec<usize>)> {
    packed_offsets(cfg.param_shapes())
}

pub fn num_params(cfg: &MlpConfig) -> usize {
    cfg.param_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum()
}

fn sizes(cfg: &MlpConfig) -> Vec<usize> {
    cfg.param_shapes().iter().map(|(_, s)| s.iter().product()).collect()
}

pub fn views<'a>(cfg: &MlpConfig, buf: &'a [f32]) -> MlpTensors<&'a [f32]> {
    MlpTensors::from_parts(cfg, split_packed(buf, &sizes(cfg)))
}

pub fn views_mut<'a>(cfg: &MlpConfig, buf: &'a mut [f32]) -> MlpTensors<&'a mut [f32]> {
    MlpTensors::from_parts(cfg, split_packed_mut(buf, &sizes(cfg)))
}

/// What the forward pass keeps for the backward pass.
#[derive(Clone, Debug)]
pub struct MlpActs {
    pub b: usize,
    pub hpre: Vec<Vec<f32>>, // depth x (B, H): hidden layer l's output before ReLU (fc1 first)
    pub h: Vec<Vec<f32>>,    // depth x (B, H)
    pub logits: Vec<f32>,    // (B, R)
    pub lse: Vec<f32>,       // (B)
    pub logps: Vec<f32>,     // (B) log p(targets[b] | prompts[b])
    pub scalar: Option<Vec<f32>>, // (B) h_last @ score.weight^T + score.bias, iff cfg.scalar_head
}

/// The reference MLP: a config and its packed parameters.
#[derive(Clone, Debug)]
pub struct MlpRef {
    pub cfg: MlpConfig,
    pub params: Vec<f32>, // packed in param_shapes order, no padding
}

impl MlpRef {
    /// Wrap packed parameters (from `model::init`, the GPU or a checkpoint).
    pub fn from_params(cfg: &MlpConfig, params: Vec<f32>) -> MlpRef {
        assert_eq!(params.len(), num_params(cfg), "packed MLP parameter count");
        MlpRef { cfg: cfg.clone(), params }
    }

    pub fn views(&self) -> MlpTensors<&[f32]> {
        views(&self.cfg, &self.params)
    }

    /// The tensor called `name` (a `param_shapes` name); panics if there is none.
    pub fn tensor(&self, name: &str) -> &[f32] {
        let (off, n) = self.locate(name);
        &self.params[off..off + n]
    }

    pub fn tensor_mut(&mut self, name: &str) -> &mut [f32] {
        let (off, n) = self.locate(name);
        &mut self.params[off..off + n]
    }

    fn locate(&self, name: &str) -> (usize, usize) {
        let (_, off, shape) = offsets(&self.cfg)
            .into_iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no MLP tensor named {name}"));
        (off, shape.iter().product())
    }

    pub fn forward(
        &self,
        prompts: &[u32], // (B) prompt index of each row, < P
        targets: &[u32], // (B) response whose log-probability is taken, < R
    ) -> MlpActs {
        let (p, h, r) = (self.cfg.prompts, self.cfg.hidden, self.cfg.responses);
        let b = prompts.len();
        assert_eq!(targets.len(), b, "targets must be (B)");
        let w = self.views();
        let z = |n: usize| vec![0.0f32; n];
        let mut hpre = vec![z(b * h)];
        // fc1 on a one-hot input: select column prompts[i] of fc1.weight (H, P)
        for (i, &pi) in prompts.iter().enumerate() {
            let pi = pi as usize;
            assert!(pi < p, "prompt index {pi} out of range (P = {p})");
            for j in 0..h {
                let bias = w.fc1b.map_or(0.0, |bb| bb[j]);
                hpre[0][i * h + j] = w.fc1w[j * p + pi] + bias;
            }
        }
        let mut hs = vec![z(b * h)];
        relu_forward(&mut hs[0], &hpre[0]);
        for (wl, bl) in &w.hidden {
            let mut pre = z(b * h);
            matmul_forward(&mut pre, hs.last().expect("a hidden layer"), wl, Some(bl), b, h, h);
            let mut out = z(b * h);
            relu_forward(&mut out, &pre);
            hpre.push(pre);
            hs.push(out);
        }
        let last = hs.last().expect("a hidden layer");
        let (mut logits, mut lse, mut logps) = (z(b * r), z(b), z(b));
        matmul_forward(&mut logits, last, w.headw, Some(w.headb), b, h, r);
        logprobs_forward(&mut logps, &mut lse, &logits, targets, b, r);
        let scalar = match (self.cfg.scalar_head, w.scorew, w.scoreb) {
            (true, Some(sw), Some(sb)) => {
                let mut sc = z(b);
                matmul_forward(&mut sc, last, sw, Some(sb), b, h, 1);
                Some(sc)
            }
            _ => None,
        };
        MlpActs { b, hpre, h: hs, logits, lse, logps, scalar }
    }

    /// Packed parameter gradients from d loss / d logps (B) and, for a scalar head, d loss / d scalar (B).
    pub fn backward(
        &self,
        acts: &MlpActs,
        prompts: &[u32],         // (B)
        targets: &[u32],         // (B)
        dlogps: &[f32],          // (B)
        dscalar: Option<&[f32]>, // (B)
    ) -> Vec<f32> {
        let mut grads = vec![0.0f32; self.params.len()];
        self.backward_into(&mut grads, acts, prompts, targets, dlogps, dscalar);
        grads
    }

    /// `backward`, accumulating (+=) into `grads` (packed, same layout as `params`).
    pub fn backward_into(
        &self,
        grads: &mut [f32],
        acts: &MlpActs,
        prompts: &[u32],         // (B)
        targets: &[u32],         // (B)
        dlogps: &[f32],          // (B)
        dscalar: Option<&[f32]>, // (B)
    ) {
        let (p, h, r) = (self.cfg.prompts, self.cfg.hidden, self.cfg.responses);
        let b = acts.b;
        assert_eq!(prompts.len(), b, "prompts must be (B)");
        assert_eq!(dlogps.len(), b, "dlogps must be (B)");
        assert!(dscalar.is_none() || self.cfg.scalar_head, "dscalar given but the config has no scalar head");
        let w = self.views();
        let mut g = views_mut(&self.cfg, grads);
        let z = |n: usize| vec![0.0f32; n];

        let depth = self.cfg.depth;
        let mut dlogits = z(b * r); // (B, R)
        logprobs_backward(&mut dlogits, dlogps, &acts.logits, &acts.lse, targets, b, r);
        let mut dh = z(b * h); // (B, H) d loss / d last hidden layer
        matmul_backward(
            Some(&mut dh),
            &mut *g.headw,
            Some(&mut *g.headb),
            &dlogits,
            &acts.h[depth - 1],
            w.headw,
            b,
            h,
            r,
        );
        if let (Some(dscalar), Some(sw), Some(dsw), Some(dsb)) =
            (dscalar, w.scorew, g.scorew.as_deref_mut(), g.scoreb.as_deref_mut())
        {
            assert_eq!(dscalar.len(), b, "dscalar must be (B)");
            matmul_backward(Some(&mut dh), dsw, Some(dsb), dscalar, &acts.h[depth - 1], sw, b, h, 1);
        }
        // Hidden layers depth .. 2: through the ReLU, then the H -> H layer into the layer below.
        for l in (1..depth).rev() {
            let mut dpre = z(b * h); // (B, H)
            relu_backward(&mut dpre, &acts.hpre[l], &dh);
            let mut dbelow = z(b * h);
            let (gw, gb) = &mut g.hidden[l - 1];
            matmul_backward(Some(&mut dbelow), gw, Some(gb), &dpre, &acts.h[l - 1], w.hidden[l - 1].0, b, h, h);
            dh = dbelow;
        }
        let mut dh1pre = z(b * h); // (B, H)
        relu_backward(&mut dh1pre, &acts.hpre[0], &dh);
        // fc1: the column select's backward scatters each row into its prompt's column
        for (i, &pi) in prompts.iter().enumerate() {
            let pi = pi as usize;
            for j in 0..h {
                g.fc1w[j * p + pi] += dh1pre[i * h + j];
            }
        }
        if let Some(dfc1b) = g.fc1b.as_deref_mut() {
            for i in 0..b {
                for j in 0..h {
                    dfc1b[j] += dh1pre[i * h + j];
                }
            }
        }
    }

    /// The policy's full response distribution: (P, R) softmax probabilities, one row per prompt.
    pub fn probs(&self) -> Vec<f32> {
        let (p, r) = (self.cfg.prompts, self.cfg.responses);
        let prompts: Vec<u32> = (0..p as u32).collect();
        let acts = self.forward(&prompts, &vec![0; p]);
        let mut logp = vec![0.0f32; p * r];
        log_softmax(&mut logp, &acts.logits, p, r);
        logp.iter().map(|x| x.exp()).collect()
    }
}
