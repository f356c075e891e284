//! `dpo3d`: train small GPTs on your own data from the command line, on any GPU wgpu reaches.
//!
//!     dpo3d tokenizer --data train.jsonl --vocab-size 512 --output-dir tok
//!     dpo3d sft --config sft.yaml --tokenizer tok/tokenizer.json --output-dir runs/sft
//!     dpo3d dpo --config dpo.yaml --model runs/sft --data pairs.jsonl --loss-type ipo --output-dir runs/dpo
//!     dpo3d reward --model runs/sft --data pairs.jsonl --output-dir runs/rm
//!     dpo3d ppo --model runs/sft --reward-model runs/rm --data prompts.jsonl --output-dir runs/ppo
//!     dpo3d eval --model runs/dpo --ref-model runs/sft --data heldout.jsonl
//!     dpo3d generate --model runs/dpo --prompt "what is 2+2? "
//!     dpo3d task-data --task math --output-dir data/math   # generated word problems with worked solutions
//!     dpo3d generate --model runs/sft --data data/math/sft.jsonl --num-samples 8 --output samples.jsonl
//!     dpo3d judge --task math --data samples.jsonl --output judged.jsonl
//!     dpo3d pairs --samples judged.jsonl --other weak_judged.jsonl --output-dir pairs   # on/off-policy pairs
//!
//! Config keys are TRL's argument names (`learning_rate`, `per_device_train_batch_size`, `loss_type`, ...), so a
//! config of TRL's keys is also a `trl dpo --config` file. Errors are one line on stderr and a non-zero exit.

mod config;
mod output;
mod setup;
mod tasks;
mod train;

use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Command};
use dpo3d::checkpoint::{load_gpt, write_atomic};
use dpo3d::data::{Batcher, LastBatch, PreferencePair};
use dpo3d::model::GptConfig;
use dpo3d::objectives::ppo::PpoConfig;
use dpo3d::objectives::PreferenceLoss;
use dpo3d::train::ppo::{gpt_value_init, GptRewardSource, PpoGptTrainer};
use dpo3d::train::sft::SftTrainer;
use dpo3d::train::state::{moment_names, restore_moments, TrainerState};
use dpo3d::train::{LrSchedule, LrSchedulerType, OptimConfig};
use dpo3d::{Error, Gpu, Result};
use serde_json::{Map, Value};

use config::{Config, Task};
use setup::{load_tokenizer, Tok};

fn cli() -> Command {
    Command::new("dpo3d")
        .about("Train small GPTs with SFT, reward models, DPO and its family, and PPO, in WGSL on any GPU")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("toy-data")
                .about("Write dpo3d's generated toy data (sums and animal facts) as JSONL text, to try the commands on")
                .arg(Arg::new("output-dir").long("output-dir").alias("output_dir").required(true).value_name("DIR"))
                .arg(Arg::new("rows").long("rows").default_value("512").value_parser(clap::value_parser!(usize)))
                .arg(Arg::new("seed").long("seed").default_value("0").value_parser(clap::value_parser!(u64))),
        )
        .subcommand(
            Command::new("task-data")
                .about(
                    "Write a generated task with reference answers as JSONL text: math word problems (worked \
                     solutions) or poem instructions; scored by dpo3d's judges (dpo3d::data::tasks)",
                )
                .arg(
                    Arg::new("task")
                        .long("task")
                        .required(true)
                        .value_parser(["math", "poem"]),
                )
                .arg(Arg::new("output-dir").long("output-dir").alias("output_dir").required(true).value_name("DIR"))
                .arg(Arg::new("rows").long("rows").default_value("2000").value_parser(clap::value_parser!(usize)))
                .arg(Arg::new("eval-rows").long("eval-rows").default_value("200").value_parser(clap::value_parser!(usize)))
                .arg(Arg::new("seed").long("seed").default_value("0").value_parser(clap::value_parser!(u64))),
        )
        .subcommand(
            Command::new("tokenizer")
                .about("Train a byte-level BPE tokenizer on the text fields of JSONL files; writes DIR/tokenizer.json")
                .arg(Arg::new("data").long("data").num_args(1..).required(true).value_name("FILE"))
                .arg(
                    Arg::new("vocab-size")
                        .long("vocab-size")
                        .alias("vocab_size")
                        .required(true)
                        .value_parser(clap::value_parser!(usize)),
                )
                .arg(Arg::new("min-frequency").long("min-frequency").default_value("2").value_parser(clap::value_parser!(u64)))
                .arg(Arg::new("output-dir").long("output-dir").alias("output_dir").required(true).value_name("DIR")),
        )
        .subcommand(config::training_command(Task::Sft, "Supervised fine-tuning on {prompt, completion} or {text} rows"))
        .subcommand(config::training_command(Task::Reward, "A Bradley-Terry reward model (scalar head) on preference pairs"))
        .subcommand(config::training_command(Task::Dpo, "DPO or any loss of its family on preference pairs"))
        .subcommand(config::training_command(
            Task::Ppo,
            "RLHF-PPO on {prompt} rows, scored by a reward model or a rule (reward_token_id)",
        ))
        .subcommand(
            Command::new("eval")
                .about("TRL's preference metrics on held-out pairs (a reward model: its pairwise accuracy); JSON on stdout")
                .arg(Arg::new("model").long("model").required(true).value_name("DIR"))
                .arg(Arg::new("ref-model").long("ref-model").alias("ref_model").value_name("DIR"))
                .arg(Arg::new("data").long("data").required(true).value_name("FILE"))
                .arg(Arg::new("tokenizer").long("tokenizer").value_name("FILE"))
                .arg(Arg::new("beta").long("beta").default_value("0.1").value_parser(clap::value_parser!(f32)))
                .arg(Arg::new("batch-size").long("batch-size").default_value("8").value_parser(clap::value_parser!(usize)))
                .arg(Arg::new("max-length").long("max-length").alias("max_length").value_parser(clap::value_parser!(usize)))
                .arg(
                    Arg::new("token-logps")
                        .long("token-logps")
                        .value_name("FILE")
                        .help("Also write each pair's response tokens and their log-probs as JSONL (language models)"),
                ),
        )
        .subcommand(
            Command::new("generate")
                .about(
                    "Sample completions: of --prompt (one JSON line {prompt, completion} per sample on stdout), or of \
                     every row of --data FILE.jsonl into --output FILE (the row plus completions, stopped, logps, \
                     num_tokens)",
                )
                .arg(Arg::new("model").long("model").required(true).value_name("DIR"))
                .arg(Arg::new("prompt").long("prompt").required_unless_present("data").conflicts_with("data"))
                .arg(Arg::new("data").long("data").value_name("FILE").requires("output"))
                .arg(Arg::new("output").long("output").value_name("FILE").requires("data"))
                .arg(
                    Arg::new("batch-size")
                        .long("batch-size")
                        .default_value("32")
                        .value_parser(clap::value_parser!(usize))
                        .help("Completions drawn per GPU call"),
                )
                .arg(Arg::new("tokenizer").long("tokenizer").value_name("FILE"))
                .arg(Arg::new("num-samples").long("num-samples").default_value("1").value_parser(clap::value_parser!(usize)))
                .arg(Arg::new("temperature").long("temperature").default_value("1.0").value_parser(clap::value_parser!(f32)))
                .arg(Arg::new("top-k").long("top-k").default_value("0").value_parser(clap::value_parser!(usize)))
                .arg(
                    Arg::new("max-new-tokens")
                        .long("max-new-tokens")
                        .default_value("32")
                        .value_parser(clap::value_parser!(usize)),
                )
                .arg(Arg::new("seed").long("seed").default_value("0").value_parser(clap::value_parser!(u64)))
                .arg(Arg::new("no-stop").long("no-stop").action(ArgAction::SetTrue).help("Do not stop at <|endoftext|>")),
        )
        .subcommand(
            Command::new("judge")
                .about(
                    "Score completions of a task-data task with its rule-based judge (math 1-5, poems per rule): adds \
                     `scores` to each row; the summary rates as JSON on stdout",
                )
                .arg(Arg::new("task").long("task").required(true).value_parser(["math", "poem"]))
                .arg(Arg::new("data").long("data").required(true).value_name("FILE"))
                .arg(Arg::new("output").long("output").value_name("FILE")),
        )
        .subcommand(
            Command::new("pairs")
                .about(
                    "Preference pairs from judged samples: on_on.jsonl (best vs worst own sample) and, with --other \
                     and reference answers, on_off, off_on and off_off.jsonl (the paper's four scenarios)",
                )
                .arg(Arg::new("samples").long("samples").required(true).value_name("FILE"))
                .arg(Arg::new("other").long("other").value_name("FILE").help("Judged answers of another (weaker) model"))
                .arg(Arg::new("output-dir").long("output-dir").alias("output_dir").required(true).value_name("DIR")),
        )
}

fn main() {
    let m = cli().get_matches();
    if let Err(e) = dispatch(&m) {
        eprintln!("error: {}", e.to_string().replace('\n', " "));
        std::process::exit(1);
    }
}

fn dispatch(m: &ArgMatches) -> Result<()> {
    match m.subcommand() {
        Some(("toy-data", a)) => toy_data(a),
        Some(("task-data", a)) => task_data(a),
        Some(("tokenizer", a)) => tokenizer(a),
        Some(("sft", a)) => train_cmd(Task::Sft, a),
        Some(("reward", a)) => train_cmd(Task::Reward, a),
        Some(("dpo", a)) => train_cmd(Task::Dpo, a),
        Some(("ppo", a)) => train_cmd(Task::Ppo, a),
        Some(("eval", a)) => eval(a),
        Some(("generate", a)) => match a.get_one::<String>("data") {
            Some(data) => tasks::generate_file(a, data),
            None => generate(a),
        },
        Some(("judge", a)) => tasks::judge(a),
        Some(("pairs", a)) => tasks::pairs(a),
        _ => unreachable!("clap requires a subcommand"),
    }
}

fn gpu() -> Result<Gpu> {
    let gpu = Gpu::new_blocking()?;
    eprintln!("adapter: {} ({})", gpu.info.name, gpu.info.backend);
    Ok(gpu)
}

/// The GPU for a training run into `out`; when resuming, with the kernel choices of the checkpoint it continues
/// pinned (`output::pin_kernels`), before any plan is built.
fn run_gpu(out: &Path, resume: bool) -> Result<Gpu> {
    let gpu = gpu()?;
    if resume {
        output::pin_kernels(&gpu, out)?;
    }
    Ok(gpu)
}

// ---- toy-data -----------------------------------------------------------------------------------------------------

/// sft.jsonl `{prompt, completion}`, pairs.jsonl and eval_pairs.jsonl `{prompt, chosen, rejected}` (held-out pairs
/// from another seed), prompts.jsonl `{prompt}`: TRL's formats, as text.
fn toy_data(a: &ArgMatches) -> Result<()> {
    use dpo3d::data::{toy_corpus, toy_preferences, ByteTokenizer};
    let dir = PathBuf::from(a.get_one::<String>("output-dir").expect("required"));
    let n = (*a.get_one::<usize>("rows").expect("default")).max(1);
    let seed = *a.get_one::<u64>("seed").expect("default");
    let text = |ids: &[u32]| ByteTokenizer.decode(ids);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let lines = |rows: Vec<Value>| rows.iter().map(|r| format!("{r}\n")).collect::<String>();
    let sft = toy_corpus(n, seed)
        .iter()
        .map(|e| serde_json::json!({"prompt": text(&e.prompt), "completion": text(&e.completion)}))
        .collect();
    let pairs = |n: usize, seed: u64| -> Vec<Value> {
        toy_preferences(n, seed)
            .iter()
            .map(|p| serde_json::json!({"prompt": text(&p.prompt), "chosen": text(&p.chosen), "rejected": text(&p.rejected)}))
            .collect()
    };
    let prompts = toy_corpus(n, seed ^ 0x9E).iter().map(|e| serde_json::json!({"prompt": text(&e.prompt)})).collect();
    write_atomic(&dir.join("sft.jsonl"), lines(sft).as_bytes())?;
    write_atomic(&dir.join("pairs.jsonl"), lines(pairs(n, seed)).as_bytes())?;
    write_atomic(&dir.join("eval_pairs.jsonl"), lines(pairs(n.div_ceil(8), seed.wrapping_add(0x5EED))).as_bytes())?;
    write_atomic(&dir.join("prompts.jsonl"), lines(prompts).as_bytes())?;
    eprintln!("toy data: sft.jsonl, pairs.jsonl, eval_pairs.jsonl, prompts.jsonl in {}", dir.display());
    Ok(())
}

// ---- task-data ----------------------------------------------------------------------------------------------------

/// sft.jsonl `{prompt, completion}` (reference answers), eval.jsonl (held-out problems from another seed, with their
/// references) and prompts.jsonl `{prompt}` (the training prompts, for sampling on-policy answers).
fn task_data(a: &ArgMatches) -> Result<()> {
    use dpo3d::data::tasks::{MathProblem, PoemTask};
    let dir = PathBuf::from(a.get_one::<String>("output-dir").expect("required"));
    let rows = (*a.get_one::<usize>("rows").expect("default")).max(1);
    let eval_rows = (*a.get_one::<usize>("eval-rows").expect("default")).max(1);
    let seed = *a.get_one::<u64>("seed").expect("default");
    let held_out = seed.wrapping_add(0x5EED);
    // (prompt, reference completion) rows of the task, `n` from `seed`.
    let make = |n: usize, seed: u64| -> Vec<(String, String)> {
        match a.get_one::<String>("task").expect("required").as_str() {
            "math" => MathProblem::set(seed, n).iter().map(|p| (format!("{}\n", p.question), p.solution())).collect(),
            _ => {
                let mut rng = dpo3d::rng::Rng::new(seed ^ 0x9E37);
                PoemTask::set(seed, n)
                    .iter()
                    .map(|t| (format!("{}\n", t.instruction()), t.reference(&mut rng)))
                    .collect()
            }
        }
    };
    let (train, eval) = (make(rows, seed), make(eval_rows, held_out));
    // Completions end with the stop token, so a model trained on them learns to stop (`generate` stops there).
    let sft = |rows: &[(String, String)]| -> String {
        rows.iter()
            .map(|(p, c)| {
                format!("{}\n", serde_json::json!({"prompt": p, "completion": format!("{c}{}", tasks::EOS_TEXT)}))
            })
            .collect()
    };
    let prompts: String = train.iter().map(|(p, _)| format!("{}\n", serde_json::json!({ "prompt": p }))).collect();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    write_atomic(&dir.join("sft.jsonl"), sft(&train).as_bytes())?;
    write_atomic(&dir.join("eval.jsonl"), sft(&eval).as_bytes())?;
    write_atomic(&dir.join("prompts.jsonl"), prompts.as_bytes())?;
    eprintln!("task data: sft.jsonl ({rows} rows), eval.jsonl ({eval_rows}), prompts.jsonl in {}", dir.display());
    Ok(())
}

// ---- tokenizer ----------------------------------------------------------------------------------------------------

/// Every string field of every row (prompt, chosen, rejected, completion, text, ...); a bad row is file:line.
fn text_fields(path: &str) -> Result<Vec<String>> {
    let rows = tasks::read_rows(path)?;
    Ok(rows.into_iter().flat_map(|(_, o)| o.into_iter().filter_map(|(_, v)| v.as_str().map(String::from))).collect())
}

fn tokenizer(a: &ArgMatches) -> Result<()> {
    use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
    use tokenizers::models::TrainerWrapper;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, Tokenizer};

    let vocab = *a.get_one::<usize>("vocab-size").expect("required");
    if vocab < 257 {
        return Err(Error::config(format!(
            "--vocab-size {vocab}: a byte-level BPE needs at least 257 (256 bytes + <|endoftext|>)"
        )));
    }
    let mut texts = Vec::new();
    for f in a.get_many::<String>("data").expect("required") {
        texts.extend(text_fields(f)?);
    }
    if texts.is_empty() {
        return Err(Error::config("--data: no text fields found"));
    }
    let bpe = BpeTrainerBuilder::new()
        .vocab_size(vocab)
        .min_frequency(*a.get_one::<u64>("min-frequency").expect("default"))
        .show_progress(false)
        .special_tokens(vec![AddedToken::from("<|endoftext|>", true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut trainer: TrainerWrapper = bpe.into();
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.with_post_processor(Some(ByteLevel::new(false, true, true)));
    tok.train(&mut trainer, texts.iter()).map_err(|e| Error::config(format!("tokenizer training failed: {e}")))?;
    let json = tok.to_string(true).map_err(|e| Error::config(format!("tokenizer does not serialize: {e}")))?;
    let dir = PathBuf::from(a.get_one::<String>("output-dir").expect("required"));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    write_atomic(&dir.join("tokenizer.json"), json.as_bytes())?;
    eprintln!(
        "tokenizer: {} tokens from {} text fields -> {}",
        tok.get_vocab_size(true),
        texts.len(),
        dir.join("tokenizer.json").display()
    );
    Ok(())
}

// ---- sft, reward, dpo, ppo ----------------------------------------------------------------------------------------

/// The preference loss named by `loss_type` (TRL's names and dpo3d's) with its parameters from the config.
fn preference_loss(cfg: &Config) -> Result<PreferenceLoss> {
    let beta = cfg.beta;
    let ls = cfg.label_smoothing;
    let loss = match cfg.loss_type.replace('_', "-").as_str() {
        "sigmoid" | "dpo" if ls > 0.0 => PreferenceLoss::Cdpo { beta, label_smoothing: ls },
        "sigmoid" | "dpo" => PreferenceLoss::Dpo { beta },
        "hinge" => PreferenceLoss::Hinge { beta },
        "ipo" => PreferenceLoss::Ipo { eta: beta },
        "robust" => PreferenceLoss::Robust { beta, label_smoothing: ls },
        "cdpo" => PreferenceLoss::Cdpo { beta, label_smoothing: ls },
        "flex-dpo" => PreferenceLoss::FlexDpo {
            beta_pos: beta,
            beta_neg: cfg.beta_neg.ok_or_else(|| Error::config("loss_type flex-dpo needs beta_neg"))?,
        },
        "sft-dpo" => PreferenceLoss::SftDpo { beta, gamma: cfg.gamma_sft },
        "slic" => PreferenceLoss::Slic { delta: cfg.slic_delta, eta: cfg.slic_eta },
        "dpop" => PreferenceLoss::Dpop { beta, lambda: cfg.dpop_lambda },
        "simpo" => PreferenceLoss::Simpo { beta, margin: cfg.simpo_gamma },
        other => {
            return Err(Error::config(format!(
                "config key `loss_type`: `{other}` is not one of sigmoid (dpo), hinge, ipo, robust, cdpo, flex-dpo, \
                 sft-dpo, slic, dpop, simpo"
            )))
        }
    };
    loss.validate()?;
    Ok(loss)
}

fn check_positive(cfg: &Config) -> Result<()> {
    for (k, v) in [
        ("per_device_train_batch_size", cfg.per_device_train_batch_size),
        ("gradient_accumulation_steps", cfg.gradient_accumulation_steps),
        ("logging_steps", cfg.logging_steps),
        ("max_length", cfg.max_length),
    ] {
        if v == 0 {
            return Err(Error::config(format!("config key `{k}` must be positive")));
        }
    }
    if !(cfg.learning_rate >= 0.0 && cfg.learning_rate.is_finite()) {
        return Err(Error::config(format!("config key `learning_rate` must be >= 0, got {}", cfg.learning_rate)));
    }
    cfg.lr_scheduler_type.parse::<LrSchedulerType>()?;
    Ok(())
}

fn train_cmd(task: Task, a: &ArgMatches) -> Result<()> {
    let cfg = config::resolve(task, a)?;
    let resolved = config::applicable(task, &cfg);
    let yaml = config::to_yaml(&resolved);
    if a.get_flag("print-config") {
        print!("{yaml}");
        return Ok(());
    }
    check_positive(&cfg)?;
    let resume = a.get_flag("resume");
    let data = cfg
        .dataset_name
        .clone()
        .ok_or_else(|| Error::config(format!("dpo3d {}: no training data: pass --data FILE.jsonl", task.name())))?;
    let model_dir = cfg.model_name_or_path.as_ref().map(PathBuf::from);
    let tok = load_tokenizer(cfg.tokenizer.as_deref(), model_dir.as_deref())?;
    let (mut mcfg, mut params) = setup::starting_model(&cfg, &tok)?;
    let max_len = cfg.max_length.min(mcfg.context);
    let out = PathBuf::from(&cfg.output_dir);
    let spec = |n_train: usize| -> Result<train::RunSpec> {
        Ok(train::RunSpec {
            task,
            cfg: &cfg,
            out: &out,
            n_train,
            tokenizer_json: tok.json()?,
            config_yaml: yaml.clone(),
            resume,
        })
    };
    let pad = tok.eos_id();
    let opt = train::optim_config(&cfg)?;
    match task {
        Task::Sft => {
            if mcfg.scalar_head {
                return Err(Error::config("sft needs a language model; the model given has a scalar (reward) head"));
            }
            let rows = setup::load_examples(&data, &tok, mcfg.vocab_size)?;
            let (mut tr_rows, mut ev_rows) = eval_set(&cfg, rows, |p, v| setup::load_examples(p, &tok, v), &mcfg)?;
            let cut = setup::truncate_examples(&mut tr_rows, max_len, cfg.max_prompt_length)
                + setup::truncate_examples(&mut ev_rows, max_len, cfg.max_prompt_length);
            let t = tr_rows.iter().chain(&ev_rows).map(|e| e.len()).max().unwrap_or(1).max(2);
            report_rows(task, tr_rows.len(), ev_rows.len(), cut, max_len, t);
            output::prepare_output_dir(&out, resume, cfg.overwrite_output_dir)?;
            let gpu = run_gpu(&out, resume)?;
            let b = cfg.per_device_train_batch_size;
            let n = tr_rows.len();
            let tr = SftTrainer::new(&gpu, &mcfg, &params, b, t, &opt)?;
            let mut job = train::SftJob { tr, train: tr_rows, eval: ev_rows, pad };
            train::run(&gpu, &mut job, &spec(n)?)
        }
        Task::Reward | Task::Dpo => {
            let rows = setup::load_pairs(&data, &tok, mcfg.vocab_size)?;
            let (mut tr_rows, mut ev_rows) = eval_set(&cfg, rows, |p, v| setup::load_pairs(p, &tok, v), &mcfg)?;
            let cut = setup::truncate_pairs(&mut tr_rows, max_len, cfg.max_prompt_length)
                + setup::truncate_pairs(&mut ev_rows, max_len, cfg.max_prompt_length);
            let t = tr_rows.iter().chain(&ev_rows).map(PreferencePair::max_len).max().unwrap_or(1);
            report_rows(task, tr_rows.len(), ev_rows.len(), cut, max_len, t);
            let b = cfg.per_device_train_batch_size;
            let n = tr_rows.len();
            if task == Task::Reward {
                if !mcfg.scalar_head {
                    params = gpt_value_init(&mcfg, &params);
                    mcfg.scalar_head = true;
                }
                output::prepare_output_dir(&out, resume, cfg.overwrite_output_dir)?;
                let gpu = run_gpu(&out, resume)?;
                let mut job = train::PrefJob::new_reward(&gpu, &mcfg, &params, &opt, (tr_rows, ev_rows), b, t, pad)?;
                train::run(&gpu, &mut job, &spec(n)?)
            } else {
                if mcfg.scalar_head {
                    return Err(Error::config(
                        "dpo needs a language model; the model given has a scalar (reward) head",
                    ));
                }
                let loss = preference_loss(&cfg)?;
                let ref_params = match &cfg.ref_model {
                    Some(dir) => {
                        let (rcfg, rp) = load_gpt(Path::new(dir))?;
                        if rcfg != mcfg {
                            return Err(Error::config(format!(
                                "ref_model {dir} has a different architecture from the policy ({rcfg:?} vs {mcfg:?})"
                            )));
                        }
                        rp
                    }
                    None => params.clone(),
                };
                if cfg.precompute_ref_log_probs {
                    eprintln!("precompute_ref_log_probs: the reference runs every step (the same numbers)");
                }
                output::prepare_output_dir(&out, resume, cfg.overwrite_output_dir)?;
                let gpu = run_gpu(&out, resume)?;
                eprintln!("loss: {}", serde_json::to_string(&loss).expect("loss serializes"));
                let mut job = train::PrefJob::new_dpo(
                    &gpu,
                    &mcfg,
                    &params,
                    &ref_params,
                    &loss,
                    &opt,
                    (tr_rows, ev_rows),
                    b,
                    t,
                    pad,
                )?;
                train::run(&gpu, &mut job, &spec(n)?)
            }
        }
        Task::Ppo => ppo(&cfg, &tok, &mcfg, &params, &data, &out, &yaml, resume),
    }
}

fn report_rows(task: Task, n_train: usize, n_eval: usize, cut: usize, max_len: usize, t: usize) {
    eprintln!(
        "{}: {n_train} training rows, {n_eval} eval rows, {cut} truncated to max_length {max_len}; T = {t}",
        task.name()
    );
}

/// The eval rows: `eval_data`, else `eval_split` of the training rows, else none.
fn eval_set<T: Clone>(
    cfg: &Config,
    rows: Vec<T>,
    load: impl Fn(&str, usize) -> Result<Vec<T>>,
    mcfg: &GptConfig,
) -> Result<(Vec<T>, Vec<T>)> {
    match &cfg.eval_data {
        Some(p) => Ok((rows, load(p, mcfg.vocab_size)?)),
        None => setup::split(rows, cfg.eval_split, cfg.seed),
    }
}

/// Prompts of a JSONL file of `{"prompt"}` rows (each cut to its last `max_prompt` tokens when given, as TRL does) and
/// the longest one's length Lp. The GPU rollout generates after each row's own prompt.
fn load_prompts(path: &str, tok: &Tok, vocab: usize, max_prompt: Option<usize>) -> Result<(Vec<Vec<u32>>, usize)> {
    let mut rows = Vec::new();
    for (line, v) in tasks::read_rows(path)? {
        let err = |msg: String| Error::Data { path: path.to_string(), line, msg };
        let p = v.get("prompt").ok_or_else(|| err("missing field `prompt`".into()))?;
        let ids = match p {
            Value::String(s) => tok.encoder().encode(s)?,
            Value::Array(a) if a.iter().all(Value::is_u64) => {
                a.iter().map(|x| x.as_u64().unwrap_or(0) as u32).collect()
            }
            _ => {
                return Err(err(
                    "field `prompt` must be text or an array of token ids (apply a chat template first)".into()
                ))
            }
        };
        if ids.is_empty() {
            return Err(err("field `prompt` is empty".into()));
        }
        if let Some(&bad) = ids.iter().find(|&&x| x as usize >= vocab) {
            return Err(err(format!("token id {bad} is out of range for vocab_size {vocab}")));
        }
        rows.push(ids);
    }
    let keep = max_prompt.unwrap_or(usize::MAX).max(1);
    let cut: Vec<Vec<u32>> = rows.iter().map(|r| r[r.len().saturating_sub(keep)..].to_vec()).collect();
    let lp = cut.iter().map(Vec::len).max().ok_or_else(|| Error::config(format!("{path}: no rows")))?;
    Ok((cut, lp))
}

/// PPO's checkpoint: the policy (top level), the value model (`value/`), both optimizers' moments and steps, the
/// step (the GPU sampler and minibatch order derive from seed and step) and the prompt order.
fn save_ppo(gpu: &Gpu, tr: &PpoGptTrainer, batcher: &Batcher, dir: &Path, tok: Option<&str>, yaml: &str) -> Result<()> {
    let p = pollster::block_on(tr.policy.download_params(gpu))?;
    output::save_model(dir, &tr.policy.cfg, &p, tok, yaml)?;
    let mut moments = moment_names("policy.", &tr.core.opt_policy);
    if let (Some(v), Some(o)) = (&tr.value, &tr.core.opt_value) {
        let vp = pollster::block_on(v.download_params(gpu))?;
        dpo3d::checkpoint::save_gpt(&dir.join("value"), &v.cfg, &vp)?;
        moments.extend(moment_names("value.", o));
    }
    let state = TrainerState {
        global_step: tr.core.step as usize,
        epoch: batcher.epoch_progress(),
        batcher: batcher.state(),
        rng: None,
        optimizer_step: tr.core.opt_policy.step,
        gradient_accumulation_steps: 1,
        seed: tr.cfg.seed,
        value_optimizer_step: tr.core.opt_value.as_ref().map(|o| o.step),
    };
    // Before the trainer state, whose presence marks a complete checkpoint (`output::checkpoints`).
    output::save_kernels(gpu, dir)?;
    pollster::block_on(state.save_moments(gpu, &moments, dir))
}

/// Continues a PPO run from `dir`: the policy and value weights, optimizer moments and steps, the step counter.
fn restore_ppo(gpu: &Gpu, tr: &mut PpoGptTrainer, batcher: &mut Batcher, dir: &Path) -> Result<usize> {
    let state = TrainerState::load(dir)?;
    if state.seed != tr.cfg.seed {
        return Err(Error::config(format!("--resume: {} was trained with seed {}", dir.display(), state.seed)));
    }
    let (pcfg, p) = load_gpt(dir)?;
    if pcfg != tr.policy.cfg {
        return Err(Error::config(format!("--resume: {} holds a different model", dir.display())));
    }
    tr.policy.upload_params(gpu, &p)?;
    let mut moments = moment_names("policy.", &tr.core.opt_policy);
    if let (Some(v), Some(o)) = (&tr.value, &tr.core.opt_value) {
        let (_, vp) = load_gpt(&dir.join("value"))?;
        if vp.len() != v.cfg.num_params() {
            return Err(Error::config(format!("--resume: {}/value holds a different model", dir.display())));
        }
        v.upload_params(gpu, &vp)?;
        moments.extend(moment_names("value.", o));
    }
    restore_moments(gpu, &moments, dir)?;
    tr.core.opt_policy.step = state.optimizer_step;
    if let (Some(o), Some(s)) = (&mut tr.core.opt_value, state.value_optimizer_step) {
        o.step = s;
    }
    tr.core.step = state.global_step as u32;
    batcher.set_state(state.batcher);
    Ok(state.global_step)
}

#[allow(clippy::too_many_arguments)]
fn ppo(
    cfg: &Config,
    tok: &Tok,
    mcfg: &GptConfig,
    params: &[f32],
    data: &str,
    out: &Path,
    yaml: &str,
    resume: bool,
) -> Result<()> {
    if mcfg.scalar_head {
        return Err(Error::config("ppo needs a language model as the policy; the model given has a scalar head"));
    }
    let (prompts, lp) = load_prompts(data, tok, mcfg.vocab_size, cfg.max_prompt_length)?;
    let rule = match cfg.reward_rule.as_deref() {
        None => None,
        Some(t @ ("math" | "poem")) => Some(t.to_string()),
        Some(other) => return Err(Error::config(format!("config key `reward_rule`: `{other}` is not math or poem"))),
    };
    let reward = match (&cfg.reward_model_path, cfg.reward_token_id) {
        _ if rule.is_some() => {
            if cfg.reward_model_path.is_some() || cfg.reward_token_id.is_some() {
                return Err(Error::config("ppo: give one reward: reward_rule, reward_model_path or reward_token_id"));
            }
            GptRewardSource::External
        }
        (Some(dir), _) => {
            let (rcfg, rp) = load_gpt(Path::new(dir))?;
            if !rcfg.scalar_head || rcfg.vocab_size != mcfg.vocab_size {
                return Err(Error::config(format!(
                    "reward_model_path {dir}: needs a reward model (scalar head) over the policy's vocabulary ({})",
                    mcfg.vocab_size
                )));
            }
            GptRewardSource::Model { cfg: rcfg, params: rp }
        }
        (None, Some(token)) => GptRewardSource::CountToken { token, scale: cfg.reward_scale },
        (None, None) => return Err(Error::config(
            "ppo needs a reward: reward_model_path (--reward-model DIR), reward_rule (math, poem) or reward_token_id",
        )),
    };
    let stop_token_id = match (cfg.stop_token.as_deref(), cfg.stop_token_id) {
        (None, id) => id,
        (Some(_), Some(_)) => return Err(Error::config("ppo: give stop_token or stop_token_id, not both")),
        (Some("eos"), None) => match tok {
            Tok::Hf { .. } if tok.encoder().encode(tasks::EOS_TEXT).is_ok_and(|v| v.len() == 1) => Some(tok.eos_id()),
            _ => {
                return Err(Error::config(format!(
                    "stop_token eos: the tokenizer ({}) has no <|endoftext|> token; give stop_token_id",
                    tok.describe()
                )))
            }
        },
        (Some(other), None) => return Err(Error::config(format!("config key `stop_token`: `{other}` is not eos"))),
    };
    let b = cfg.per_device_train_batch_size;
    let pcfg = PpoConfig {
        cliprange: cfg.cliprange,
        cliprange_value: cfg.cliprange_value,
        vf_coef: cfg.vf_coef,
        kl_coef: cfg.kl_coef,
        gamma: cfg.gamma,
        lam: cfg.lam,
        num_ppo_epochs: cfg.num_ppo_epochs,
        num_mini_batches: cfg.num_mini_batches,
        whiten_rewards: cfg.whiten_rewards,
        temperature: cfg.temperature,
        response_length: cfg.response_length,
        stop_token_id,
        seed: cfg.seed,
        ..Default::default()
    };
    pcfg.validate(b)?;
    let mut batcher = Batcher::new(prompts.len(), b, cfg.seed, true, LastBatch::TopUp)?;
    let total = if cfg.max_steps > 0 { cfg.max_steps as usize } else { batcher.batches_per_epoch() };
    let sched = LrSchedule {
        kind: cfg.lr_scheduler_type.parse()?,
        base_lr: cfg.learning_rate,
        warmup_steps: LrSchedule::warmup_from(cfg.warmup_steps, cfg.warmup_ratio, total),
        total_steps: total,
    };
    eprintln!(
        "ppo: {} prompts (up to {lp} tokens), response_length {}, {total} steps",
        prompts.len(),
        cfg.response_length
    );
    output::prepare_output_dir(out, resume, cfg.overwrite_output_dir)?;
    let gpu = run_gpu(out, resume)?;
    let opt = OptimConfig {
        lr: cfg.learning_rate,
        beta1: cfg.adam_beta1,
        beta2: cfg.adam_beta2,
        eps: cfg.adam_epsilon,
        weight_decay: cfg.weight_decay,
        grad_clip: cfg.max_grad_norm,
        ..Default::default()
    };
    let value = gpt_value_init(mcfg, params);
    let mut tr = PpoGptTrainer::new(&gpu, &pcfg, &opt, mcfg, params, &value, reward, b, lp)?;
    let mut start = 0;
    if resume {
        let (_, dir) = output::checkpoints(out).pop().expect("prepare_output_dir checked");
        start = restore_ppo(&gpu, &mut tr, &mut batcher, &dir)?;
        eprintln!("resuming from {} (step {start} of {total})", dir.display());
    }
    let mut metrics = output::Metrics::open(out, resume.then_some(start))?;
    let tokenizer_json = tok.json()?;
    let pb = indicatif::ProgressBar::new(total as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template("ppo [{bar:30}] step {pos}/{len} {msg} ETA {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    pb.set_position(start as u64);
    let started = std::time::Instant::now();
    for step in start + 1..=total {
        let lr = sched.lr(step - 1);
        tr.core.opt_policy.cfg.lr = lr;
        if let Some(o) = &mut tr.core.opt_value {
            o.cfg.lr = lr;
        }
        let rows: Vec<Vec<u32>> = batcher.next_indices().into_iter().map(|i| prompts[i].clone()).collect();
        let m = match &rule {
            None => tr.step_blocking(&gpu, &rows)?,
            Some(task) => {
                let mut score = |responses: &[Vec<u32>]| -> Result<Vec<f32>> {
                    rows.iter().zip(responses).map(|(p, r)| tasks::rule_reward(task, tok, p, r)).collect()
                };
                tr.step_scored_blocking(&gpu, &rows, &mut score)?
            }
        };
        let tok_s = ((step - start) * b * tr.seq_len()) as f64 / started.elapsed().as_secs_f64().max(1e-9);
        pb.set_message(format!("reward {:.3} {tok_s:.0} tok/s", m.get("objective/scores")));
        pb.set_position(step as u64);
        if step.is_multiple_of(cfg.logging_steps.max(1)) || step == 1 || step == total {
            let mut row = Map::new();
            row.insert("step".into(), Value::from(step));
            row.insert("epoch".into(), Value::from(batcher.epoch_progress()));
            row.insert("learning_rate".into(), Value::from(lr));
            for (k, v) in &m.values {
                row.insert(k.clone(), Value::from(*v));
            }
            metrics.log(row)?;
        }
        if cfg.save_steps > 0 && step.is_multiple_of(cfg.save_steps) && step < total {
            let dir = out.join(format!("checkpoint-{step}"));
            save_ppo(&gpu, &tr, &batcher, &dir, tokenizer_json.as_deref(), yaml)?;
        }
    }
    pb.finish_and_clear();
    let p = pollster::block_on(tr.policy.download_params(&gpu))?;
    output::save_model(out, mcfg, &p, tokenizer_json.as_deref(), yaml)?;
    if total > start {
        save_ppo(&gpu, &tr, &batcher, &out.join(format!("checkpoint-{total}")), tokenizer_json.as_deref(), yaml)?;
    }
    metrics.plot(out)?;
    eprintln!(
        "ppo: {} steps in {:.1} s; policy, metrics.jsonl and plots in {}",
        total - start,
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

// ---- eval, generate -----------------------------------------------------------------------------------------------

fn eval(a: &ArgMatches) -> Result<()> {
    let dir = PathBuf::from(a.get_one::<String>("model").expect("required"));
    let (mcfg, params) = load_gpt(&dir)?;
    let tok = load_tokenizer(a.get_one::<String>("tokenizer").map(String::as_str), Some(&dir))?;
    setup::check_vocab(&tok, &mcfg, &dir.display().to_string())?;
    let data = a.get_one::<String>("data").expect("required");
    let mut pairs = setup::load_pairs(data, &tok, mcfg.vocab_size)?;
    let max_len = a.get_one::<usize>("max-length").copied().unwrap_or(mcfg.context).min(mcfg.context);
    let cut = setup::truncate_pairs(&mut pairs, max_len, None);
    let t = pairs.iter().map(PreferencePair::max_len).max().unwrap_or(1);
    let b = (*a.get_one::<usize>("batch-size").expect("default")).max(1);
    let gpu = gpu()?;
    let opt = OptimConfig::default();
    let n = pairs.len();
    let mut job = if mcfg.scalar_head {
        train::PrefJob::new_reward(&gpu, &mcfg, &params, &opt, (Vec::new(), Vec::new()), b, t, tok.eos_id())?
    } else {
        let ref_params = match a.get_one::<String>("ref-model") {
            Some(r) => {
                let (rcfg, rp) = load_gpt(Path::new(r))?;
                if rcfg != mcfg {
                    return Err(Error::config(format!("--ref-model {r} has a different architecture from --model")));
                }
                rp
            }
            None => params.clone(),
        };
        let loss = PreferenceLoss::Dpo { beta: *a.get_one::<f32>("beta").expect("default") };
        loss.validate()?;
        let data = (Vec::new(), Vec::new());
        train::PrefJob::new_dpo(&gpu, &mcfg, &params, &ref_params, &loss, &opt, data, b, t, tok.eos_id())?
    };
    let m = job.evaluate_pairs(&gpu, &pairs)?;
    if let Some(path) = a.get_one::<String>("token-logps") {
        let rows: String = job
            .token_logps(&gpu, &pairs)?
            .iter()
            .map(|r| format!("{}\n", serde_json::to_string(r).expect("serializes")))
            .collect();
        write_atomic(Path::new(path), rows.as_bytes())?;
    }
    let mut row = Map::new();
    for (k, v) in m {
        row.insert(format!("eval_{k}"), Value::from(v));
    }
    row.insert("eval_samples".into(), Value::from(n));
    row.insert("eval_truncated".into(), Value::from(cut));
    println!("{}", Value::Object(row));
    Ok(())
}

fn generate(a: &ArgMatches) -> Result<()> {
    let dir = PathBuf::from(a.get_one::<String>("model").expect("required"));
    let (mcfg, params) = load_gpt(&dir)?;
    if mcfg.scalar_head {
        return Err(Error::config(format!("{}: a reward model cannot generate", dir.display())));
    }
    let tok = load_tokenizer(a.get_one::<String>("tokenizer").map(String::as_str), Some(&dir))?;
    setup::check_vocab(&tok, &mcfg, &dir.display().to_string())?;
    let prompt_text = a.get_one::<String>("prompt").expect("required");
    let prompt = tok.encoder().encode(prompt_text)?;
    if prompt.is_empty() {
        return Err(Error::config("--prompt is empty"));
    }
    let n = (*a.get_one::<usize>("num-samples").expect("default")).max(1);
    let max_new = *a.get_one::<usize>("max-new-tokens").expect("default");
    if prompt.len() + max_new > mcfg.context {
        return Err(Error::config(format!(
            "the prompt ({} tokens) + --max-new-tokens {max_new} exceed the model's context ({})",
            prompt.len(),
            mcfg.context
        )));
    }
    let g = tasks::generation_config(a, &tok);
    let gpu = gpu()?;
    let mut gen = dpo3d::model::Generator::new(&gpu, &mcfg, &params, n, prompt.len(), &g)?;
    for c in gen.generate_blocking(&gpu, &vec![prompt.clone(); n])? {
        let body = if c.stopped { &c.tokens[..c.tokens.len() - 1] } else { &c.tokens[..] };
        let completion = tok.decode(body)?;
        println!("{}", serde_json::json!({"prompt": prompt_text, "completion": completion}));
    }
    Ok(())
}
