//! The subcommands that turn a model and a task into preference data, as the paper's LLM experiments do:
//!
//!     dpo3d task-data --task math --output-dir data              # problems + reference solutions (sft/eval.jsonl)
//!     dpo3d generate --model sft --data data/sft.jsonl --num-samples 8 --output samples.jsonl
//!     dpo3d judge --task math --data samples.jsonl --output judged.jsonl   # scores each sample; summary on stdout
//!     dpo3d pairs --samples judged.jsonl --other weak_judged.jsonl --output-dir pairs
//!
//! `pairs` writes the paper's four scenarios from the same problems: on_on.jsonl (best vs worst of the model's own
//! samples), on_off.jsonl (best own sample vs the other model's answer), off_on.jsonl (the reference solution vs the
//! worst own sample) and off_off.jsonl (reference vs the other model's answer).

use std::path::PathBuf;

use clap::ArgMatches;
use dpo3d::checkpoint::{load_gpt, write_atomic};
use dpo3d::data::tasks::{judge_math, judge_poem, last_letter_use, MathProblem, PoemTask};
use dpo3d::model::{GenerationConfig, Generator};
use dpo3d::{Error, Result};
use serde_json::{json, Map, Value};

use crate::setup::{self, load_tokenizer, Tok};

/// The stop token's text: generations that produced it end with it, and reference completions of `task-data` too.
pub const EOS_TEXT: &str = "<|endoftext|>";

/// The JSON objects of a JSONL file, with their line numbers; a malformed line is an error naming file:line.
pub fn read_rows(path: &str) -> Result<Vec<(usize, Map<String, Value>)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |msg: String| Error::Data { path: path.to_string(), line: i + 1, msg };
        let v: Value = serde_json::from_str(line).map_err(|e| err(format!("invalid JSON at column {}", e.column())))?;
        let Value::Object(o) = v else { return Err(err("expected a JSON object per line".into())) };
        rows.push((i + 1, o));
    }
    if rows.is_empty() {
        return Err(Error::config(format!("{path}: no rows")));
    }
    Ok(rows)
}

fn data_err(path: &str, line: usize, msg: impl Into<String>) -> Error {
    Error::Data { path: path.to_string(), line, msg: msg.into() }
}

fn str_field<'a>(row: &'a Map<String, Value>, key: &str, path: &str, line: usize) -> Result<&'a str> {
    row.get(key).and_then(Value::as_str).ok_or_else(|| data_err(path, line, format!("missing text field `{key}`")))
}

/// Write rows as JSONL atomically, creating the file's directory when needed.
fn write_jsonl(path: &std::path::Path, rows: &[Value]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    write_atomic(path, text.as_bytes())
}

// ---- generate --data ----------------------------------------------------------------------------------------------

/// `generate --data FILE --output FILE`: `--num-samples` completions of every row's prompt. Each output row is the
/// input row plus `completions` (text; a completion that produced the stop token ends with it), `stopped`, `logps`
/// (each completion's log-probability under the model, a sum over its tokens) and `num_tokens`.
pub fn generate_file(a: &ArgMatches, data: &str) -> Result<()> {
    let dir = PathBuf::from(a.get_one::<String>("model").expect("required"));
    let out = a.get_one::<String>("output").ok_or_else(|| Error::config("generate --data needs --output FILE"))?;
    let (mcfg, params) = load_gpt(&dir)?;
    if mcfg.scalar_head {
        return Err(Error::config(format!("{}: a reward model cannot generate", dir.display())));
    }
    let tok = load_tokenizer(a.get_one::<String>("tokenizer").map(String::as_str), Some(&dir))?;
    setup::check_vocab(&tok, &mcfg, &dir.display().to_string())?;
    let rows = read_rows(data)?;
    let mut prompts = Vec::with_capacity(rows.len());
    for (line, row) in &rows {
        let ids = tok.encoder().encode(str_field(row, "prompt", data, *line)?)?;
        if ids.is_empty() {
            return Err(data_err(data, *line, "field `prompt` is empty"));
        }
        prompts.push(ids);
    }
    let g = generation_config(a, &tok);
    let longest = prompts.iter().map(Vec::len).max().expect("rows");
    if longest + g.max_new_tokens > mcfg.context {
        let line = rows[prompts.iter().position(|p| p.len() == longest).expect("max")].0;
        return Err(data_err(
            data,
            line,
            format!(
                "the prompt ({longest} tokens) + --max-new-tokens {} exceed the model's context ({})",
                g.max_new_tokens, mcfg.context
            ),
        ));
    }
    let n = (*a.get_one::<usize>("num-samples").expect("default")).max(1);
    // The batch shape is fixed by --batch-size and the longest prompt rounded up to a multiple of 8 (within the
    // context), so repeated calls on different files reuse the kernel choices the tuner made for that shape.
    let b = (*a.get_one::<usize>("batch-size").expect("default")).max(1);
    let max_prompt = longest.next_multiple_of(8).min(mcfg.context - g.max_new_tokens);
    let gpu = crate::gpu()?;
    let mut gen = Generator::new(&gpu, &mcfg, &params, b, max_prompt, &g)?;
    // Every prompt n times, in order; B rows per call.
    let work: Vec<usize> = (0..prompts.len()).flat_map(|i| std::iter::repeat_n(i, n)).collect();
    let pb = indicatif::ProgressBar::new(work.len() as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template("generate [{bar:30}] {pos}/{len} samples ETA {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let mut done = Vec::with_capacity(work.len());
    for chunk in work.chunks(b) {
        let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| prompts[i].clone()).collect();
        done.extend(gen.generate_blocking(&gpu, &batch)?);
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    let mut out_rows = Vec::with_capacity(rows.len());
    for (i, (_, row)) in rows.into_iter().enumerate() {
        let mut row = row;
        let mine = &done[i * n..(i + 1) * n];
        let mut texts = Vec::with_capacity(n);
        for c in mine {
            let body = if c.stopped { &c.tokens[..c.tokens.len() - 1] } else { &c.tokens[..] };
            let mut text = tok.decode(body)?;
            if c.stopped {
                text.push_str(EOS_TEXT);
            }
            texts.push(Value::from(text));
        }
        row.insert("completions".into(), Value::from(texts));
        row.insert("stopped".into(), mine.iter().map(|c| c.stopped).collect());
        row.insert("logps".into(), mine.iter().map(|c| c.logp as f64).collect());
        row.insert("num_tokens".into(), mine.iter().map(|c| c.tokens.len()).collect());
        out_rows.push(Value::Object(row));
    }
    write_jsonl(std::path::Path::new(out), &out_rows)?;
    eprintln!(
        "generate: {} completions of {} prompts in {:.1} s -> {out}",
        done.len(),
        prompts.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The sampling settings of `generate` (the stop token: `<|endoftext|>` when the tokenizer has it).
pub fn generation_config(a: &ArgMatches, tok: &Tok) -> GenerationConfig {
    let stop = match tok {
        Tok::Hf { .. } if !a.get_flag("no-stop") => {
            tok.encoder().encode(EOS_TEXT).ok().filter(|v| v.len() == 1).map(|v| v[0])
        }
        _ => None,
    };
    GenerationConfig {
        max_new_tokens: *a.get_one::<usize>("max-new-tokens").expect("default"),
        temperature: *a.get_one::<f32>("temperature").expect("default"),
        top_k: *a.get_one::<usize>("top-k").expect("default"),
        stop_token_id: stop,
        seed: *a.get_one::<u64>("seed").expect("default"),
    }
}

// ---- judge --------------------------------------------------------------------------------------------------------

/// One judged text: its score (math 1-5; poems: rules followed 0-4) and, for poems, the rules.
fn judge_text(task: &str, prompt: &str, text: &str) -> Option<(u8, Option<Value>)> {
    let text = text.strip_suffix(EOS_TEXT).unwrap_or(text);
    match task {
        "math" => MathProblem::parse(prompt).map(|p| (judge_math(&p, text).score, None)),
        _ => PoemTask::parse(prompt).map(|t| {
            let s = judge_poem(&t, text);
            let rules = json!({"rows": s.rows, "words": s.words, "title": s.title, "last_letter": s.last_letter});
            (s.count() as u8, Some(rules))
        }),
    }
}

/// `judge --task T --data FILE [--output FILE]`: scores every `completions` entry (or the row's `completion`) and
/// prints the summary as one JSON object: `judge/score_mean` and, for math, `judge/full_score_rate` (5) and
/// `judge/score_4_or_5_rate`; for poems, `judge/full_rate` (every rule), one `judge/rule_*` rate per rule, and
/// whether the last letter is read from the instruction (`dpo3d::data::tasks::LetterUse`):
/// `judge/last_letter_prior` (the best rate of one fixed letter), `judge/last_initial_top` and
/// `judge/last_initial_top_share` (the poems' most common last initial and its share) and
/// `judge/rule_last_letter_other` (the rule's rate on the `judge/last_letter_other_count` instructions asking for
/// another letter) and `judge/rule_last_letter_blind` (the rate if the last initials ignored the instructions).
pub fn judge(a: &ArgMatches) -> Result<()> {
    let task = a.get_one::<String>("task").expect("required").as_str();
    let data = a.get_one::<String>("data").expect("required");
    let rows = read_rows(data)?;
    let max_score = if task == "math" { 5 } else { 4 };
    let mut scores: Vec<u8> = Vec::new();
    let mut rule_counts = [0usize; 4];
    let mut out_rows = Vec::with_capacity(rows.len());
    let mut poems: Vec<(PoemTask, String)> = Vec::new();
    for (line, mut row) in rows {
        let prompt = str_field(&row, "prompt", data, line)?.to_string();
        let has_samples = matches!(row.get("completions"), Some(Value::Array(_)));
        if let (true, Some(Value::String(reference))) = (has_samples, row.get("completion")) {
            // A row with samples and its reference answer: score the reference too (pairs use it as chosen).
            let (s, _) = judge_text(task, &prompt, reference).ok_or_else(|| {
                data_err(data, line, format!("the prompt is not a `{task}` task of dpo3d task-data: {prompt:?}"))
            })?;
            row.insert("reference_score".into(), Value::from(s));
        }
        let texts: Vec<String> = match (row.get("completions"), row.get("completion")) {
            (Some(Value::Array(cs)), _) => cs
                .iter()
                .map(|c| {
                    c.as_str().map(String::from).ok_or_else(|| data_err(data, line, "`completions` must hold text"))
                })
                .collect::<Result<_>>()?,
            (_, Some(Value::String(c))) => vec![c.clone()],
            _ => return Err(data_err(data, line, "needs `completions` (a list of text) or `completion` (text)")),
        };
        let mut row_scores = Vec::with_capacity(texts.len());
        let mut row_rules = Vec::new();
        for text in &texts {
            let (s, rules) = judge_text(task, &prompt, text).ok_or_else(|| {
                data_err(data, line, format!("the prompt is not a `{task}` task of dpo3d task-data: {prompt:?}"))
            })?;
            if let Some(r) = rules {
                if let Some(t) = PoemTask::parse(&prompt) {
                    poems.push((t, text.strip_suffix(EOS_TEXT).unwrap_or(text).to_string()));
                }
                for (k, name) in ["rows", "words", "title", "last_letter"].iter().enumerate() {
                    rule_counts[k] += r[name].as_bool().unwrap_or(false) as usize;
                }
                row_rules.push(r);
            }
            row_scores.push(s);
            scores.push(s);
        }
        row.insert("scores".into(), row_scores.iter().map(|&s| s as u64).collect());
        if !row_rules.is_empty() {
            row.insert("rules".into(), Value::from(row_rules));
        }
        out_rows.push(Value::Object(row));
    }
    if let Some(out) = a.get_one::<String>("output") {
        write_jsonl(std::path::Path::new(out), &out_rows)?;
    }
    let n = scores.len() as f64;
    let rate = |f: &dyn Fn(u8) -> bool| scores.iter().filter(|&&s| f(s)).count() as f64 / n;
    let mut summary = Map::new();
    summary.insert("judge/samples".into(), Value::from(scores.len()));
    summary.insert("judge/score_mean".into(), Value::from(scores.iter().map(|&s| s as f64).sum::<f64>() / n));
    if task == "math" {
        summary.insert("judge/full_score_rate".into(), Value::from(rate(&|s| s == max_score)));
        summary.insert("judge/score_4_or_5_rate".into(), Value::from(rate(&|s| s >= 4)));
    } else {
        summary.insert("judge/full_rate".into(), Value::from(rate(&|s| s == max_score)));
        for (k, name) in ["rows", "words", "title", "last_letter"].iter().enumerate() {
            summary.insert(format!("judge/rule_{name}"), Value::from(rule_counts[k] as f64 / n));
        }
        let u = last_letter_use(&poems.iter().map(|(t, p)| (t.clone(), p.as_str())).collect::<Vec<_>>());
        summary.insert("judge/last_letter_prior".into(), Value::from(u.prior));
        summary.insert("judge/last_initial_top".into(), u.top_initial.map_or(Value::Null, |c| c.to_string().into()));
        summary.insert("judge/last_initial_top_share".into(), Value::from(u.top_share));
        summary.insert("judge/rule_last_letter_other".into(), u.other_rate.map_or(Value::Null, Value::from));
        summary.insert("judge/last_letter_other_count".into(), Value::from(u.other_count));
        summary.insert("judge/rule_last_letter_blind".into(), Value::from(u.blind));
    }
    println!("{}", Value::Object(summary));
    Ok(())
}

/// A rule-based PPO reward in [0, 1] for one response (ids, the stop token dropped) to one prompt (ids): math
/// (judge score - 1) / 4, poem rules followed / 4. A prompt that is not a task-data task is an error.
pub fn rule_reward(task: &str, tok: &Tok, prompt: &[u32], response: &[u32]) -> Result<f32> {
    let stop = tok.eos_id();
    let body: Vec<u32> =
        response.iter().copied().take_while(|&x| !matches!(tok, Tok::Hf { .. }) || x != stop).collect();
    let (prompt, text) = (tok.decode(prompt)?, tok.decode(&body)?);
    let (s, _) = judge_text(task, &prompt, &text)
        .ok_or_else(|| Error::config(format!("reward_rule {task}: a prompt is not a `{task}` task: {prompt:?}")))?;
    Ok(if task == "math" { (s as f32 - 1.0) / 4.0 } else { s as f32 / 4.0 })
}

// ---- pairs --------------------------------------------------------------------------------------------------------

/// A judged row: prompt, its samples with scores, and its reference completion when it has one.
struct Judged {
    line: usize,
    prompt: String,
    samples: Vec<(String, u8)>,
    /// The reference answer (`completion`) and its score (`reference_score`).
    reference: Option<(String, u8)>,
}

fn read_judged(path: &str) -> Result<Vec<Judged>> {
    read_rows(path)?
        .into_iter()
        .map(|(line, row)| {
            let prompt = str_field(&row, "prompt", path, line)?.to_string();
            let texts = row.get("completions").and_then(Value::as_array);
            let scores = row.get("scores").and_then(Value::as_array);
            let (Some(texts), Some(scores)) = (texts, scores) else {
                return Err(data_err(path, line, "needs `completions` and `scores` (run `dpo3d judge` on it first)"));
            };
            if texts.len() != scores.len() || texts.is_empty() {
                return Err(data_err(path, line, "`completions` and `scores` must be non-empty and of equal length"));
            }
            let samples = texts
                .iter()
                .zip(scores)
                .map(|(t, s)| match (t.as_str(), s.as_u64()) {
                    (Some(t), Some(s)) => Ok((t.to_string(), s.min(255) as u8)),
                    _ => Err(data_err(path, line, "`completions` must be text and `scores` integers")),
                })
                .collect::<Result<_>>()?;
            let reference = match (row.get("completion").and_then(Value::as_str), row.get("reference_score")) {
                (Some(c), Some(s)) => Some((c.to_string(), s.as_u64().unwrap_or(0).min(255) as u8)),
                _ => None,
            };
            Ok(Judged { line, prompt, samples, reference })
        })
        .collect()
}

/// `pairs --samples FILE [--other FILE] --output-dir DIR`: preference pairs from judged samples (see the module
/// docs). Ties are skipped: every pair's chosen scored higher than its rejected. With `--other` and judged reference
/// completions (`completion`, `reference_score`) all four scenarios are written, from the problems where each scenario has a pair;
/// without them only on_on.jsonl. Prints the counts as JSON.
pub fn pairs(a: &ArgMatches) -> Result<()> {
    let samples_path = a.get_one::<String>("samples").expect("required");
    let own = read_judged(samples_path)?;
    let other = match a.get_one::<String>("other") {
        Some(p) => {
            let rows = read_judged(p)?;
            let by_prompt: std::collections::HashMap<String, (String, u8)> =
                rows.into_iter().map(|j| (j.prompt, j.samples[0].clone())).collect();
            Some((p.clone(), by_prompt))
        }
        None => None,
    };
    let pair = |prompt: &str, c: &(String, u8), r: &(String, u8)| -> Option<Value> {
        (c.1 > r.1).then(
            || json!({"prompt": prompt, "chosen": c.0, "rejected": r.0, "score_chosen": c.1, "score_rejected": r.1}),
        )
    };
    let names = ["on_on", "on_off", "off_on", "off_off"];
    let mut out: [Vec<Value>; 4] = Default::default();
    let (mut skipped, mut missing_other) = (0usize, 0usize);
    for j in &own {
        // Best: the highest score, worst: the lowest (the first of equals for both).
        let best = j.samples.iter().rev().max_by_key(|s| s.1).expect("non-empty");
        let worst = j.samples.iter().min_by_key(|s| s.1).expect("non-empty");
        let on_on = pair(&j.prompt, best, worst);
        let Some((other_path, by_prompt)) = &other else {
            match on_on {
                Some(p) => out[0].push(p),
                None => skipped += 1,
            }
            continue;
        };
        let Some(reference) = &j.reference else {
            return Err(data_err(
                samples_path,
                j.line,
                "four scenarios need the reference answer in `completion`, judged (`reference_score`)",
            ));
        };
        let Some(theirs) = by_prompt.get(&j.prompt) else {
            missing_other += 1;
            if missing_other == 1 {
                eprintln!("pairs: {other_path} has no answer to the prompt of line {}; skipping it", j.line);
            }
            continue;
        };
        let four = [
            on_on,
            pair(&j.prompt, best, theirs),
            pair(&j.prompt, reference, worst),
            pair(&j.prompt, reference, theirs),
        ];
        if four.iter().all(Option::is_some) {
            for (k, p) in four.into_iter().enumerate() {
                out[k].push(p.expect("checked"));
            }
        } else {
            skipped += 1;
        }
    }
    let dir = PathBuf::from(a.get_one::<String>("output-dir").expect("required"));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let written = if other.is_some() { 4 } else { 1 };
    let mut counts = Map::new();
    for k in 0..written {
        write_jsonl(&dir.join(format!("{}.jsonl", names[k])), &out[k])?;
        counts.insert(names[k].into(), Value::from(out[k].len()));
    }
    counts.insert("problems".into(), Value::from(own.len()));
    counts.insert("skipped_ties".into(), Value::from(skipped));
    counts.insert("skipped_no_other".into(), Value::from(missing_other));
    println!("{}", Value::Object(counts));
    if out[0].is_empty() {
        return Err(Error::config(format!(
            "pairs: no problem of {samples_path} has a sample scored above another (all ties): nothing to prefer"
        )));
    }
    Ok(())
}
