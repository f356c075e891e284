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
//! Both trainers share [`PpoCore`]: one [`Optimizer`] per trained model (the same type every trainer uses), whose plan
//! is recorded once per minibatch update (Adam's step counter lives on the GPU, so the updates of a step need nothing
//! written between them), the zeroing plans, the metrics readback and the step's rollout-to-reduction tail.
//!
//! The value model is a separate model with a scalar head by default; `PpoConfig::value_model = SharedTrunk` puts the
//! scalar head on the policy itself (one model, one optimizer, loss = policy loss + vf_coef * value loss).
//! Gradient clipping applies per model (the policy's and the separate value model's global norms separately).

use crate::gpu::{dispatch_count, Gpu, Plan, Readback, Tensor};
use crate::model::{Decoder, Gpt, GptConfig, Mlp, MlpConfig, Policy};
use crate::objectives::ppo::{Ppo, PpoConfig, PpoMetrics, ValueModel};
use crate::ops::{elementwise, ppo as ppo_ops, sampling};
use crate::train::{run_step, OptimConfig, Optimizer};
use crate::{Error, Result};

/// What both PPO trainers share around the [`Ppo`] objective: the policy's (and the separate value model's) optimizer,
/// the plans that zero their gradients, the metrics readback and the step counter; and the part of a step after the
/// scoring, identical for both: the rollout plan, the `updates_per_step` minibatch updates, the metric reduction.
///
/// One [`Optimizer`] per model, its plan recorded once per minibatch update: Adam's step counter and bias
/// corrections live on the GPU, so the k updates of a PPO step share one plan and one hyperparameter block. An update
/// whose gradient norm is not finite is skipped on the GPU, and the step returns an error naming it.
pub struct PpoCore {
    pub opt_policy: Optimizer,
    pub opt_value: Option<Optimizer>,
    zero_policy: Plan,
    zero_value: Plan,
    /// [rollout metrics, train metrics, policy optimizer norm (+ step state), value optimizer norm if separate]
    readback: Readback,
    /// PPO steps taken.
    pub step: u32,
}

impl PpoCore {
    fn new(gpu: &Gpu, opt: &OptimConfig, ppo: &Ppo, policy: &dyn Policy, value: Option<&dyn Policy>) -> Result<Self> {
        let zero_policy = zero_plan(gpu, policy.backward_plan());
        let zero_value = value.map(|v| zero_plan(gpu, v.backward_plan())).unwrap_or_default();
        let opt_policy = Optimizer::new(gpu, policy.params(), policy.grads(), opt)?;
        let opt_value = match value {
            Some(v) => Some(Optimizer::new(gpu, v.params(), v.grads(), opt)?),
            None => None,
        };
        let mut read: Vec<&Tensor> = vec![&ppo.rollout_metrics, &ppo.train_metrics, &opt_policy.norm];
        if let Some(o) = &opt_value {
            read.push(&o.norm);
        }
        let readback = Readback::new(gpu, &read);
        Ok(PpoCore { opt_policy, opt_value, zero_policy, zero_value, readback, step: 0 })
    }

    /// After the scoring: the rollout plan, then per minibatch update the forwards, the PPO loss, zeroed gradients,
    /// the backward passes and the optimizer steps, then the metric reduction.
    fn push_train<'a>(
        &'a self,
        v: &mut Vec<&'a Plan>,
        ppo: &'a Ppo,
        policy: &'a dyn Policy,
        value: Option<&'a dyn Policy>,
    ) {
        v.push(&ppo.rollout_plan);
        for k in 0..ppo.minibatch_plans.len() {
            v.push(policy.forward_plan());
            if let Some(val) = value {
                v.push(val.forward_plan());
            }
            v.push(&ppo.minibatch_plans[k]);
            v.push(&self.zero_policy);
            v.push(policy.backward_plan());
            if let Some(val) = value {
                v.push(&self.zero_value);
                v.push(val.backward_plan());
            }
            v.push(&self.opt_policy.plan);
            if let Some(o) = &self.opt_value {
                v.push(&o.plan);
            }
        }
        v.push(&ppo.reduce_plan);
    }

    /// Count the step and write what the GPU reads per step (the sampling seed's step, the optimizers' blocks).
    fn begin(&mut self, gpu: &Gpu, ppo: &Ppo) {
        self.step += 1;
        ppo.set_step(gpu, self.step);
        let k = ppo.minibatch_plans.len() as u32;
        self.opt_policy.prepare_steps(gpu, k);
        if let Some(o) = &mut self.opt_value {
            o.prepare_steps(gpu, k);
        }
    }

    /// The step's metrics from `readback`'s contents, checked: skipped (non-finite) updates, then non-finite metrics.
    fn finish(&mut self, out: &[Vec<f32>]) -> Result<PpoMetrics> {
        let step = self.step;
        self.opt_policy.check(&out[2], &format!("PPO step {step} (policy)"))?;
        if let Some(o) = &mut self.opt_value {
            o.check(&out[3], &format!("PPO step {step} (value model)"))?;
        }
        let m = PpoMetrics::from_raw(step, &out[0], &out[1]);
        if let Some((name, x)) = m.values.iter().find(|(_, x)| !x.is_finite()) {
            return Err(Error::NonFinite(format!("PPO step {step}: {name} = {x}")));
        }
        Ok(m)
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
    /// Optimizers, step counter and the shared tail of a step.
    pub core: PpoCore,
    /// The policy's (B, R) log-probs, read by `policy_probs` (built once: it runs at every logged epoch).
    probs_readback: Readback,
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
        gpu.scoped_blocking("building the PPO toy trainer", || {
            Self::build(gpu, cfg, opt, policy_cfg, policy_params, value_params, reward, rows)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
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
        let core = PpoCore::new(gpu, opt, &ppo, &policy, value.as_ref().map(|v| v as &dyn Policy))?;
        let probs_readback = Readback::new(gpu, &[&policy.log_probs]);
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
            core,
            probs_readback,
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
        self.core.push_train(&mut v, &self.ppo, &self.policy, self.value.as_ref().map(|m| m as &dyn Policy));
        v
    }

    /// Dispatches recorded per PPO step.
    pub fn dispatches_per_step(&self) -> usize {
        dispatch_count(&self.plans())
    }

    /// One PPO step (rollout + all updates), one submit; returns the step's metrics.
    pub async fn step(&mut self, gpu: &Gpu) -> Result<PpoMetrics> {
        self.core.begin(gpu, &self.ppo);
        let out = run_step(gpu, &self.plans(), Some(&self.core.readback)).await?.expect("readback");
        self.core.finish(&out)
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

/// How the GPT trainer scores a response, on the GPU.
#[derive(Clone, Debug)]
pub enum GptRewardSource {
    /// Rule-based: `scale` times the number of response tokens equal to `token`.
    CountToken { token: u32, scale: f32 },
    /// A reward-model GPT (`scalar_head = true`, the policy's vocabulary): its scalar at the last response token.
    Model { cfg: GptConfig, params: Vec<f32> },
    /// Scored by the caller, e.g. a task's rule-based judge on the decoded text: use
    /// [`PpoGptTrainer::step_scored`], which reads the sampled responses back between generation and training.
    External,
}

/// The caller's reward for [`PpoGptTrainer::step_scored`]: B responses (token ids) in, B scores out.
pub type Scorer<'a> = dyn FnMut(&[Vec<u32>]) -> Result<Vec<f32>> + 'a;

/// PPO on a GPT: B prompts of 1 to `prompt_len` tokens, `response_length` generated tokens each after its own prompt
/// (T = prompt_len + response_length; a shorter prompt's row ends in unused, masked-out positions).
pub struct PpoGptTrainer {
    pub cfg: PpoConfig,
    /// The policy (with the scalar head when the value model shares its trunk). Its `tokens` hold the last
    /// rollout's sequences after a step.
    pub policy: Gpt,
    pub reference: Gpt,
    pub value: Option<Gpt>,
    pub reward_model: Option<Gpt>,
    pub ppo: Ppo,
    /// Lp: the longest prompt a step takes.
    pub prompt_len: usize,
    /// (B) u32 the tokens sampled at the current position.
    pub sampled: Tensor,
    /// (B) u32 each row's prompt length.
    pub lens: Tensor,
    begin_plan: Plan,
    /// gen_plans[s]: sample generation step s's token and append it.
    gen_plans: Vec<Plan>,
    decoder: Decoder,
    /// The sampled targets and response mask, read back between generation and training by `step_scored`.
    gen_readback: Readback,
    copy_plan: Plan,
    score_plan: Plan,
    /// Optimizers, step counter and the shared tail of a step.
    pub core: PpoCore,
}

impl PpoGptTrainer {
    /// `policy_params` (packed for `policy_cfg`, no scalar head) start the policy and are the frozen reference;
    /// `value_params` are packed for `GptConfig { scalar_head: true, ..policy_cfg }` ([`gpt_value_init`]); with a
    /// shared trunk only their `score.weight` is used. `b` prompts of at most `prompt_len` tokens per step.
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
        let what = format!("building the PPO trainer (GPT of {} parameters, B = {b})", policy_cfg.num_params());
        gpu.scoped_blocking(&what, || {
            Self::build(gpu, cfg, opt, policy_cfg, policy_params, value_params, reward, b, prompt_len)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
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
        // Rows of different prompt lengths: row b generates after its own last prompt token (Lp_b - 1 + s).
        let lens = Tensor::zeros(gpu, "ppo prompt lengths", b)?;
        // Step 0 samples from the policy's forward over the prompts (the prefill); later steps from its KV-cached
        // decoder (`model::Decoder`: one position per row), with the step as the random stream either way.
        let decoder = Decoder::new(gpu, &policy, &lens, cfg.response_length)?;
        for s in 0..cfg.response_length {
            let mut plan = Plan::new();
            plan.push(decoder.sample(gpu, &sampled, &ppo.rng, s, cfg.temperature, cfg.top_k));
            plan.push(sampling::append_ragged(
                gpu,
                &policy.tokens,
                &policy.targets,
                &ppo.mask,
                &sampled,
                &lens,
                b,
                t,
                s,
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
            GptRewardSource::External => None,
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
        let core = PpoCore::new(gpu, opt, &ppo, &policy, value.as_ref().map(|v| v as &dyn Policy))?;
        let gen_readback = Readback::new(gpu, &[&policy.targets, &ppo.mask]);
        Ok(PpoGptTrainer {
            cfg: cfg.clone(),
            policy,
            reference,
            value,
            reward_model,
            ppo,
            prompt_len,
            sampled,
            lens,
            begin_plan,
            gen_plans,
            decoder,
            gen_readback,
            copy_plan,
            score_plan,
            core,
        })
    }

    /// T = prompt_len + response_length.
    pub fn seq_len(&self) -> usize {
        self.policy.t
    }

    fn plans(&self) -> Vec<&Plan> {
        let mut v = self.generation_plans();
        v.extend(self.training_plans());
        v
    }

    /// Generation: the mask cleared, the policy's forward over the prompts, then per generated token the sampling,
    /// with a KV-cached decode step before each but the first.
    fn generation_plans(&self) -> Vec<&Plan> {
        let mut v: Vec<&Plan> = vec![&self.begin_plan, &self.policy.forward];
        for (s, g) in self.gen_plans.iter().enumerate() {
            if s > 0 {
                v.extend(self.decoder.step(s));
            }
            v.push(g);
        }
        v
    }

    /// After generation: the forwards of every model on the sampled sequences, the scores, the rollout and updates.
    fn training_plans(&self) -> Vec<&Plan> {
        let mut v: Vec<&Plan> = vec![&self.copy_plan];
        v.push(&self.policy.forward);
        v.push(&self.reference.forward);
        if let Some(val) = &self.value {
            v.push(&val.forward);
        }
        if let Some(rm) = &self.reward_model {
            v.push(&rm.forward);
        }
        v.push(&self.score_plan);
        self.core.push_train(&mut v, &self.ppo, &self.policy, self.value.as_ref().map(|m| m as &dyn Policy));
        v
    }

    /// Dispatches recorded per PPO step.
    pub fn dispatches_per_step(&self) -> usize {
        dispatch_count(&self.plans())
    }

    /// Upload B prompts (each 1..=Lp tokens) into the policy's inputs and targets, and their lengths.
    fn upload_prompts(&self, gpu: &Gpu, prompts: &[Vec<u32>]) -> Result<()> {
        let (b, t, lp) = (self.policy.b, self.policy.t, self.prompt_len);
        if prompts.len() != b {
            return Err(Error::config(format!("PPO GPT: expected B = {b} prompts, got {}", prompts.len())));
        }
        let mut tokens = vec![0u32; b * t];
        let mut targets = vec![0u32; b * t];
        for (r, p) in prompts.iter().enumerate() {
            if p.is_empty() || p.len() > lp {
                return Err(Error::config(format!(
                    "PPO GPT: prompt {r} has {} tokens; this trainer takes 1 to {lp}",
                    p.len()
                )));
            }
            tokens[r * t..r * t + p.len()].copy_from_slice(p);
            targets[r * t..r * t + p.len() - 1].copy_from_slice(&p[1..]);
        }
        self.lens.write_u32(gpu, &prompts.iter().map(|p| p.len() as u32).collect::<Vec<_>>());
        self.policy.set_batch(gpu, &tokens, &targets)
    }

    /// One PPO step scored by the caller ([`GptRewardSource::External`]): generation (one submit), then the B
    /// sampled responses (their ids, up to and including the stop token) go to `score`, whose B scores enter the
    /// rollout exactly where a reward model's would (one more submit for scoring, rollout and all updates).
    pub async fn step_scored(&mut self, gpu: &Gpu, prompts: &[Vec<u32>], score: &mut Scorer<'_>) -> Result<PpoMetrics> {
        if self.reward_model.is_some() || !self.score_plan.dispatches.is_empty() {
            return Err(Error::config("step_scored needs a trainer built with GptRewardSource::External"));
        }
        self.upload_prompts(gpu, prompts)?;
        self.core.begin(gpu, &self.ppo);
        let (b, t) = (self.policy.b, self.policy.t);
        let out = run_step(gpu, &self.generation_plans(), Some(&self.gen_readback)).await?.expect("readback");
        let (targets, mask) = (&out[0], &out[1]);
        // The response of row r: the targets where the mask is on (the sampled tokens, stop token included).
        let responses: Vec<Vec<u32>> = (0..b)
            .map(|r| (0..t).filter(|&j| mask[r * t + j] > 0.0).map(|j| targets[r * t + j].to_bits()).collect())
            .collect();
        let scores = score(&responses)?;
        if scores.len() != b || scores.iter().any(|x| !x.is_finite()) {
            return Err(Error::config(format!("PPO: the scorer must return {b} finite scores, got {scores:?}")));
        }
        self.ppo.scores.write_f32(gpu, &scores);
        let out = run_step(gpu, &self.training_plans(), Some(&self.core.readback)).await?.expect("readback");
        self.core.finish(&out)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn step_scored_blocking(
        &mut self,
        gpu: &Gpu,
        prompts: &[Vec<u32>],
        score: &mut Scorer<'_>,
    ) -> Result<PpoMetrics> {
        pollster::block_on(self.step_scored(gpu, prompts, score))
    }

    /// One PPO step on B prompts (token ids, 1 to Lp each): generation, scoring, rollout and all updates, one
    /// submit; returns the step's metrics.
    pub async fn step(&mut self, gpu: &Gpu, prompts: &[Vec<u32>]) -> Result<PpoMetrics> {
        if self.reward_model.is_none() && self.score_plan.dispatches.is_empty() {
            return Err(Error::config("a PPO trainer with an external reward steps with step_scored"));
        }
        self.upload_prompts(gpu, prompts)?;
        self.core.begin(gpu, &self.ppo);
        let out = run_step(gpu, &self.plans(), Some(&self.core.readback)).await?.expect("readback");
        self.core.finish(&out)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn step_blocking(&mut self, gpu: &Gpu, prompts: &[Vec<u32>]) -> Result<PpoMetrics> {
        pollster::block_on(self.step(gpu, prompts))
    }

    /// Only the generation of a step (no scoring, no update), for inspection and timing: returns the sequences
    /// (B, T) and the response mask (B, T).
    pub async fn generate(&mut self, gpu: &Gpu, prompts: &[Vec<u32>]) -> Result<(Vec<u32>, Vec<f32>)> {
        self.upload_prompts(gpu, prompts)?;
        self.core.step += 1;
        self.ppo.set_step(gpu, self.core.step);
        let rb = Readback::new(gpu, &[&self.policy.tokens, &self.ppo.mask]);
        let out = run_step(gpu, &self.generation_plans(), Some(&rb)).await?.expect("readback");
        Ok((out[0].iter().map(|x| x.to_bits()).collect(), out[1].clone()))
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn generate_blocking(&mut self, gpu: &Gpu, prompts: &[Vec<u32>]) -> Result<(Vec<u32>, Vec<f32>)> {
        pollster::block_on(self.generate(gpu, prompts))
    }
}
