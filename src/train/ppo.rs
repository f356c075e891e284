//! RLHF-PPO trainers: everything of a PPO step on the GPU in one command encoder and one submit, reading back only
//! the metrics.
//!
//! - [`PpoToyTrainer`]: the paper's toy MLP as a contextual bandit. Row i of the batch asks prompt i mod P; the
//!   policy samples one response (categorical, seeded, on the GPU); a [`RewardSource`] scores it (a known table r(x, y)
//!   on the GPU, or a toy reward-model MLP over (prompt, response) pairs); the sequence is one token, so the KL
//!   penalty, the score and GAE collapse to that token.
//! - [`PpoGptTrainer`]: a GPT generating `response_length` tokens after a fixed-length prompt (temperature, top-k,
//!   end of sequence), scored on the GPU by a rule ([`GptRewardSource::CountToken`]) or a reward-model GPT's scalar
//!   head at the last response token.
//!
//! A step: [generation: policy forward + sample, per token] -> policy, reference, value (and reward model) forwards
//! -> scores -> the PPO rollout plan (KL penalty, GAE, whitening, permutations) -> num_ppo_epochs x
//! num_mini_batches updates (forward, loss, zero gradients, backward, clip + AdamW for the policy and the value
//! model) -> metrics.
//!
//! Generation recomputes the full (B, T) forward for each new token instead of keeping a KV cache. Measured on
//! lavapipe (`tests/ppo_train.rs`, `measure_generation_recompute_vs_cached_step`, minimum of 20 runs, machine shared):
//! a (B, T) = (16, 8) forward of the V=8, C=32, L=1 test GPT takes 21.9 ms, a (16, 1) forward 3.5 ms (the same 16
//! dispatches); a cached decode step costs at least the latter, so a cache could make generation up to ~6x faster
//! there. But generation is only 16-23% of a PPO step at the test sizes (the rollout's three forwards and the
//! 4 x (forward + backward) updates of policy and value model dominate), so a cache would save at most 13-19% of a
//! step (also at V=32, T=16, C=64, L=2), while it needs a second, incremental forward path (a decode attention
//! kernel over cached keys and values, per-position plans). Recomputation was chosen; on a real GPU these forwards
//! are launch-latency bound with identical dispatch counts, which narrows the gap further (not measured here).
//!
//! The value model is a separate model with a scalar head by default; `PpoConfig::value_model = SharedTrunk` puts the
//! scalar head on the policy itself (one model, one optimizer, loss = policy loss + vf_coef * value loss).
//! Gradient clipping applies per model (the policy's and the separate value model's global norms separately).

use crate::gpu::{dispatch_count, Gpu, Plan, Readback, Tensor, TensorArena};
use crate::model::{Gpt, GptConfig, Mlp, MlpConfig, Policy};
use crate::objectives::ppo::{Ppo, PpoConfig, PpoMetrics, ValueModel};
use crate::ops::adamw::{self, AdamHyper};
use crate::ops::{elementwise, ppo as ppo_ops, sampling};
use crate::train::{run_step, OptimConfig, OptimizerKind};
use crate::{Error, Result};

/// The optimizer of a PPO step: `updates` AdamW (or SGD) updates recorded into one submit, each with its own
/// hyper-parameter block (its own bias corrections), written by `prepare` before the submit. Gradient clipping by
/// the global norm as in `train::Optimizer`.
pub struct MultiStepOptimizer {
    pub cfg: OptimConfig,
    /// Updates taken so far.
    pub step: u32,
    /// [global grad norm, clip scale] of the last update.
    pub norm: Tensor,
    hypers: Vec<Tensor>,
    /// One plan per update, in order.
    pub plans: Vec<Plan>,
    _state: Vec<Tensor>,
}

impl MultiStepOptimizer {
    pub fn new(
        gpu: &Gpu,
        params: &TensorArena,
        grads: &TensorArena,
        cfg: &OptimConfig,
        updates: usize,
    ) -> Result<Self> {
        let n = params.all.len;
        let norm = Tensor::zeros(gpu, "ppo grad norm", 2)?;
        let scratch = Tensor::zeros(gpu, "ppo grad norm scratch", adamw::grad_norm_scratch_len(n))?;
        let (m, v) = match cfg.kind {
            OptimizerKind::Adam => (Some(Tensor::zeros(gpu, "adam m", n)?), Some(Tensor::zeros(gpu, "adam v", n)?)),
            OptimizerKind::Sgd => (None, None),
        };
        let mut hypers = Vec::with_capacity(updates);
        let mut plans = Vec::with_capacity(updates);
        for _ in 0..updates {
            let hyper = Tensor::uniform(gpu, "optimizer hyper", 8)?;
            let mut plan = Plan::new();
            plan.extend(adamw::grad_norm(gpu, &norm, &grads.all, &scratch, n, cfg.grad_clip));
            match (&m, &v) {
                (Some(m), Some(v)) => {
                    plan.push(adamw::adamw_update(gpu, &params.all, &grads.all, m, v, &hyper, &norm, n))
                }
                _ => plan.push(adamw::sgd_update(gpu, &params.all, &grads.all, &hyper, &norm, n)),
            }
            hypers.push(hyper);
            plans.push(plan);
        }
        let state = [Some(scratch), m, v].into_iter().flatten().collect();
        Ok(MultiStepOptimizer { cfg: cfg.clone(), step: 0, norm, hypers, plans, _state: state })
    }

    /// Adam's first and second moments (none for SGD), for saving a run and resuming it (`train::state`).
    pub fn moments(&self) -> &[Tensor] {
        &self._state[1..]
    }

    /// Write the hyper-parameters of the next `plans.len()` updates and advance the counter.
    pub fn prepare(&mut self, gpu: &Gpu) {
        let c = &self.cfg;
        for (k, h) in self.hypers.iter().enumerate() {
            let hy = AdamHyper::for_step(self.step + k as u32 + 1, c.lr, c.beta1, c.beta2, c.eps, c.weight_decay);
            h.write_f32(gpu, hy.as_f32s());
        }
        self.step += self.hypers.len() as u32;
    }
}

/// Zero, inside the compute pass, everything a backward plan clears: its gradient arena and activation gradients.
/// (A plan's own clears run once at the start of the submit, but a PPO step runs each backward several times.)
fn zero_plan(gpu: &Gpu, backward: &Plan) -> Plan {
    let mut p = Plan::new();
    for t in &backward.clears {
        p.push(elementwise::fill(gpu, t, 0.0));
    }
    p
}

/// The packed parameters of `MlpConfig { scalar_head: true, ..policy_cfg }` that start a value model from the policy:
/// the policy's parameters and a zero scalar head (values start at 0).
pub fn mlp_value_init(policy_cfg: &MlpConfig, policy_params: &[f32]) -> Vec<f32> {
    let mut v = policy_params.to_vec();
    v.resize(policy_params.len() + policy_cfg.hidden + 1, 0.0);
    v
}

/// The packed parameters of `GptConfig { scalar_head: true, ..policy_cfg }` that start a value model from the
/// policy: its parameters and a zero `score.weight`.
pub fn gpt_value_init(policy_cfg: &GptConfig, policy_params: &[f32]) -> Vec<f32> {
    let mut v = policy_params.to_vec();
    v.resize(policy_params.len() + policy_cfg.width, 0.0);
    v
}

fn num_params(shapes: &[(String, Vec<usize>)]) -> usize {
    shapes.iter().map(|(_, s)| s.iter().product::<usize>()).sum()
}

/// How the toy bandit scores a (prompt, response) pair.
#[derive(Clone, Debug)]
pub enum RewardSource {
    /// A known reward table r(x, y), (P, R) row-major, uploaded to the GPU.
    Table(Vec<f32>),
    /// A toy reward model: an MLP with a scalar head whose one-hot input enumerates (prompt, response) pairs
    /// (`cfg.prompts == P * R`, input index x * R + y); the score is its scalar output.
    Model { cfg: MlpConfig, params: Vec<f32> },
}

enum ToyScorer {
    Table { _table: Tensor },
    Model { rm: Box<Mlp> },
}

/// PPO on the paper's toy MLP as a bandit: P prompts, R responses, one sampled response per row.
pub struct PpoToyTrainer {
    pub cfg: PpoConfig,
    /// The policy (with the scalar head when the value model shares its trunk).
    pub policy: Mlp,
    /// The frozen reference pi0 (the policy's initial parameters).
    pub reference: Mlp,
    /// The separate value model (None with a shared trunk).
    pub value: Option<Mlp>,
    pub ppo: Ppo,
    /// (B) u32: row i asks prompt i mod P.
    pub prompts: Tensor,
    scorer: ToyScorer,
    sample_plan: Plan,
    score_plan: Plan,
    zero_policy: Plan,
    zero_value: Plan,
    pub opt_policy: MultiStepOptimizer,
    pub opt_value: Option<MultiStepOptimizer>,
    readback: Readback,
    /// The policy's (B, R) log-probs, read by `policy_probs` (built once: it runs at every logged epoch).
    probs_readback: Readback,
    /// PPO steps taken.
    pub step: u32,
}

impl PpoToyTrainer {
    /// `policy_params` (packed for `policy_cfg`, which has no scalar head) start the policy and are the frozen
    /// reference. `value_params` are packed for `MlpConfig { scalar_head: true, ..policy_cfg }` ([`mlp_value_init`]
    /// gives the usual start); with a shared trunk only their scalar head is used. `rows` = B, a multiple of P.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        cfg: &PpoConfig,
        opt: &OptimConfig,
        policy_cfg: &MlpConfig,
        policy_params: &[f32],
        value_params: &[f32],
        reward: RewardSource,
        rows: usize,
    ) -> Result<PpoToyTrainer> {
        let (np, nr) = (policy_cfg.prompts, policy_cfg.responses);
        if policy_cfg.scalar_head {
            return Err(Error::config(
                "PPO toy: the policy config must not have a scalar head (the value model gets one)",
            ));
        }
        if rows == 0 || !rows.is_multiple_of(np) {
            return Err(Error::config(format!(
                "PPO toy: rows ({rows}) must be a positive multiple of the {np} prompts"
            )));
        }
        let value_cfg = MlpConfig { scalar_head: true, ..policy_cfg.clone() };
        let trunk = num_params(&policy_cfg.param_shapes());
        if value_params.len() != num_params(&value_cfg.param_shapes()) {
            return Err(Error::config(format!(
                "PPO toy: value parameters must be packed for the policy's MLP with a scalar head ({} values), got {}",
                num_params(&value_cfg.param_shapes()),
                value_params.len()
            )));
        }
        let (policy, value) = match cfg.value_model {
            ValueModel::Separate => {
                (Mlp::new(gpu, policy_cfg, rows, policy_params)?, Some(Mlp::new(gpu, &value_cfg, rows, value_params)?))
            }
            ValueModel::SharedTrunk => {
                let mut shared = policy_params.to_vec();
                shared.extend_from_slice(&value_params[trunk..]);
                (Mlp::new(gpu, &value_cfg, rows, &shared)?, None)
            }
        };
        let reference = Mlp::new(gpu, policy_cfg, rows, policy_params)?;
        let prompt_ids: Vec<u32> = (0..rows).map(|i| (i % np) as u32).collect();
        let zeros = vec![0u32; rows];
        policy.set_batch(gpu, &prompt_ids, &zeros)?;
        reference.set_batch(gpu, &prompt_ids, &zeros)?;
        if let Some(v) = &value {
            v.set_batch(gpu, &prompt_ids, &zeros)?;
        }
        let prompts = Tensor::from_u32(gpu, "ppo prompts", &prompt_ids)?;
        let value_model = value.as_ref().unwrap_or(&policy);
        let (values, dvalues) =
            (value_model.scalar.clone().expect("scalar head"), value_model.dscalar.clone().expect("scalar head"));
        let ppo = Ppo::new(gpu, cfg, &policy, &policy.logits, nr, &reference, &values, &dvalues)?;
        ppo.mask.write_f32(gpu, &vec![1.0; rows]);

        let mut sample_plan = Plan::new();
        sample_plan.push(sampling::sample_categorical(
            gpu,
            &policy.targets,
            &policy.logits,
            &ppo.rng,
            rows,
            nr,
            nr,
            0,
            cfg.temperature,
            cfg.top_k,
            0,
        ));
        sample_plan.push(sampling::copy_u32(gpu, &reference.targets, &policy.targets, rows));
        let mut score_plan = Plan::new();
        let scorer = match reward {
            RewardSource::Table(table) => {
                if table.len() != np * nr {
                    return Err(Error::config(format!(
                        "PPO toy: the reward table must be (P, R) = {} values, got {}",
                        np * nr,
                        table.len()
                    )));
                }
                let t = Tensor::from_f32(gpu, "reward table", &table)?;
                score_plan.push(ppo_ops::table_reward(gpu, &ppo.scores, &t, &prompts, &policy.targets, rows, nr));
                ToyScorer::Table { _table: t }
            }
            RewardSource::Model { cfg: rm_cfg, params } => {
                if rm_cfg.prompts != np * nr || !rm_cfg.scalar_head {
                    return Err(Error::config(format!(
                        "PPO toy: a reward-model MLP needs a scalar head and P * R = {} one-hot inputs (got {}, scalar_head {})",
                        np * nr,
                        rm_cfg.prompts,
                        rm_cfg.scalar_head
                    )));
                }
                let rm = Mlp::new(gpu, &rm_cfg, rows, &params)?;
                sample_plan.push(ppo_ops::pair_onehot(gpu, &rm.x, &prompts, &policy.targets, rows, np, nr));
                score_plan.push(ppo_ops::score_gather(
                    gpu,
                    &ppo.scores,
                    rm.scalar.as_ref().expect("scalar head"),
                    &ppo.mask,
                    rows,
                    1,
                    0,
                ));
                ToyScorer::Model { rm: Box::new(rm) }
            }
        };
        let k = cfg.updates_per_step();
        let zero_policy = zero_plan(gpu, &policy.backward);
        let zero_value = value.as_ref().map(|v| zero_plan(gpu, &v.backward)).unwrap_or_default();
        let opt_policy = MultiStepOptimizer::new(gpu, &policy.params, &policy.grads, opt, k)?;
        let opt_value = match &value {
            Some(v) => Some(MultiStepOptimizer::new(gpu, &v.params, &v.grads, opt, k)?),
            None => None,
        };
        let probs_readback = Readback::new(gpu, &[&policy.log_probs]);
        let readback = Readback::new(gpu, &[&ppo.rollout_metrics, &ppo.train_metrics]);
        Ok(PpoToyTrainer {
            cfg: cfg.clone(),
            policy,
            reference,
            value,
            ppo,
            prompts,
            scorer,
            sample_plan,
            score_plan,
            zero_policy,
            zero_value,
            opt_policy,
            opt_value,
            readback,
            probs_readback,
            step: 0,
        })
    }

    /// The plans of one PPO step, in order.
    fn plans(&self) -> Vec<&Plan> {
        let mut v: Vec<&Plan> =
            vec![&self.policy.forward, &self.sample_plan, &self.policy.forward, &self.reference.forward];
        if let Some(val) = &self.value {
            v.push(&val.forward);
        }
        if let ToyScorer::Model { rm } = &self.scorer {
            v.push(&rm.forward);
        }
        v.push(&self.score_plan);
        v.push(&self.ppo.rollout_plan);
        push_updates(
            &mut v,
            &self.policy,
            self.value.as_ref().map(|m| m as &dyn Policy),
            &self.ppo,
            &self.zero_policy,
            &self.zero_value,
            &self.opt_policy,
            self.opt_value.as_ref(),
        );
        v.push(&self.ppo.reduce_plan);
        v
    }

    /// Dispatches recorded per PPO step.
    pub fn dispatches_per_step(&self) -> usize {
        dispatch_count(&self.plans())
    }

    /// One PPO step (rollout + all updates), one submit; returns the step's metrics.
    pub async fn step(&mut self, gpu: &Gpu) -> Result<PpoMetrics> {
        self.step += 1;
        self.ppo.set_step(gpu, self.step);
        self.opt_policy.prepare(gpu);
        if let Some(o) = &mut self.opt_value {
            o.prepare(gpu);
        }
        let out = run_step(gpu, &self.plans(), Some(&self.readback)).await?.expect("readback");
        metrics(self.step, &out)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn step_blocking(&mut self, gpu: &Gpu) -> Result<PpoMetrics> {
        pollster::block_on(self.step(gpu))
    }

    /// The policy's response probabilities pi(y | x), (P, R) row-major, at the current parameters.
    pub async fn policy_probs(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let out = run_step(gpu, &[&self.policy.forward], Some(&self.probs_readback)).await?.expect("readback");
        let n = self.policy.cfg.prompts * self.policy.cfg.responses;
        Ok(out[0][..n].iter().map(|l| l.exp()).collect())
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn policy_probs_blocking(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        pollster::block_on(self.policy_probs(gpu))
    }
}

/// The minibatch updates of a step: per update, the forwards, the PPO loss, zeroed gradients, the backward passes and
/// the optimizer updates.
#[allow(clippy::too_many_arguments)]
fn push_updates<'a>(
    v: &mut Vec<&'a Plan>,
    policy: &'a dyn Policy,
    value: Option<&'a dyn Policy>,
    ppo: &'a Ppo,
    zero_policy: &'a Plan,
    zero_value: &'a Plan,
    opt_policy: &'a MultiStepOptimizer,
    opt_value: Option<&'a MultiStepOptimizer>,
) {
    for k in 0..ppo.minibatch_plans.len() {
        v.push(policy.forward_plan());
        if let Some(val) = value {
            v.push(val.forward_plan());
        }
        v.push(&ppo.minibatch_plans[k]);
        v.push(zero_policy);
        v.push(policy.backward_plan());
        if let Some(val) = value {
            v.push(zero_value);
            v.push(val.backward_plan());
        }
        v.push(&opt_policy.plans[k]);
        if let Some(o) = opt_value {
            v.push(&o.plans[k]);
        }
    }
}

fn metrics(step: u32, out: &[Vec<f32>]) -> Result<PpoMetrics> {
    let m = PpoMetrics::from_raw(step, &out[0], &out[1]);
    if let Some((name, x)) = m.values.iter().find(|(_, x)| !x.is_finite()) {
        return Err(Error::NonFinite(format!("PPO step {step}: {name} = {x}")));
    }
    Ok(m)
}

/// How the GPT trainer scores a response, on the GPU.
#[derive(Clone, Debug)]
pub enum GptRewardSource {
    /// Rule-based: `scale` times the number of response tokens equal to `token`.
    CountToken { token: u32, scale: f32 },
    /// A reward-model GPT (`scalar_head = true`, the policy's vocabulary): its scalar at the last response token.
    Model { cfg: GptConfig, params: Vec<f32> },
}

/// PPO on a GPT: B prompts of `prompt_len` tokens, `response_length` generated tokens each (T = Lp + response_length).
pub struct PpoGptTrainer {
    pub cfg: PpoConfig,
    /// The policy (with the scalar head when the value model shares its trunk). Its `tokens` hold the last
    /// rollout's sequences after a step.
    pub policy: Gpt,
    pub reference: Gpt,
    pub value: Option<Gpt>,
    pub reward_model: Option<Gpt>,
    pub ppo: Ppo,
    /// Lp
    pub prompt_len: usize,
    /// (B) u32 the tokens sampled at the current position.
    pub sampled: Tensor,
    begin_plan: Plan,
    gen_plans: Vec<Plan>,
    copy_plan: Plan,
    score_plan: Plan,
    zero_policy: Plan,
    zero_value: Plan,
    pub opt_policy: MultiStepOptimizer,
    pub opt_value: Option<MultiStepOptimizer>,
    readback: Readback,
    pub step: u32,
}

impl PpoGptTrainer {
    /// `policy_params` (packed for `policy_cfg`, no scalar head) start the policy and are the frozen reference;
    /// `value_params` are packed for `GptConfig { scalar_head: true, ..policy_cfg }` ([`gpt_value_init`]); with a
    /// shared trunk only their `score.weight` is used. `b` prompts of `prompt_len` tokens per step.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        cfg: &PpoConfig,
        opt: &OptimConfig,
        policy_cfg: &GptConfig,
        policy_params: &[f32],
        value_params: &[f32],
        reward: GptRewardSource,
        b: usize,
        prompt_len: usize,
    ) -> Result<PpoGptTrainer> {
        if policy_cfg.scalar_head {
            return Err(Error::config(
                "PPO GPT: the policy config must not have a scalar head (the value model gets one)",
            ));
        }
        let t = prompt_len + cfg.response_length;
        if prompt_len == 0 || cfg.response_length == 0 || t > policy_cfg.context {
            return Err(Error::config(format!(
                "PPO GPT: prompt_len ({prompt_len}) and response_length ({}) must be positive and fit the context ({})",
                cfg.response_length, policy_cfg.context
            )));
        }
        let v = policy_cfg.vocab_size;
        if let Some(s) = cfg.stop_token_id {
            if s as usize >= v {
                return Err(Error::config(format!("PPO GPT: stop_token_id {s} is outside the vocabulary ({v})")));
            }
        }
        let value_cfg = GptConfig { scalar_head: true, ..policy_cfg.clone() };
        if value_params.len() != value_cfg.num_params() {
            return Err(Error::config(format!(
                "PPO GPT: value parameters must be packed for the policy's GPT with a scalar head ({} values), got {}",
                value_cfg.num_params(),
                value_params.len()
            )));
        }
        let (policy, value) = match cfg.value_model {
            ValueModel::Separate => {
                (Gpt::new(gpu, policy_cfg, b, t, policy_params)?, Some(Gpt::new(gpu, &value_cfg, b, t, value_params)?))
            }
            ValueModel::SharedTrunk => {
                let mut shared = policy_params.to_vec();
                shared.extend_from_slice(&value_params[policy_cfg.num_params()..]);
                (Gpt::new(gpu, &value_cfg, b, t, &shared)?, None)
            }
        };
        let reference = Gpt::new(gpu, policy_cfg, b, t, policy_params)?;
        let value_model = value.as_ref().unwrap_or(&policy);
        let (values, dvalues) =
            (value_model.scalar.clone().expect("scalar head"), value_model.dscalar.clone().expect("scalar head"));
        let ppo = Ppo::new(gpu, cfg, &policy, &policy.logits, v, &reference, &values, &dvalues)?;
        let sampled = Tensor::zeros(gpu, "ppo sampled", b)?;

        let mut begin_plan = Plan::new();
        begin_plan.clear(&ppo.mask);
        let mut gen_plans = Vec::with_capacity(cfg.response_length);
        for s in 0..cfg.response_length {
            let pos = prompt_len - 1 + s;
            let mut plan = Plan::new();
            plan.push(sampling::sample_categorical(
                gpu,
                &sampled,
                &policy.logits,
                &ppo.rng,
                b,
                v,
                t * v,
                pos * v,
                cfg.temperature,
                cfg.top_k,
                pos as u32,
            ));
            plan.push(sampling::append_token(
                gpu,
                &policy.tokens,
                &policy.targets,
                &ppo.mask,
                &sampled,
                b,
                t,
                pos,
                prompt_len,
                cfg.stop_token_id,
            ));
            gen_plans.push(plan);
        }
        let mut copy_plan = Plan::new();
        copy_plan.push(sampling::copy_u32(gpu, &reference.tokens, &policy.tokens, b * t));
        copy_plan.push(sampling::copy_u32(gpu, &reference.targets, &policy.targets, b * t));
        if let Some(val) = &value {
            copy_plan.push(sampling::copy_u32(gpu, &val.tokens, &policy.tokens, b * t));
        }
        let mut score_plan = Plan::new();
        let reward_model = match reward {
            GptRewardSource::CountToken { token, scale } => {
                score_plan.push(ppo_ops::count_token_reward(
                    gpu,
                    &ppo.scores,
                    &policy.tokens,
                    &ppo.mask,
                    b,
                    t,
                    token,
                    scale,
                ));
                None
            }
            GptRewardSource::Model { cfg: rm_cfg, params } => {
                if !rm_cfg.scalar_head || rm_cfg.vocab_size != v || rm_cfg.context < t {
                    return Err(Error::config(
                        "PPO GPT: the reward model needs a scalar head, the policy's vocabulary and a context >= T",
                    ));
                }
                let rm = Gpt::new(gpu, &rm_cfg, b, t, &params)?;
                copy_plan.push(sampling::copy_u32(gpu, &rm.tokens, &policy.tokens, b * t));
                score_plan.push(ppo_ops::score_gather(
                    gpu,
                    &ppo.scores,
                    rm.scalar.as_ref().expect("scalar head"),
                    &ppo.mask,
                    b,
                    t,
                    1,
                ));
                Some(rm)
            }
        };
        let k = cfg.updates_per_step();
        let zero_policy = zero_plan(gpu, &policy.backward);
        let zero_value = value.as_ref().map(|m| zero_plan(gpu, &m.backward)).unwrap_or_default();
        let opt_policy = MultiStepOptimizer::new(gpu, &policy.params, &policy.grads, opt, k)?;
        let opt_value = match &value {
            Some(m) => Some(MultiStepOptimizer::new(gpu, &m.params, &m.grads, opt, k)?),
            None => None,
        };
        let readback = Readback::new(gpu, &[&ppo.rollout_metrics, &ppo.train_metrics]);
        Ok(PpoGptTrainer {
            cfg: cfg.clone(),
            policy,
            reference,
            value,
            reward_model,
            ppo,
            prompt_len,
            sampled,
            begin_plan,
            gen_plans,
            copy_plan,
            score_plan,
            zero_policy,
            zero_value,
            opt_policy,
            opt_value,
            readback,
            step: 0,
        })
    }

    /// T = prompt_len + response_length.
    pub fn seq_len(&self) -> usize {
        self.policy.t
    }

    fn plans(&self) -> Vec<&Plan> {
        let mut v: Vec<&Plan> = vec![&self.begin_plan];
        for g in &self.gen_plans {
            v.push(&self.policy.forward);
            v.push(g);
        }
        v.push(&self.copy_plan);
        v.push(&self.policy.forward);
        v.push(&self.reference.forward);
        if let Some(val) = &self.value {
            v.push(&val.forward);
        }
        if let Some(rm) = &self.reward_model {
            v.push(&rm.forward);
        }
        v.push(&self.score_plan);
        v.push(&self.ppo.rollout_plan);
        push_updates(
            &mut v,
            &self.policy,
            self.value.as_ref().map(|m| m as &dyn Policy),
            &self.ppo,
            &self.zero_policy,
            &self.zero_value,
            &self.opt_policy,
            self.opt_value.as_ref(),
        );
        v.push(&self.ppo.reduce_plan);
        v
    }

    /// Dispatches recorded per PPO step.
    pub fn dispatches_per_step(&self) -> usize {
        dispatch_count(&self.plans())
    }

    /// Upload B prompts of Lp tokens each ((B, Lp) row-major) into the policy's inputs and targets.
    fn upload_prompts(&self, gpu: &Gpu, prompts: &[u32]) -> Result<()> {
        let (b, t, lp) = (self.policy.b, self.policy.t, self.prompt_len);
        if prompts.len() != b * lp {
            return Err(Error::config(format!(
                "PPO GPT: expected B * Lp = {} prompt tokens, got {}",
                b * lp,
                prompts.len()
            )));
        }
        let mut tokens = vec![0u32; b * t];
        let mut targets = vec![0u32; b * t];
        for r in 0..b {
            tokens[r * t..r * t + lp].copy_from_slice(&prompts[r * lp..(r + 1) * lp]);
            for j in 0..lp - 1 {
                targets[r * t + j] = prompts[r * lp + j + 1];
            }
        }
        self.policy.set_batch(gpu, &tokens, &targets)
    }

    /// One PPO step on B prompts ((B, Lp) row-major token ids): generation, scoring, rollout and all updates, one
    /// submit; returns the step's metrics.
    pub async fn step(&mut self, gpu: &Gpu, prompts: &[u32]) -> Result<PpoMetrics> {
        self.upload_prompts(gpu, prompts)?;
        self.step += 1;
        self.ppo.set_step(gpu, self.step);
        self.opt_policy.prepare(gpu);
        if let Some(o) = &mut self.opt_value {
            o.prepare(gpu);
        }
        let out = run_step(gpu, &self.plans(), Some(&self.readback)).await?.expect("readback");
        metrics(self.step, &out)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn step_blocking(&mut self, gpu: &Gpu, prompts: &[u32]) -> Result<PpoMetrics> {
        pollster::block_on(self.step(gpu, prompts))
    }

    /// Only the generation of a step (no scoring, no update), for inspection and timing: returns the sequences
    /// (B, T) and the response mask (B, T).
    pub async fn generate(&mut self, gpu: &Gpu, prompts: &[u32]) -> Result<(Vec<u32>, Vec<f32>)> {
        self.upload_prompts(gpu, prompts)?;
        self.step += 1;
        self.ppo.set_step(gpu, self.step);
        let mut plans: Vec<&Plan> = vec![&self.begin_plan];
        for g in &self.gen_plans {
            plans.push(&self.policy.forward);
            plans.push(g);
        }
        let rb = Readback::new(gpu, &[&self.policy.tokens, &self.ppo.mask]);
        let out = run_step(gpu, &plans, Some(&rb)).await?.expect("readback");
        Ok((out[0].iter().map(|x| x.to_bits()).collect(), out[1].clone()))
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn generate_blocking(&mut self, gpu: &Gpu, prompts: &[u32]) -> Result<(Vec<u32>, Vec<f32>)> {
        pollster::block_on(self.generate(gpu, prompts))
    }
}
