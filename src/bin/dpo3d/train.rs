//! The training loop shared by `dpo3d sft`, `reward` and `dpo`: batches from a seeded `Batcher`, gradient
//! accumulation, the LR schedule, logging (TRL's names, averaged over `logging_steps`), evaluation every
//! `eval_steps`, checkpoints every `save_steps` with the trainer state, and `--resume` from the last of them.
//! Each subcommand supplies a `Job`: how to train on a micro-batch and how to evaluate.

use std::path::Path;
use std::time::Instant;

use dpo3d::data::{collate_preferences, collate_sft, Batcher, LastBatch, PreferenceBatch, PreferencePair, SftExample};
use dpo3d::model::{Gpt, GptConfig};
use dpo3d::objectives::PreferenceLoss;
use dpo3d::train::sft::SftTrainer;
use dpo3d::train::state::TrainerState;
use dpo3d::train::{
    accumulation_config, LrSchedule, LrSchedulerType, OptimConfig, Optimizer, PreferenceTrainer, ReferenceMode,
    RewardTrainer,
};
use dpo3d::{Error, Gpu, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};

use crate::config::{Config, Task};
use crate::output::{checkpoints, save_model, Metrics};

/// A micro-batch's metrics, and the gradient norm when the optimizer stepped.
pub type MicroOut = (Vec<(String, f32)>, Option<f32>);

/// One kind of training: a micro-batch step on rows of the training set, and a full pass over the eval set.
pub trait Job {
    /// Upload the training rows `idx` and run one micro-batch; returns its metrics and, when `last`, the norm of
    /// the accumulated gradient.
    fn micro(&mut self, gpu: &Gpu, idx: &[usize], first: bool, last: bool) -> Result<MicroOut>;
    /// Metrics over the whole eval set (names without the eval_ prefix), averaged over its batches.
    fn evaluate(&mut self, gpu: &Gpu) -> Result<Vec<(String, f32)>>;
    fn has_eval(&self) -> bool;
    fn opt(&mut self) -> &mut Optimizer;
    fn params(&self, gpu: &Gpu) -> Result<Vec<f32>>;
    fn model_cfg(&self) -> &GptConfig;
    /// Tokens in one micro-batch (B x T), for tokens/s.
    fn tokens_per_micro(&self) -> usize;
    /// Replace the trained model's weights (resuming).
    fn upload(&mut self, gpu: &Gpu, params: &[f32]) -> Result<()>;
}

/// What the loop needs besides the job.
pub struct RunSpec<'a> {
    pub task: Task,
    pub cfg: &'a Config,
    pub out: &'a Path,
    pub n_train: usize,
    pub tokenizer_json: Option<String>,
    pub config_yaml: String,
    pub resume: bool,
}

pub fn optim_config(cfg: &Config) -> Result<OptimConfig> {
    let base = OptimConfig {
        lr: cfg.learning_rate,
        beta1: cfg.adam_beta1,
        beta2: cfg.adam_beta2,
        eps: cfg.adam_epsilon,
        weight_decay: cfg.weight_decay,
        grad_clip: cfg.max_grad_norm,
        ..Default::default()
    };
    accumulation_config(&base, cfg.gradient_accumulation_steps)
}

fn mean_into(acc: &mut Vec<(String, f64)>, m: &[(String, f32)]) {
    if acc.is_empty() {
        acc.extend(m.iter().map(|(k, _)| (k.clone(), 0.0)));
    }
    for ((_, a), (_, v)) in acc.iter_mut().zip(m) {
        *a += *v as f64;
    }
}

fn progress(total: usize, start: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(total as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] step {pos}/{len} {msg} ETA {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb.set_position(start as u64);
    pb
}

pub fn run(gpu: &Gpu, job: &mut dyn Job, spec: &RunSpec) -> Result<()> {
    let cfg = spec.cfg;
    let k = cfg.gradient_accumulation_steps.max(1);
    let b = cfg.per_device_train_batch_size;
    let last = if cfg.dataloader_drop_last { LastBatch::Drop } else { LastBatch::TopUp };
    let mut batcher = Batcher::new(spec.n_train, b, cfg.seed, true, last)?;
    let total = if cfg.max_steps > 0 {
        cfg.max_steps as usize
    } else {
        ((batcher.batches_per_epoch() / k).max(1) as f64 * cfg.num_train_epochs).ceil().max(1.0) as usize
    };
    let kind: LrSchedulerType = cfg.lr_scheduler_type.parse()?;
    let sched = LrSchedule {
        kind,
        base_lr: cfg.learning_rate,
        warmup_steps: LrSchedule::warmup_from(cfg.warmup_steps, cfg.warmup_ratio, total),
        total_steps: total,
    };
    let mut step = 0usize;
    if spec.resume {
        let (n, dir) = checkpoints(spec.out).pop().expect("prepare_output_dir checked");
        let state = TrainerState::load(&dir)?;
        if state.gradient_accumulation_steps != k || state.seed != cfg.seed {
            return Err(Error::config(format!(
                "--resume: {} was trained with gradient_accumulation_steps {} and seed {}; the config now says {k} \
                 and {}",
                dir.display(),
                state.gradient_accumulation_steps,
                state.seed,
                cfg.seed
            )));
        }
        let (mcfg, params) = dpo3d::checkpoint::load_gpt(&dir)?;
        if &mcfg != job.model_cfg() {
            return Err(Error::config(format!("--resume: {} holds a different model", dir.display())));
        }
        job.upload(gpu, &params)?;
        state.restore_optimizer(gpu, job.opt(), &dir)?;
        batcher.set_state(state.batcher);
        step = n;
        eprintln!("resuming from {} (step {n} of {total})", dir.display());
    }
    let mut metrics = Metrics::open(spec.out, spec.resume.then_some(step))?;
    let pb = progress(total, step, spec.task.name());
    let started = Instant::now();
    let start_step = step;
    let (mut acc, mut acc_n, mut norm_acc) = (Vec::<(String, f64)>::new(), 0usize, 0.0f64);
    while step < total {
        let lr = sched.lr(step);
        job.opt().cfg.lr = lr;
        let mut step_metrics = Vec::<(String, f64)>::new();
        let mut norm = 0.0;
        for micro in 0..k {
            let idx = batcher.next_indices();
            let (m, n) = job.micro(gpu, &idx, micro == 0, micro + 1 == k)?;
            mean_into(&mut step_metrics, &m);
            if let Some(n) = n {
                norm = n / k as f32; // the optimizer saw the sum of k micro-batch gradients
            }
        }
        step += 1;
        for (_, v) in step_metrics.iter_mut() {
            *v /= k as f64;
        }
        let m32: Vec<(String, f32)> = step_metrics.iter().map(|(n, v)| (n.clone(), *v as f32)).collect();
        mean_into(&mut acc, &m32);
        acc_n += 1;
        norm_acc += norm as f64;
        let loss = m32.iter().find(|(n, _)| n == "loss").map_or(f32::NAN, |x| x.1);
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let tok_s = ((step - start_step) * k * job.tokens_per_micro()) as f64 / secs;
        pb.set_message(format!("loss {loss:.4} {tok_s:.0} tok/s"));
        pb.set_position(step as u64);
        if step.is_multiple_of(cfg.logging_steps.max(1)) || step == total || step == start_step + 1 {
            let mut row = Map::new();
            row.insert("step".into(), Value::from(step));
            row.insert("epoch".into(), Value::from(batcher.epoch_progress()));
            row.insert("learning_rate".into(), Value::from(lr));
            row.insert("grad_norm".into(), Value::from(norm_acc / acc_n as f64));
            for (n, v) in &acc {
                row.insert(n.clone(), Value::from(v / acc_n as f64));
            }
            metrics.log(row)?;
            acc.clear();
            acc_n = 0;
            norm_acc = 0.0;
        }
        let eval_now = job.has_eval() && ((cfg.eval_steps > 0 && step.is_multiple_of(cfg.eval_steps)) || step == total);
        if eval_now {
            let em = job.evaluate(gpu)?;
            let mut row = Map::new();
            row.insert("step".into(), Value::from(step));
            row.insert("epoch".into(), Value::from(batcher.epoch_progress()));
            for (n, v) in &em {
                row.insert(format!("eval_{n}"), Value::from(*v));
            }
            metrics.log(row)?;
            pb.println(format!(
                "step {step}: eval_loss {:.4}",
                em.iter().find(|(n, _)| n == "loss").map_or(f32::NAN, |x| x.1)
            ));
        }
        if cfg.save_steps > 0 && step.is_multiple_of(cfg.save_steps) && step < total {
            let dir = spec.out.join(format!("checkpoint-{step}"));
            save_checkpoint(gpu, job, spec, &batcher, step, &dir)?;
            metrics.plot(spec.out)?;
        }
    }
    pb.finish_and_clear();
    // The final model at the top of output_dir, and as the last checkpoint (resumable with a larger max_steps).
    let params = job.params(gpu)?;
    save_model(spec.out, job.model_cfg(), &params, spec.tokenizer_json.as_deref(), &spec.config_yaml)?;
    if step > start_step {
        save_checkpoint(gpu, job, spec, &batcher, step, &spec.out.join(format!("checkpoint-{step}")))?;
    }
    metrics.plot(spec.out)?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{}: {} steps in {secs:.1} s; model, metrics.jsonl and plots in {}",
        spec.task.name(),
        step - start_step,
        spec.out.display()
    );
    Ok(())
}

fn save_checkpoint(
    gpu: &Gpu,
    job: &mut dyn Job,
    spec: &RunSpec,
    batcher: &Batcher,
    step: usize,
    dir: &Path,
) -> Result<()> {
    let params = job.params(gpu)?;
    save_model(dir, job.model_cfg(), &params, spec.tokenizer_json.as_deref(), &spec.config_yaml)?;
    let opt = job.opt();
    let state = TrainerState {
        global_step: step,
        epoch: batcher.epoch_progress(),
        batcher: batcher.state(),
        rng: None,
        optimizer_step: opt.step,
        gradient_accumulation_steps: spec.cfg.gradient_accumulation_steps.max(1),
        seed: spec.cfg.seed,
        value_optimizer_step: None,
    };
    // Before the trainer state, whose presence marks a complete checkpoint (`output::checkpoints`).
    crate::output::save_kernels(gpu, dir)?;
    pollster::block_on(state.save(gpu, opt, dir))
}

/// Mean metrics over `n` rows in batches of `b` (the last batch topped up from the start, its metrics weighted by
/// the rows that are new).
fn eval_batches(
    n: usize,
    b: usize,
    mut f: impl FnMut(&[usize]) -> Result<Vec<(String, f32)>>,
) -> Result<Vec<(String, f32)>> {
    let mut acc = Vec::<(String, f64)>::new();
    let mut weight = 0.0;
    for start in (0..n).step_by(b) {
        let idx: Vec<usize> = (start..start + b).map(|i| i % n).collect();
        let m = f(&idx)?;
        let w = (n - start).min(b) as f64;
        if acc.is_empty() {
            acc.extend(m.iter().map(|(k, _)| (k.clone(), 0.0)));
        }
        for ((_, a), (_, v)) in acc.iter_mut().zip(&m) {
            *a += w * *v as f64;
        }
        weight += w;
    }
    Ok(acc.into_iter().map(|(k, v)| (k, (v / weight) as f32)).collect())
}

// ---- SFT ----------------------------------------------------------------------------------------------------------

pub struct SftJob {
    pub tr: SftTrainer,
    pub train: Vec<SftExample>,
    pub eval: Vec<SftExample>,
    pub pad: u32,
}

impl SftJob {
    fn batch(&self, rows: &[SftExample]) -> Result<dpo3d::data::SftBatch> {
        collate_sft(rows, self.tr.gpt.t, self.pad)
    }
}

impl Job for SftJob {
    fn micro(&mut self, gpu: &Gpu, idx: &[usize], first: bool, last: bool) -> Result<MicroOut> {
        let rows: Vec<SftExample> = idx.iter().map(|&i| self.train[i].clone()).collect();
        self.tr.set_batch(gpu, &self.batch(&rows)?)?;
        let (loss, norm) = pollster::block_on(self.tr.micro_step(gpu, first, last))?;
        Ok((vec![("loss".into(), loss)], norm))
    }
    fn evaluate(&mut self, gpu: &Gpu) -> Result<Vec<(String, f32)>> {
        let b = self.tr.gpt.b;
        let eval = std::mem::take(&mut self.eval);
        let r = eval_batches(eval.len(), b, |idx| {
            let rows: Vec<SftExample> = idx.iter().map(|&i| eval[i].clone()).collect();
            let loss = pollster::block_on(self.tr.eval(gpu, &self.batch(&rows)?))?;
            Ok(vec![("loss".into(), loss)])
        });
        self.eval = eval;
        r
    }
    fn has_eval(&self) -> bool {
        !self.eval.is_empty()
    }
    fn opt(&mut self) -> &mut Optimizer {
        &mut self.tr.opt
    }
    fn params(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        pollster::block_on(self.tr.gpt.download_params(gpu))
    }
    fn model_cfg(&self) -> &GptConfig {
        &self.tr.gpt.cfg
    }
    fn tokens_per_micro(&self) -> usize {
        self.tr.gpt.b * self.tr.gpt.t
    }
    fn upload(&mut self, gpu: &Gpu, params: &[f32]) -> Result<()> {
        self.tr.gpt.upload_params(gpu, params)
    }
}

// ---- reward model and DPO -----------------------------------------------------------------------------------------

pub enum PrefTrainer {
    Dpo(Box<PreferenceTrainer<Gpt>>),
    Reward(Box<RewardTrainer<Gpt>>),
}

/// One pair's response tokens and the policy's log-prob of each (`dpo3d eval --token-logps`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct TokenLogps {
    pub chosen: Vec<u32>,
    pub chosen_logps: Vec<f32>,
    pub rejected: Vec<u32>,
    pub rejected_logps: Vec<f32>,
}

pub struct PrefJob {
    pub tr: PrefTrainer,
    pub train: Vec<PreferencePair>,
    pub eval: Vec<PreferencePair>,
    pub pad: u32,
    /// B pairs, T
    pub b: usize,
    pub t: usize,
}

impl PrefJob {
    #[allow(clippy::too_many_arguments)]
    pub fn new_dpo(
        gpu: &Gpu,
        mcfg: &GptConfig,
        params: &[f32],
        ref_params: &[f32],
        loss: &PreferenceLoss,
        opt: &OptimConfig,
        data: (Vec<PreferencePair>, Vec<PreferencePair>),
        b: usize,
        t: usize,
        pad: u32,
    ) -> Result<PrefJob> {
        let policy = Gpt::new(gpu, mcfg, 2 * b, t, params)?;
        let reference = if loss.uses_reference() { Some(Gpt::new(gpu, mcfg, 2 * b, t, ref_params)?) } else { None };
        let tr = PreferenceTrainer::new(gpu, policy, reference, loss, opt, ReferenceMode::EveryStep)?;
        Ok(PrefJob { tr: PrefTrainer::Dpo(Box::new(tr)), train: data.0, eval: data.1, pad, b, t })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new_reward(
        gpu: &Gpu,
        mcfg: &GptConfig,
        params: &[f32],
        opt: &OptimConfig,
        data: (Vec<PreferencePair>, Vec<PreferencePair>),
        b: usize,
        t: usize,
        pad: u32,
    ) -> Result<PrefJob> {
        let model = Gpt::new(gpu, mcfg, 2 * b, t, params)?;
        let tr = RewardTrainer::new(gpu, model, opt)?;
        Ok(PrefJob { tr: PrefTrainer::Reward(Box::new(tr)), train: data.0, eval: data.1, pad, b, t })
    }

    fn upload_rows(&self, gpu: &Gpu, rows: &[PreferencePair]) -> Result<PreferenceBatch> {
        let batch = collate_preferences(rows, self.t, self.pad)?;
        match &self.tr {
            PrefTrainer::Dpo(tr) => tr.set_batch(gpu, &batch)?,
            PrefTrainer::Reward(tr) => tr.set_batch(gpu, &batch)?,
        }
        Ok(batch)
    }

    /// Metrics over `pairs` without updating.
    pub fn evaluate_pairs(&mut self, gpu: &Gpu, pairs: &[PreferencePair]) -> Result<Vec<(String, f32)>> {
        eval_batches(pairs.len(), self.b, |idx| {
            let rows: Vec<PreferencePair> = idx.iter().map(|&i| pairs[i].clone()).collect();
            self.upload_rows(gpu, &rows)?;
            let m = match &self.tr {
                PrefTrainer::Dpo(tr) => pollster::block_on(tr.evaluate(gpu))?,
                PrefTrainer::Reward(tr) => pollster::block_on(tr.evaluate(gpu))?,
            };
            Ok(self.shown(m.values))
        })
    }

    /// Per pair, the policy's log-prob of every response token: (chosen ids, their log-probs, rejected ids, theirs).
    /// Runs the evaluation forward pass per batch and reads the policy's (2B, T) log-probs back.
    pub fn token_logps(&mut self, gpu: &Gpu, pairs: &[PreferencePair]) -> Result<Vec<TokenLogps>> {
        let mut out = Vec::with_capacity(pairs.len());
        for start in (0..pairs.len()).step_by(self.b) {
            let idx: Vec<usize> = (start..start + self.b).map(|i| i % pairs.len()).collect();
            let rows: Vec<PreferencePair> = idx.iter().map(|&i| pairs[i].clone()).collect();
            let batch = self.upload_rows(gpu, &rows)?;
            match &self.tr {
                PrefTrainer::Dpo(tr) => pollster::block_on(tr.evaluate(gpu))?,
                PrefTrainer::Reward(_) => {
                    return Err(Error::config("per-token log-probs need a language model, not a reward model"))
                }
            };
            let logps = pollster::block_on(self.gpt().logps.read_f32(gpu))?;
            let t = self.t;
            let response = |row: usize| -> (Vec<u32>, Vec<f32>) {
                (0..t)
                    .filter(|&j| batch.mask[row * t + j] > 0.0)
                    .map(|j| (batch.targets[row * t + j], logps[row * t + j]))
                    .unzip()
            };
            for k in 0..(pairs.len() - start).min(self.b) {
                let (ct, cl) = response(k);
                let (rt, rl) = response(self.b + k);
                out.push(TokenLogps { chosen: ct, chosen_logps: cl, rejected: rt, rejected_logps: rl });
            }
        }
        Ok(out)
    }

    /// The metrics this trainer computes: a reward model's are the loss and `rewards/*` (its accuracy is
    /// `rewards/accuracies`); the rest of the shared metric vector is zero there.
    fn shown(&self, values: Vec<(String, f32)>) -> Vec<(String, f32)> {
        match self.tr {
            PrefTrainer::Dpo(_) => values,
            PrefTrainer::Reward(_) => {
                values.into_iter().filter(|(k, _)| k == "loss" || k.starts_with("rewards/")).collect()
            }
        }
    }

    fn gpt(&self) -> &Gpt {
        match &self.tr {
            PrefTrainer::Dpo(tr) => &tr.policy,
            PrefTrainer::Reward(tr) => &tr.model,
        }
    }
}

impl Job for PrefJob {
    fn micro(&mut self, gpu: &Gpu, idx: &[usize], first: bool, last: bool) -> Result<MicroOut> {
        let rows: Vec<PreferencePair> = idx.iter().map(|&i| self.train[i].clone()).collect();
        self.upload_rows(gpu, &rows)?;
        let (m, norm) = match &mut self.tr {
            PrefTrainer::Dpo(tr) => pollster::block_on(tr.micro_step(gpu, first, last))?,
            PrefTrainer::Reward(tr) => pollster::block_on(tr.micro_step(gpu, first, last))?,
        };
        Ok((self.shown(m.values), norm))
    }
    fn evaluate(&mut self, gpu: &Gpu) -> Result<Vec<(String, f32)>> {
        let eval = std::mem::take(&mut self.eval);
        let r = self.evaluate_pairs(gpu, &eval);
        self.eval = eval;
        r
    }
    fn has_eval(&self) -> bool {
        !self.eval.is_empty()
    }
    fn opt(&mut self) -> &mut Optimizer {
        match &mut self.tr {
            PrefTrainer::Dpo(tr) => &mut tr.opt,
            PrefTrainer::Reward(tr) => &mut tr.opt,
        }
    }
    fn params(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        pollster::block_on(self.gpt().download_params(gpu))
    }
    fn model_cfg(&self) -> &GptConfig {
        &self.gpt().cfg
    }
    fn tokens_per_micro(&self) -> usize {
        2 * self.b * self.t
    }
    fn upload(&mut self, gpu: &Gpu, params: &[f32]) -> Result<()> {
        self.gpt().upload_params(gpu, params)
    }
}
