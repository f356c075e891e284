//! `ToySession`: toy runs (SFT to the scenario's rows, then the chosen method), advanced a few epochs at a time.
//! Unlogged epochs are submitted without any readback; logged ones copy back the (P, R) log-probabilities, the
//! objective's metric vector and the gradient norm in the same submit.
//!
//! A session holds one run, or several runs of the same method that differ only in seed and data scenario: those
//! train as the replicas of one replicated MLP (`FusedMlp::replicated`: the toy MLP with fused kernels), one set of dispatches for all of them, and each
//! computes bit for bit what it would alone. The study trains its 5 seeds (and DPO's 4 scenarios) this way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{scenario_row, summarize, ToyConfig, ToyMethod, PAIRS, PROMPTS, RESPONSES};
use crate::gpu::{Gpu, Plan, Readback};
use crate::model::init::mlp_params;
use crate::model::{FusedMlp, Mlp, MlpConfig, Policy};
use crate::objectives::ppo::{PpoConfig, PpoMetrics};
use crate::objectives::{PreferenceMetrics, Sft};
use crate::train::ppo::{mlp_value_init, PpoToyTrainer, RewardSource};
use crate::train::RewardTrainer;
use crate::train::{run_step, OptimConfig, Optimizer, OptimizerKind, PreferenceTrainer, ReferenceMode};
use crate::{Error, Result};

/// One logged epoch of one run: a line of metrics.jsonl.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToyRecord {
    pub run: String,
    pub loss_type: String,
    pub scenario: u8,
    pub seed: u64,
    pub epoch: usize,
    #[serde(flatten)]
    pub metrics: BTreeMap<String, f32>,
}

impl ToyRecord {
    pub fn get(&self, key: &str) -> f32 {
        self.metrics.get(key).copied().unwrap_or(f32::NAN)
    }
}

/// Epochs at which the full probability matrix is kept (plus the last).
pub const SNAPSHOT_EPOCHS: [usize; 3] = [0, 500, 1000];

enum Method {
    Preference { trainer: Box<PreferenceTrainer<FusedMlp>>, rb: Readback },
    Ppo { trainer: Box<PpoToyTrainer>, rm_metrics: Vec<(String, f32)> },
}

/// The toy reward model: an MLP whose one-hot input enumerates the P x R (prompt, response) items (index x R + y),
/// with a scalar head, trained with Bradley-Terry on the four preference pairs. Responses in no pair are never
/// trained on: their rewards are whatever the network generalises to, as for a real reward model.
fn rm_config() -> MlpConfig {
    MlpConfig { prompts: PROMPTS * RESPONSES, hidden: 64, responses: 1, first_bias: true, scalar_head: true, depth: 2 }
}

/// Train the toy reward model (Bradley-Terry, Adam lr 1e-2, full batch); returns its config, parameters and its
/// final metrics (loss, pairwise accuracy, reward margins).
pub async fn train_toy_reward_model(
    gpu: &Gpu,
    seed: u64,
    epochs: usize,
) -> Result<(MlpConfig, Vec<f32>, Vec<(String, f32)>)> {
    let cfg = rm_config();
    let params = mlp_params(&cfg, seed.wrapping_add(1000))?;
    let b = 2 * PAIRS.len();
    let model = Mlp::new(gpu, &cfg, b, &params)?;
    let mut x = vec![0.0f32; b * cfg.prompts];
    for (i, &(p, c, r)) in PAIRS.iter().enumerate() {
        x[i * cfg.prompts + p * RESPONSES + c] = 1.0;
        x[(PAIRS.len() + i) * cfg.prompts + p * RESPONSES + r] = 1.0;
    }
    model.set_inputs(gpu, &x, &vec![0; b])?;
    let mut tr = RewardTrainer::new(gpu, model, &optim(OptimizerKind::Adam, 1e-2))?;
    tr.objective.set_last_from_mask(gpu, &vec![1.0; b])?;
    let mut last = PreferenceMetrics::default();
    for _ in 0..epochs.max(1) {
        last = tr.step(gpu).await?;
    }
    let metrics = vec![
        ("rm/loss".to_string(), last.get("loss")),
        ("rm/accuracy".to_string(), last.get("rewards/accuracies")),
        ("rm/margin".to_string(), last.get("rewards/margins")),
    ];
    Ok((cfg, tr.model.download_params(gpu).await?, metrics))
}

/// One run of a session: its config, pi0 and what has been read back so far.
pub struct ToyMember {
    pub cfg: ToyConfig,
    /// pi0: the (P, R) probabilities after SFT.
    pub sft_probs: Vec<f32>,
    /// (epoch, (P, R) probabilities) at SNAPSHOT_EPOCHS and the last epoch.
    pub snapshots: Vec<(usize, Vec<f32>)>,
    /// The most recent (P, R) log-probabilities read back.
    pub last_log_probs: Vec<f32>,
}

pub struct ToySession {
    /// The shared part of the members' configs (the first member's config).
    pub cfg: ToyConfig,
    /// Updates done so far (every member is at the same epoch).
    pub epoch: usize,
    /// The runs, in the order given; replica k of the policy is member k.
    pub members: Vec<ToyMember>,
    method: Method,
}

fn mlp_config(cfg: &ToyConfig) -> MlpConfig {
    MlpConfig {
        prompts: PROMPTS,
        hidden: cfg.hidden,
        responses: RESPONSES,
        first_bias: cfg.first_bias,
        scalar_head: false,
        depth: cfg.depth,
    }
}

fn optim(kind: OptimizerKind, lr: f32) -> OptimConfig {
    // No clipping and no weight decay: the paper's toy is plain Adam (or SGD).
    OptimConfig { kind, lr, grad_clip: 0.0, weight_decay: 0.0, ..Default::default() }
}

/// The preference phase's optimizer: the run's kind, learning rate, weight decay and momentum; no clipping.
fn run_optim(cfg: &ToyConfig) -> OptimConfig {
    OptimConfig { weight_decay: cfg.weight_decay, momentum: cfg.momentum, ..optim(cfg.optimizer, cfg.lr) }
}

/// The "SFT" phase: fit the policy to the scenario's target row for every prompt (soft-target cross-entropy,
/// full batch of all P x R (prompt, response) rows weighted by the target). Returns (parameters, (P, R) probs).
pub async fn sft_phase(gpu: &Gpu, cfg: &ToyConfig) -> Result<(Vec<f32>, Vec<f32>)> {
    Ok(sft_phase_group(gpu, std::slice::from_ref(cfg)).await?.remove(0))
}

/// `sft_phase` for several runs at once (replicas of one MLP; each its own seed's init and its own scenario's
/// targets, bit for bit what it would get alone). They must share hidden width, first-layer bias and SFT schedule.
pub async fn sft_phase_group(gpu: &Gpu, cfgs: &[ToyConfig]) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
    let cfg = cfgs.first().ok_or_else(|| Error::config("an SFT group needs at least one run"))?;
    for c in cfgs {
        if (c.hidden, c.depth, c.first_bias, c.sft_epochs, c.sft_lr, c.init_scale)
            != (cfg.hidden, cfg.depth, cfg.first_bias, cfg.sft_epochs, cfg.sft_lr, cfg.init_scale)
        {
            return Err(Error::config(format!(
                "runs {} and {} cannot share an SFT phase: hidden, depth, first_bias, init_scale, sft_epochs and \
                 sft_lr must match",
                cfg.run_name(),
                c.run_name()
            )));
        }
    }
    let rows: Vec<[f32; RESPONSES]> = cfgs
        .iter()
        .map(|c| scenario_row(c.scenario).ok_or_else(|| Error::config(format!("unknown scenario {}", c.scenario))))
        .collect::<Result<_>>()?;
    let n = cfgs.len();
    let mcfg = mlp_config(cfg);
    let init: Vec<f32> = cfgs
        .iter()
        .map(|c| Ok(mlp_params(&mcfg, c.seed)?.into_iter().map(|x| x * c.init_scale).collect::<Vec<f32>>()))
        .collect::<Result<Vec<_>>>()?
        .concat();
    let b = PROMPTS * RESPONSES;
    let mlp = FusedMlp::replicated(gpu, &mcfg, n, b, &init)?;
    let prompts: Vec<u32> = (0..b).map(|i| (i / RESPONSES) as u32).collect();
    let responses: Vec<u32> = (0..b).map(|i| (i % RESPONSES) as u32).collect();
    mlp.set_batch(gpu, &prompts, &responses)?;
    let sft = Sft::new(gpu, &mlp)?;
    let weights: Vec<f32> = rows.iter().flat_map(|row| (0..b).map(|i| row[i % RESPONSES])).collect();
    sft.set_mask(gpu, &weights)?;
    let mut opt = Optimizer::for_policy(gpu, &mlp, &optim(OptimizerKind::Adam, cfg.sft_lr))?;
    // Every 25 epochs the losses come back: they check for NaN, and it waits for the GPU so a browser's command
    // queue never holds hundreds of unfinished steps (which stalled the page for seconds).
    let loss_rb = Readback::new(gpu, &[&sft.loss]);
    // Epochs go to the GPU 25 to a submit (Adam's step counter lives on the GPU), the last one reading the losses
    // back: they check for NaN, and waiting then keeps a browser's queue from holding hundreds of unfinished steps.
    let mut e = 0;
    while e < cfg.sft_epochs {
        let k = 25.min(cfg.sft_epochs - e);
        opt.prepare_steps(gpu, k as u32);
        let step = [&mlp.forward, &sft.plan, &mlp.backward, &opt.plan];
        let plans: Vec<&Plan> = (0..k).flat_map(|_| step.iter().copied()).collect();
        let out = run_step(gpu, &plans, Some(&loss_rb)).await?.expect("readback");
        e += k;
        if let Some((r, l)) = out[0].iter().enumerate().find(|(_, l)| !l.is_finite()) {
            return Err(Error::NonFinite(format!("toy SFT phase of {}: loss {l} at epoch {e}", cfgs[r].run_name())));
        }
    }
    let rb = Readback::new(gpu, &[&mlp.log_probs]);
    let out = run_step(gpu, &[&mlp.forward], Some(&rb)).await?.expect("readback");
    let params = mlp.download_replica_params(gpu).await?;
    let mut result = Vec::with_capacity(n);
    for (k, (p, table)) in params.into_iter().zip(mlp.tables(&out[0])).enumerate() {
        let probs: Vec<f32> = table.iter().map(|x| x.exp()).collect();
        if probs.iter().any(|p| !p.is_finite()) {
            return Err(Error::NonFinite(format!(
                "toy SFT phase of {} produced non-finite probabilities (lr {})",
                cfgs[k].run_name(),
                cfg.sft_lr
            )));
        }
        result.push((p, probs));
    }
    Ok(result)
}

impl ToySession {
    /// SFT, then build the method's trainer. Nothing is trained past SFT yet (epoch 0).
    pub async fn new(gpu: &Gpu, cfg: &ToyConfig) -> Result<ToySession> {
        cfg.validate()?;
        let sft = sft_phase(gpu, cfg).await?;
        Self::with_sft(gpu, cfg, sft).await
    }

    /// Like `new`, reusing an SFT phase already run for this (scenario, seed, hidden, first_bias): the study runs
    /// several methods from the same pi0.
    pub async fn with_sft(gpu: &Gpu, cfg: &ToyConfig, sft: (Vec<f32>, Vec<f32>)) -> Result<ToySession> {
        Self::group(gpu, std::slice::from_ref(cfg), vec![sft]).await
    }

    /// Several runs of one preference method that differ only in seed, scenario and run name, trained together as
    /// replicas, from their SFT phases (`sft_phase_group`). RM+PPO sessions hold a single run.
    pub async fn group(gpu: &Gpu, cfgs: &[ToyConfig], sfts: Vec<(Vec<f32>, Vec<f32>)>) -> Result<ToySession> {
        let cfg = cfgs.first().ok_or_else(|| Error::config("a toy session needs at least one run"))?;
        if sfts.len() != cfgs.len() {
            return Err(Error::config(format!("{} runs but {} SFT phases", cfgs.len(), sfts.len())));
        }
        for c in cfgs {
            c.validate()?;
            let shared = |c: &ToyConfig| ToyConfig { run: String::new(), scenario: 1, seed: 0, ..c.clone() };
            if shared(c) != shared(cfg) {
                return Err(Error::config(format!(
                    "runs {} and {} cannot train together: only seed, scenario and run name may differ",
                    cfg.run_name(),
                    c.run_name()
                )));
            }
        }
        let n = cfgs.len();
        let mcfg = mlp_config(cfg);
        let method = match &cfg.method {
            ToyMethod::Preference { loss } => {
                // Rows 0..4: (prompt i, chosen_i); rows 4..8: (prompt i, rejected_i); the same for every replica.
                let prompts: Vec<u32> = PAIRS.iter().chain(PAIRS.iter()).map(|p| p.0 as u32).collect();
                let responses: Vec<u32> =
                    PAIRS.iter().map(|p| p.1 as u32).chain(PAIRS.iter().map(|p| p.2 as u32)).collect();
                let b = 2 * PAIRS.len();
                let params: Vec<f32> = sfts.iter().flat_map(|s| s.0.iter().copied()).collect();
                let policy = FusedMlp::replicated(gpu, &mcfg, n, b, &params)?;
                policy.set_batch(gpu, &prompts, &responses)?;
                let reference = if loss.uses_reference() {
                    let r = FusedMlp::replicated(gpu, &mcfg, n, b, &params)?;
                    r.set_batch(gpu, &prompts, &responses)?;
                    Some(r)
                } else {
                    None
                };
                let trainer =
                    PreferenceTrainer::new(gpu, policy, reference, loss, &run_optim(cfg), ReferenceMode::Precomputed)?;
                trainer.objective.set_mask(gpu, &vec![1.0; n * b])?;
                trainer.precompute_reference(gpu).await?;
                let rb =
                    Readback::new(gpu, &[&trainer.policy.log_probs, &trainer.objective.metrics, &trainer.opt.norm]);
                Method::Preference { trainer: Box::new(trainer), rb }
            }
            ToyMethod::Ppo { kl_coef, rm_epochs, samples_per_prompt } => {
                if n != 1 {
                    return Err(Error::config("an RM+PPO session trains one run (its own reward model and rollouts)"));
                }
                let (rm_cfg, rm_params, rm_metrics) = train_toy_reward_model(gpu, cfg.seed, *rm_epochs).await?;
                let ppo = PpoConfig { kl_coef: *kl_coef, seed: cfg.seed, ..Default::default() };
                let rows = PROMPTS * (*samples_per_prompt).max(1);
                let trainer = PpoToyTrainer::new(
                    gpu,
                    &ppo,
                    &run_optim(cfg),
                    &mcfg,
                    &sfts[0].0,
                    &mlp_value_init(&mcfg, &sfts[0].0),
                    RewardSource::Model { cfg: rm_cfg, params: rm_params },
                    rows,
                )?;
                Method::Ppo { trainer: Box::new(trainer), rm_metrics }
            }
        };
        let members = cfgs
            .iter()
            .zip(sfts)
            .map(|(c, (_, sft_probs))| ToyMember {
                cfg: c.clone(),
                last_log_probs: sft_probs.iter().map(|p| p.ln()).collect(),
                sft_probs,
                snapshots: Vec::new(),
            })
            .collect();
        Ok(ToySession { cfg: cfg.clone(), epoch: 0, members, method })
    }

    fn wants_log(&self, epoch: usize) -> bool {
        epoch.is_multiple_of(self.cfg.log_every) || SNAPSHOT_EPOCHS.contains(&epoch) || epoch == self.cfg.epochs
    }

    pub fn finished(&self) -> bool {
        self.epoch >= self.cfg.epochs
    }

    /// Dispatches of one training epoch (all members together).
    pub fn dispatches_per_epoch(&self) -> usize {
        match &self.method {
            Method::Preference { trainer, .. } => trainer.dispatches_per_step(),
            Method::Ppo { trainer, .. } => trainer.dispatches_per_step(),
        }
    }

    /// Records of every member from a preference step's readback: raw[0] (N, P, R) log-probs, raw[1] (N, STATS)
    /// metrics, raw[2] (2N) gradient norms and clip scales.
    fn record(&mut self, epoch: usize, raw: &[Vec<f32>]) -> Result<Vec<ToyRecord>> {
        let n = self.members.len();
        let per_lp = raw[0].len() / n;
        let per_m = raw[1].len() / n;
        let snapshot = SNAPSHOT_EPOCHS.contains(&epoch) || epoch == self.cfg.epochs;
        let mut out = Vec::with_capacity(n);
        for (k, m) in self.members.iter_mut().enumerate() {
            let lp = raw[0][k * per_lp..k * per_lp + PROMPTS * RESPONSES].to_vec();
            let mut metrics: BTreeMap<String, f32> =
                PreferenceMetrics::from_raw(&raw[1][k * per_m..(k + 1) * per_m]).values.into_iter().collect();
            metrics.insert("grad_norm".into(), raw[2][2 * k]);
            for (key, v) in summarize(&lp) {
                metrics.insert(key.into(), v);
            }
            if let Some((key, v)) = metrics.iter().find(|(key, v)| !v.is_finite() && !key.starts_with("grad/")) {
                return Err(Error::NonFinite(format!("run {}: {key} = {v} at epoch {epoch}", m.cfg.run_name())));
            }
            if snapshot {
                m.snapshots.push((epoch, lp.iter().map(|x| x.exp()).collect()));
            }
            m.last_log_probs = lp;
            out.push(ToyRecord {
                run: m.cfg.run_name(),
                loss_type: m.cfg.method.name(),
                scenario: m.cfg.scenario,
                seed: m.cfg.seed,
                epoch,
                metrics,
            });
        }
        Ok(out)
    }

    fn record_ppo(&mut self, epoch: usize, probs: &[f32], ppo: Option<&PpoMetrics>) -> Result<ToyRecord> {
        let lp: Vec<f32> = probs[..PROMPTS * RESPONSES].iter().map(|p| p.max(f32::MIN_POSITIVE).ln()).collect();
        let mut metrics: BTreeMap<String, f32> = BTreeMap::new();
        if let Some(pm) = ppo {
            metrics.extend(pm.values.iter().cloned());
        }
        if let Method::Ppo { rm_metrics, .. } = &self.method {
            metrics.extend(rm_metrics.iter().cloned());
        }
        for (k, v) in summarize(&lp) {
            metrics.insert(k.into(), v);
        }
        let m = &mut self.members[0];
        if SNAPSHOT_EPOCHS.contains(&epoch) || epoch == self.cfg.epochs {
            m.snapshots.push((epoch, probs[..PROMPTS * RESPONSES].to_vec()));
        }
        m.last_log_probs = lp;
        Ok(ToyRecord {
            run: m.cfg.run_name(),
            loss_type: m.cfg.method.name(),
            scenario: m.cfg.scenario,
            seed: m.cfg.seed,
            epoch,
            metrics,
        })
    }

    /// Train up to `n` more epochs (stopping at cfg.epochs); returns the records logged on the way (every member's,
    /// epoch by epoch). The state at epoch e (after e updates) is logged by the step that performs update e + 1, and
    /// the last epoch by a final forward without update.
    pub async fn advance(&mut self, gpu: &Gpu, n: usize) -> Result<Vec<ToyRecord>> {
        let mut out = Vec::new();
        let end = (self.epoch + n).min(self.cfg.epochs);
        while self.epoch < end {
            let e = self.epoch;
            let log = self.wants_log(e);
            match &mut self.method {
                Method::Preference { .. } => {
                    // The unlogged epochs up to the next logged one (or the end) and that logged epoch, in one
                    // submit: its readback comes last, after its own forward, as if it were submitted alone.
                    let next_log = (e..end).find(|&x| self.wants_log(x));
                    let last = next_log.unwrap_or(end - 1);
                    let k = last + 1 - e;
                    let Method::Preference { trainer, rb } = &mut self.method else { unreachable!() };
                    if let Some(raw) = trainer.steps_with(gpu, k, next_log.map(|_| &*rb)).await? {
                        out.extend(self.record(last, &raw)?);
                    }
                    self.epoch += k;
                    continue;
                }
                Method::Ppo { trainer, .. } => {
                    // The policy's probabilities before this step's update, then the step (rollout + PPO epochs).
                    let lp = if log { Some(trainer.policy_probs(gpu).await?) } else { None };
                    let m = trainer.step(gpu).await?;
                    if let Some(lp) = lp {
                        out.push(self.record_ppo(e, &lp, Some(&m))?);
                    }
                }
            }
            self.epoch += 1;
        }
        let last_logged = self.members[0].snapshots.last().map(|s| s.0);
        if self.epoch == self.cfg.epochs && end == self.cfg.epochs && n > 0 && last_logged != Some(self.cfg.epochs) {
            match &self.method {
                Method::Preference { trainer, rb } => {
                    let raw = run_step(gpu, &[trainer.policy.forward_plan(), &trainer.objective.plan], Some(rb))
                        .await?
                        .expect("readback");
                    out.extend(self.record(self.cfg.epochs, &raw)?);
                }
                Method::Ppo { trainer, .. } => {
                    let lp = trainer.policy_probs(gpu).await?;
                    out.push(self.record_ppo(self.cfg.epochs, &lp, None)?);
                }
            }
        }
        Ok(out)
    }

    /// Run to the end; returns every record.
    pub async fn run(&mut self, gpu: &Gpu) -> Result<Vec<ToyRecord>> {
        let n = self.cfg.epochs - self.epoch;
        self.advance(gpu, n.max(1)).await
    }
}
