//! The training configuration of every `dpo3d` subcommand: one table of keys (TRL's argument names where TRL has
//! one, dpo3d's own otherwise), read from a YAML, TOML or JSON file and overridden by command-line flags of the same
//! names (`--learning-rate` or TRL's own `--learning_rate`). Unknown keys, keys that do not apply to the
//! subcommand and values of the wrong type are errors naming the key (and the file).

use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Command};
use dpo3d::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The training subcommands that read a config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    Sft,
    Reward,
    Dpo,
    Ppo,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Sft => "sft",
            Task::Reward => "reward",
            Task::Dpo => "dpo",
            Task::Ppo => "ppo",
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Float,
    Int,
    Bool,
    Str,
}

use Kind::*;
const ALL: &[Task] = &[Task::Sft, Task::Reward, Task::Dpo, Task::Ppo];
const SRD: &[Task] = &[Task::Sft, Task::Reward, Task::Dpo];
const DPO: &[Task] = &[Task::Dpo];
const PPO: &[Task] = &[Task::Ppo];

/// (key, type, subcommands, help). TRL's names first; dpo3d's own after.
const KEYS: &[(&str, Kind, &[Task], &str)] = &[
    ("output_dir", Str, ALL, "Where checkpoints, metrics.jsonl, plots and the final model go"),
    ("overwrite_output_dir", Bool, ALL, "Start over in an output_dir that already holds a run (else an error)"),
    ("model_name_or_path", Str, ALL, "Starting model: a dpo3d or Hugging Face GPT-2 checkpoint directory"),
    ("ref_model", Str, DPO, "Frozen reference model directory (default: a frozen copy of the starting model)"),
    (
        "init_config",
        Str,
        ALL,
        "A model from scratch: a JSON/YAML/TOML file of vocab_size, context, layers, heads, width (or a GPT2Config)",
    ),
    ("dataset_name", Str, ALL, "Training data: a JSONL file"),
    ("eval_data", Str, SRD, "Held-out data: a JSONL file"),
    ("eval_split", Float, SRD, "Fraction of the training rows held out for evaluation when eval_data is not given"),
    ("tokenizer", Str, ALL, "tokenizer.json (default: the model's own, else UTF-8 bytes)"),
    ("learning_rate", Float, ALL, "Peak learning rate of AdamW"),
    ("per_device_train_batch_size", Int, ALL, "Rows (pairs for reward/dpo, prompts for ppo) per micro-batch"),
    (
        "per_device_eval_batch_size",
        Int,
        SRD,
        "Rows per evaluation batch; must equal per_device_train_batch_size (evaluation reuses the model's batch shape)",
    ),
    ("gradient_accumulation_steps", Int, SRD, "Micro-batches per optimizer step"),
    ("num_train_epochs", Float, SRD, "Epochs over the training data (when max_steps is not positive)"),
    ("max_steps", Int, ALL, "Optimizer steps in total (overrides num_train_epochs when positive)"),
    ("max_length", Int, ALL, "Longest prompt + response in tokens; longer rows are truncated as TRL does"),
    ("max_prompt_length", Int, ALL, "Longest prompt in tokens (kept from the end)"),
    ("warmup_ratio", Float, ALL, "Fraction of max_steps of linear warmup"),
    ("warmup_steps", Int, ALL, "Steps of linear warmup (wins over warmup_ratio when positive)"),
    ("lr_scheduler_type", Str, ALL, "constant, constant_with_warmup, linear or cosine"),
    ("weight_decay", Float, ALL, "Decoupled (AdamW) weight decay"),
    ("adam_beta1", Float, ALL, "AdamW beta1"),
    ("adam_beta2", Float, ALL, "AdamW beta2"),
    ("adam_epsilon", Float, ALL, "AdamW epsilon"),
    ("max_grad_norm", Float, ALL, "Global gradient-norm clipping threshold (0: none)"),
    ("logging_steps", Int, ALL, "Log training metrics every this many steps"),
    ("eval_steps", Int, SRD, "Evaluate every this many steps (0: only at the end)"),
    ("save_steps", Int, ALL, "Save a checkpoint-N every this many steps (0: only the final model)"),
    ("seed", Int, ALL, "Seed of the weight initialisation, the data order and the sampler"),
    ("dataloader_drop_last", Bool, SRD, "Drop the short last batch of each epoch (else topped up from its start)"),
    ("beta", Float, DPO, "beta of the DPO family (TRL's beta; IPO's tau)"),
    ("loss_type", Str, DPO, "sigmoid (dpo), hinge, ipo, robust, cdpo, flex-dpo, sft-dpo, slic, dpop, simpo"),
    ("label_smoothing", Float, DPO, "Label noise epsilon (sigmoid -> cDPO, robust)"),
    (
        "precompute_ref_log_probs",
        Bool,
        DPO,
        "Accepted for TRL compatibility: the reference runs every step, same numbers",
    ),
    ("simpo_gamma", Float, DPO, "SimPO's target reward margin (TRL's CPOConfig name)"),
    ("beta_neg", Float, DPO, "Flex-DPO: beta on the rejected log-ratio (beta is the chosen one's)"),
    ("gamma_sft", Float, DPO, "SFT-DPO: weight of the chosen response's NLL"),
    ("slic_delta", Float, DPO, "SLiC: margin delta"),
    ("slic_eta", Float, DPO, "SLiC: weight of the chosen NLL"),
    ("dpop_lambda", Float, DPO, "DPO-Positive: lambda"),
    ("reward_model_path", Str, PPO, "Reward model checkpoint (a dpo3d reward directory); else reward_token_id"),
    ("reward_token_id", Int, PPO, "Rule-based reward: reward_scale per generated token equal to this id"),
    ("reward_scale", Float, PPO, "Rule-based reward: reward per matching token"),
    (
        "reward_rule",
        Str,
        PPO,
        "Rule-based reward from a task-data judge on the decoded response: math ((score - 1) / 4) or poem (rules / 4)",
    ),
    ("kl_coef", Float, PPO, "Weight of the per-token KL penalty"),
    ("cliprange", Float, PPO, "Policy ratio clip"),
    ("cliprange_value", Float, PPO, "Value clip"),
    ("vf_coef", Float, PPO, "Value loss weight"),
    ("gamma", Float, PPO, "GAE discount"),
    ("lam", Float, PPO, "GAE lambda"),
    ("num_ppo_epochs", Int, PPO, "Passes over each rollout batch"),
    ("num_mini_batches", Int, PPO, "Minibatches per PPO epoch"),
    ("response_length", Int, PPO, "Tokens generated per response"),
    ("temperature", Float, PPO, "Sampling temperature of the rollouts (PPO)"),
    (
        "stop_token",
        Str,
        PPO,
        "`eos`: the tokenizer's <|endoftext|> ends a response (TRL's stop_token; or stop_token_id)",
    ),
    ("stop_token_id", Int, PPO, "Token that ends a response"),
    ("whiten_rewards", Bool, PPO, "Whiten the rewards before GAE"),
    ("layers", Int, ALL, "From scratch without init_config: transformer blocks"),
    ("width", Int, ALL, "From scratch without init_config: channels"),
    ("heads", Int, ALL, "From scratch without init_config: attention heads"),
];

/// Flag spellings that differ from the key (`--model` for `model_name_or_path`, `--data` for `dataset_name`).
fn flag_names(key: &str) -> (&str, Vec<&'static str>) {
    match key {
        "model_name_or_path" => ("model", vec!["model_name_or_path", "model-name-or-path"]),
        "dataset_name" => ("data", vec!["dataset_name", "dataset-name"]),
        "reward_model_path" => ("reward-model", vec!["reward_model_path", "reward-model-path"]),
        _ => ("", vec![]),
    }
}

/// The resolved configuration (every key with its default, TRL's where TRL has one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub output_dir: String,
    pub overwrite_output_dir: bool,
    pub model_name_or_path: Option<String>,
    pub ref_model: Option<String>,
    pub init_config: Option<String>,
    pub dataset_name: Option<String>,
    pub eval_data: Option<String>,
    pub eval_split: f64,
    pub tokenizer: Option<String>,
    pub learning_rate: f32,
    pub per_device_train_batch_size: usize,
    pub per_device_eval_batch_size: Option<usize>,
    pub gradient_accumulation_steps: usize,
    pub num_train_epochs: f64,
    pub max_steps: i64,
    pub max_length: usize,
    pub max_prompt_length: Option<usize>,
    pub warmup_ratio: f64,
    pub warmup_steps: usize,
    pub lr_scheduler_type: String,
    pub weight_decay: f32,
    pub adam_beta1: f32,
    pub adam_beta2: f32,
    pub adam_epsilon: f32,
    pub max_grad_norm: f32,
    pub logging_steps: usize,
    pub eval_steps: usize,
    pub save_steps: usize,
    pub seed: u64,
    pub dataloader_drop_last: bool,
    pub beta: f32,
    pub loss_type: String,
    pub label_smoothing: f32,
    pub precompute_ref_log_probs: bool,
    pub simpo_gamma: f32,
    pub beta_neg: Option<f32>,
    pub gamma_sft: f32,
    pub slic_delta: f32,
    pub slic_eta: f32,
    pub dpop_lambda: f32,
    pub reward_model_path: Option<String>,
    pub reward_token_id: Option<u32>,
    pub reward_scale: f32,
    pub reward_rule: Option<String>,
    pub kl_coef: f32,
    pub cliprange: f32,
    pub cliprange_value: f32,
    pub vf_coef: f32,
    pub gamma: f32,
    pub lam: f32,
    pub num_ppo_epochs: usize,
    pub num_mini_batches: usize,
    pub response_length: usize,
    pub temperature: f32,
    pub stop_token: Option<String>,
    pub stop_token_id: Option<u32>,
    pub whiten_rewards: bool,
    pub layers: usize,
    pub width: usize,
    pub heads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            output_dir: "trainer_output".into(),
            overwrite_output_dir: false,
            model_name_or_path: None,
            ref_model: None,
            init_config: None,
            dataset_name: None,
            eval_data: None,
            eval_split: 0.0,
            tokenizer: None,
            learning_rate: 5e-5,
            per_device_train_batch_size: 8,
            per_device_eval_batch_size: None,
            gradient_accumulation_steps: 1,
            num_train_epochs: 3.0,
            max_steps: -1,
            max_length: 1024,
            max_prompt_length: None,
            warmup_ratio: 0.0,
            warmup_steps: 0,
            lr_scheduler_type: "linear".into(),
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            max_grad_norm: 1.0,
            logging_steps: 10,
            eval_steps: 0,
            save_steps: 500,
            seed: 42,
            dataloader_drop_last: false,
            beta: 0.1,
            loss_type: "sigmoid".into(),
            label_smoothing: 0.0,
            precompute_ref_log_probs: false,
            simpo_gamma: 0.5,
            beta_neg: None,
            gamma_sft: 1.0,
            slic_delta: 1.0,
            slic_eta: 0.0,
            dpop_lambda: 50.0,
            reward_model_path: None,
            reward_token_id: None,
            reward_scale: 1.0,
            reward_rule: None,
            kl_coef: 0.05,
            cliprange: 0.2,
            cliprange_value: 0.2,
            vf_coef: 0.1,
            gamma: 1.0,
            lam: 0.95,
            num_ppo_epochs: 4,
            num_mini_batches: 1,
            response_length: 16,
            temperature: 1.0,
            stop_token: None,
            stop_token_id: None,
            whiten_rewards: false,
            layers: 2,
            width: 64,
            heads: 4,
        }
    }
}

/// The flags of a training subcommand: `--config`, `--print-config`, `--resume`, and one per key that applies.
pub fn training_command(task: Task, about: &'static str) -> Command {
    let mut cmd = Command::new(task.name())
        .about(about)
        .arg(Arg::new("config").long("config").value_name("FILE").help("A YAML, TOML or JSON file of the keys below"))
        .arg(
            Arg::new("print-config")
                .long("print-config")
                .alias("print_config")
                .action(ArgAction::SetTrue)
                .help("Print the resolved config (file + flags + defaults) as YAML and exit"),
        )
        .arg(
            Arg::new("resume")
                .long("resume")
                .action(ArgAction::SetTrue)
                .help("Continue from the last checkpoint-N in output_dir (up to the max_steps now in force)"),
        );
    for &(key, kind, tasks, help) in KEYS {
        if !tasks.contains(&task) {
            continue;
        }
        let (long, extra) = flag_names(key);
        let kebab = key.replace('_', "-");
        let long: &'static str = if long.is_empty() { leak(kebab.clone()) } else { long };
        let mut arg = Arg::new(key).long(long).help(format!("{help} [config key: {key}]")).value_name(match kind {
            Float => "FLOAT",
            Int => "INT",
            Bool => "BOOL",
            Str => "STRING",
        });
        if long != key {
            arg = arg.alias(key);
        }
        if long != kebab {
            arg = arg.alias(leak(kebab));
        }
        for a in extra {
            if a != key {
                arg = arg.alias(a);
            }
        }
        if let Bool = kind {
            arg = arg.num_args(0..=1).default_missing_value("true");
        }
        cmd = cmd.arg(arg);
    }
    cmd
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Reads a YAML (.yaml/.yml), TOML (.toml) or JSON (anything else) file into a JSON value.
pub fn read_structured(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let bad = |e: String| Error::config(format!("{}: {e}", path.display()));
    match ext.as_str() {
        "yaml" | "yml" => serde_yaml::from_str::<Value>(&text).map_err(|e| bad(e.to_string())),
        "toml" => toml::from_str::<Value>(&text).map_err(|e| bad(e.to_string().replace('\n', " "))),
        _ => serde_json::from_str::<Value>(&text).map_err(|e| bad(e.to_string())),
    }
}

fn kind_of(key: &str) -> Option<(Kind, &'static [Task])> {
    KEYS.iter().find(|k| k.0 == key).map(|k| (k.1, k.2))
}

/// A flag's string as the JSON value its key's type wants; a bad number or boolean names the flag.
fn flag_value(key: &str, kind: Kind, s: &str) -> Result<Value> {
    let bad = |what: &str| Error::config(format!("--{} {s:?}: expected {what}", key.replace('_', "-")));
    Ok(match kind {
        Float => Value::from(s.parse::<f64>().map_err(|_| bad("a number"))?),
        Int => Value::from(s.parse::<i64>().map_err(|_| bad("an integer"))?),
        Bool => Value::from(match s {
            "true" | "True" | "1" | "yes" => true,
            "false" | "False" | "0" | "no" => false,
            _ => return Err(bad("true or false")),
        }),
        Str => Value::from(s),
    })
}

/// The resolved config of `task`: defaults, then the `--config` file, then the flags.
pub fn resolve(task: Task, m: &ArgMatches) -> Result<Config> {
    let mut merged = Map::new();
    let mut source = "the command line".to_string();
    if let Some(file) = m.get_one::<String>("config") {
        let path = PathBuf::from(file);
        source = path.display().to_string();
        let v = read_structured(&path)?;
        let Value::Object(obj) = v else {
            return Err(Error::config(format!("{source}: a config file is a mapping of keys to values")));
        };
        for (k, v) in obj {
            match kind_of(&k) {
                None => {
                    return Err(Error::config(format!(
                        "{source}: unknown config key `{k}` (`dpo3d {} --help` lists the keys)",
                        task.name()
                    )))
                }
                Some((_, tasks)) if !tasks.contains(&task) => {
                    return Err(Error::config(format!(
                        "{source}: config key `{k}` does not apply to `dpo3d {}`",
                        task.name()
                    )))
                }
                _ => {}
            }
            if !v.is_null() {
                merged.insert(k, v);
            }
        }
    }
    for &(key, kind, tasks, _) in KEYS {
        if !tasks.contains(&task) {
            continue;
        }
        if let Some(s) = m.get_one::<String>(key) {
            merged.insert(key.to_string(), flag_value(key, kind, s)?);
        }
    }
    let de = Value::Object(merged);
    let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner().to_string();
        Error::config(format!("{source}: config key `{key}`: {inner}"))
    })?;
    if let Some(e) = cfg.per_device_eval_batch_size.filter(|&e| e != cfg.per_device_train_batch_size) {
        return Err(Error::config(format!(
            "{source}: config key `per_device_eval_batch_size`: {e} differs from per_device_train_batch_size {} \
             (dpo3d evaluates with the training model's batch shape)",
            cfg.per_device_train_batch_size
        )));
    }
    Ok(cfg)
}

/// The keys of `task` with their resolved values, in table order (what `--print-config` shows and the run saves).
pub fn applicable(task: Task, cfg: &Config) -> Map<String, Value> {
    let all = serde_json::to_value(cfg).expect("config serializes");
    let mut out = Map::new();
    for &(key, _, tasks, _) in KEYS {
        if tasks.contains(&task) {
            if let Some(v) = all.get(key) {
                out.insert(key.to_string(), v.clone());
            }
        }
    }
    out
}

pub fn to_yaml(map: &Map<String, Value>) -> String {
    serde_yaml::to_string(&Value::Object(map.clone())).expect("config serializes as YAML")
}
