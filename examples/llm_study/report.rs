//! The llm-study report: DIR/report.md and DIR/figures/*.svg from DIR/results.json (every model's judged held-out
//! answers and pair log-probs, per task), DIR/phases.json (wall time per phase) and each run's metrics.jsonl. Every
//! number sits next to the paper's, with a verdict and its noise; where the small scale cannot answer a question the
//! report says so.
//!
//!   figures/<task>_accuracy.svg  held-out pairwise accuracy over training: reward model vs DPO's implicit reward,
//!                                and DPO's training accuracy (the paper's figures 5, 7, 8)
//!   figures/<task>_logps.svg     per-token log-prob of chosen and rejected responses over DPO training, per scenario
//!   figures/<task>_beta_neg.svg  Flex-DPO's beta_neg sweep: held-out full rate, mean over seeds (the paper's
//!                                figure 4)

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde_json::{Map, Value};

type R<T> = Result<T, String>;

fn read_json(path: &Path) -> R<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The rows of a run's metrics.jsonl.
fn metrics(out: &Path, run: &str) -> Vec<Map<String, Value>> {
    let text = std::fs::read_to_string(out.join("models").join(run).join("metrics.jsonl")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()?.as_object().cloned()).collect()
}

/// (step, value) of `key` over a run's metrics rows.
fn series(rows: &[Map<String, Value>], key: &str) -> Vec<(f64, f64)> {
    rows.iter().filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(key)?.as_f64()?))).collect()
}

/// DIR/metrics.jsonl: every run's metrics rows with `task` and `run` fields, one file for the whole study.
pub fn collect_metrics(out: &Path) -> R<()> {
    let mut text = String::new();
    for task in ["math", "poem"] {
        let Ok(dir) = std::fs::read_dir(out.join(task).join("models")) else { continue };
        let mut names: Vec<String> = dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
        names.sort();
        for name in names {
            for mut row in metrics(&out.join(task), &name) {
                row.insert("task".into(), Value::from(task));
                row.insert("run".into(), Value::from(name.as_str()));
                writeln!(text, "{}", Value::Object(row)).expect("string");
            }
        }
    }
    dpo3d::checkpoint::write_atomic(&out.join("metrics.jsonl"), text.as_bytes()).map_err(|e| e.to_string())
}

/// The last logged value of every metric of a run (PPO's final KL, scores, ...).
pub fn last_metrics(task_dir: &Path, run: &str) -> Map<String, Value> {
    let mut last = Map::new();
    for row in metrics(task_dir, run) {
        last.extend(row);
    }
    last
}

fn get(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for k in path {
        cur = cur.get(*k)?;
    }
    cur.as_f64()
}

fn pct(x: Option<f64>) -> String {
    x.map(|x| format!("{:.1}%", 100.0 * x)).unwrap_or_else(|| "-".into())
}

fn num(x: Option<f64>) -> String {
    x.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into())
}

fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

fn row(md: &mut String, cells: &[String]) {
    writeln!(md, "| {} |", cells.join(" | ")).expect("string");
}

fn header(md: &mut String, cells: &[&str]) {
    writeln!(md, "| {} |", cells.join(" | ")).expect("string");
    writeln!(md, "|{}", "---|".repeat(cells.len())).expect("string");
}

/// The models of results.json matching a predicate.
fn models(res: &Value, f: impl Fn(&Value) -> bool) -> Vec<&Value> {
    res["models"].as_array().map(|a| a.iter().filter(|m| f(m)).collect()).unwrap_or_default()
}

fn model<'a>(res: &'a Value, name: &str) -> Option<&'a Value> {
    models(res, |m| m["name"] == name).into_iter().next()
}

/// Mean of a metric over several models (seeds).
fn over(ms: &[&Value], path: &[&str]) -> Option<f64> {
    mean(&ms.iter().filter_map(|m| get(m, path)).collect::<Vec<_>>())
}

fn dpo_seeds<'a>(res: &'a Value, scenario: &str) -> Vec<&'a Value> {
    models(res, |m| m["method"] == "DPO" && m["scenario"] == scenario)
}

/// A preference run's seed, from its name's `-s<seed>` suffix; None for a name without one (seed 0 of a method that
/// has several, or a run without seeds).
fn seed_of(m: &Value) -> Option<u64> {
    m["name"].as_str()?.rsplit_once("-s").and_then(|x| x.1.parse().ok())
}

/// Whether rate `a` is above rate `b` (each over `n` problems), said with its noise: "agrees" / "disagrees" with a
/// claim that a > b, and whether the difference exceeds two standard errors of a difference of two proportions.
fn ordering(a: Option<f64>, b: Option<f64>, n: f64) -> String {
    let (Some(a), Some(b)) = (a, b) else { return "cannot tell (missing runs)".into() };
    let two_se = 2.0 * ((a * (1.0 - a) + b * (1.0 - b)) / n.max(1.0)).sqrt();
    let d = a - b;
    let noise = if d.abs() > two_se { "beyond" } else { "within" };
    let word = if d > 0.0 {
        "**agrees**"
    } else if d < 0.0 {
        "**disagrees**"
    } else {
        "**tie**"
    };
    format!(
        "{word} (difference {:+.1} points, {noise} the noise of 2 standard errors = {:.1})",
        100.0 * d,
        100.0 * two_se
    )
}

/// a - b in points with two standard errors of the difference, "*" when beyond them: "-12.5 ± 16.5".
fn delta(a: Option<f64>, b: Option<f64>, n: f64) -> String {
    let (Some(a), Some(b)) = (a, b) else { return "-".into() };
    let two_se = 2.0 * ((a * (1.0 - a) + b * (1.0 - b)) / n.max(1.0)).sqrt();
    let star = if (a - b).abs() > two_se { " *" } else { "" };
    format!("{:+.1} ± {:.1}{star}", 100.0 * (a - b), 100.0 * two_se)
}

fn verdict(agree: Option<bool>) -> &'static str {
    match agree {
        Some(true) => "**agrees**",
        Some(false) => "**disagrees**",
        None => "cannot tell",
    }
}

pub fn write(out: &Path) -> R<()> {
    let all = read_json(&out.join("results.json"))?;
    let phases = read_json(&out.join("phases.json")).unwrap_or(Value::Null);
    std::fs::create_dir_all(out.join("figures")).map_err(|e| e.to_string())?;
    let tasks = all["tasks"].as_object().cloned().unwrap_or_default();
    let mut md = String::new();
    md.push_str("# The paper's LLM experiments at small scale\n\n");
    writeln!(
        md,
        "The paper (\"3D-Properties: Identifying Challenges in DPO and Charting a Path Forward\", ICLR 2025) tests its \
         claims on Baichuan2 13B/33B: math problems scored 1-5 by a judge (its Tables 1, 3 and 7, Figures 5, 7 and 8) \
         and instruction following (poems, slogans) scored by rules (its Table 2 and Figure 4). This study asks the same \
         questions of small GPTs trained from scratch by dpo3d on two generated tasks with rule-based judges \
         (`dpo3d judge`): integer word problems with worked solutions (5 = right answer and every step right, 4 = right \
         answer with a flaw, 3-1 = wrong answer by how much of the working is right) and poem instructions (rows, \
         words per row, title, the last word's first letter). Profile `{}`; every number below comes from the runs in \
         this directory. Verdicts compare the direction of each effect with the paper's and say whether the \
         difference is beyond two standard errors of a difference of two proportions (otherwise it is within noise).\n",
        all["profile"].as_str().unwrap_or("?")
    )
    .expect("string");
    if all["profile"].as_str().is_some_and(|p| p.ends_with("(shape check)")) {
        md.push_str(
            "\n**A shape check** (`--shape-check`): the profile's model, batch and sequence sizes with every run cut to \
             a few steps and the data to a few batches. It shows that the profile's runs fit the device; none of the \
             numbers below means anything.\n",
        );
    }

    // ---- how it ran
    md.push_str("## How it ran\n\n");
    writeln!(
        md,
        "- Device: {} on {}. Wall time of the whole study {:.1} min (independent commands run two at a time).",
        all["adapter"].as_str().unwrap_or("?"),
        all["cpu"].as_str().unwrap_or("?"),
        all["wall_seconds"].as_f64().unwrap_or(0.0) / 60.0
    )
    .expect("string");
    for (task, res) in &tasks {
        let p = &res["profile"];
        if let Ok((c, _)) = dpo3d::checkpoint::load_gpt(&out.join(task).join("models/sft")) {
            writeln!(
                md,
                "- {task}: GPT-2 layout, {} layers, width {}, {} heads, context {}, vocabulary {} (byte-level BPE \
                 trained on the task's text), {} parameters. SFT {} steps x {} sequences; each preference run {} \
                 epochs over its pairs at batch {}; PPO {} steps x {} prompts.",
                c.layers,
                c.width,
                c.heads,
                c.context,
                c.vocab_size,
                c.num_params(),
                p["sft_steps"],
                p["sft_batch"],
                p["pref_epochs"],
                p["pref_batch"],
                p["ppo_steps"],
                p["ppo_batch"]
            )
            .expect("string");
        }
    }
    if let Some(obj) = phases.as_object() {
        md.push('\n');
        header(&mut md, &["phase", "wall seconds"]);
        for (k, v) in obj {
            row(&mut md, &[k.clone(), format!("{:.1}", v.as_f64().unwrap_or(0.0))]);
        }
        md.push('\n');
    }
    if let Some(res) = tasks.get("math") {
        math(&mut md, &out.join("math"), res)?;
        figures(out, "math", &out.join("math"), res)?;
    }
    if let Some(res) = tasks.get("poem") {
        poem(&mut md, &out.join("poem"), res)?;
        figures(out, "poem", &out.join("poem"), res)?;
    }
    choices(&mut md, &tasks);
    dpo3d::checkpoint::write_atomic(&out.join("report.md"), md.as_bytes()).map_err(|e| e.to_string())
}

fn full_key(res: &Value) -> &'static str {
    if res["profile"]["task"] == "poem" {
        "judge/full_rate"
    } else {
        "judge/full_score_rate"
    }
}

/// Held-out full rate of greedy answers, mean over the given models (seeds).
fn full(res: &Value, ms: &[&Value]) -> Option<f64> {
    over(ms, &["greedy", full_key(res)])
}

fn rate_of(res: &Value, name: &str) -> Option<f64> {
    model(res, name).and_then(|m| full(res, &[m]))
}

fn pairs_section(md: &mut String, res: &Value) {
    let p = &res["profile"];
    writeln!(
        md,
        "Pairs: the SFT model samples {} answers (temperature 1) to each of {} training prompts and {} held-out prompts; \
         the judge scores them. On-policy chosen = the best, rejected = the worst (ties skipped); off-policy chosen = \
         the reference answer, rejected = the answer of a weaker model (the SFT checkpoint at step {}). A prompt enters \
         the four scenarios only when each of its four pairs has chosen scored above rejected, so the scenarios hold \
         the same prompts.",
        p["samples_per_problem"], p["pair_problems"], p["heldout_pair_problems"], p["weak_step"]
    )
    .expect("string");
    for split in ["train", "heldout"] {
        let c = &res["pairs"][split];
        writeln!(
            md,
            "- {split}: {} pairs per scenario from {} prompts ({} skipped for a tie).",
            c["on_on"], c["problems"], c["skipped_ties"]
        )
        .expect("string");
    }
    md.push('\n');
}

/// One row per method: held-out full rate and its change from the SFT model.
fn method_rows(md: &mut String, res: &Value, extra: &[(&str, &[&str])]) {
    let sft = rate_of(res, "sft");
    let n = res["profile"]["eval_rows"].as_f64().unwrap_or(1.0);
    let mut cols = vec!["method", "full", "vs SFT (points, ± 2 SE; * beyond)"];
    cols.extend(extra.iter().map(|e| e.0));
    cols.push("sampled: full");
    header(md, &cols);
    let mut groups: Vec<(String, Vec<&Value>)> = Vec::new();
    for m in models(res, |_| true) {
        let method = m["method"].as_str().unwrap_or("").to_string();
        let label = match m["scenario"].as_str() {
            Some(sc) if method == "DPO" && sc != "on_on" => continue,
            _ => method,
        };
        match groups.iter_mut().find(|g| g.0 == label) {
            Some(g) => g.1.push(m),
            None => groups.push((label, vec![m])),
        }
    }
    for (label, ms) in &groups {
        let f = full(res, ms);
        let name = if ms.len() > 1 { format!("{label} ({} seeds)", ms.len()) } else { label.clone() };
        // A mean over seeds has the noise of the prompts, not less: every seed answers the same ones.
        let vs = if label == "SFT" { "-".into() } else { delta(f, sft, n) };
        let mut cells = vec![name, pct(f), vs];
        // Rates as percentages; the mean score as a number.
        cells.extend(extra.iter().map(|e| {
            let x = over(ms, &[&["greedy"][..], e.1].concat());
            if e.1.iter().any(|k| k.ends_with("score_mean")) {
                num(x)
            } else {
                pct(x)
            }
        }));
        cells.push(pct(over(ms, &["sample", full_key(res)])));
        row(md, &cells);
    }
}

fn math(md: &mut String, dir: &Path, res: &Value) -> R<()> {
    let p = &res["profile"];
    let n = p["eval_rows"].as_f64().unwrap_or(1.0);
    md.push_str("# Math\n\n");
    writeln!(
        md,
        "{} training problems with reference solutions (SFT), {} held-out problems for evaluation.\n",
        p["train_rows"], p["eval_rows"]
    )
    .expect("string");
    pairs_section(md, res);

    // ---- Table 1
    md.push_str("## Table 1 analogue: held-out full-score rates per method\n\n");
    writeln!(
        md,
        "Greedy answers to the {} held-out problems, judged (\"full\" = score 5); \"sampled\" is one answer at \
         temperature 1. Every method starts from the SFT model and trains on the on-policy pairs (on / on); rows \
         with several seeds show their mean. \"vs SFT\" is the change from the SFT model with the noise of the \
         held-out problems (which every seed answers, so a mean over seeds has no less).\n",
        p["eval_rows"]
    )
    .expect("string");
    method_rows(md, res, &[("score 4 or 5", &["judge/score_4_or_5_rate"]), ("mean score", &["judge/score_mean"])]);
    let dpo_on = dpo_seeds(res, "on_on");
    // Flex-DPO at beta_neg 0.08, the mean over its seeds.
    let flex08 = models(res, |m| m["method"] == "Flex-DPO beta_neg 0.08");
    let flex08_rate = full(res, &flex08);
    writeln!(
        md,
        "\nPaper: Flex-DPO (beta_neg 0.08) slightly ahead of DPO, IPO and SLiC on math (30.1 vs 29.9 / 30.0 / 29.3). \
         Here Flex-DPO 0.08 scores {}: against DPO {} {}; against IPO {} {}; against SLiC {} {}.\n",
        pct(flex08_rate),
        pct(full(res, &dpo_on)),
        ordering(flex08_rate, full(res, &dpo_on), n),
        pct(rate_of(res, "ipo")),
        ordering(flex08_rate, rate_of(res, "ipo"), n),
        pct(rate_of(res, "slic")),
        ordering(flex08_rate, rate_of(res, "slic"), n),
    )
    .expect("string");
    writeln!(
        md,
        "Paper: DPO on both-on-policy pairs improves the model slightly (33B: 47.5% from 44.5%). Here DPO against the \
         SFT model: {}. RM + PPO (reward model trained on the same pairs) against the SFT model: {} (final KL to the \
         SFT model {}); against DPO: {}.\n",
        ordering(full(res, &dpo_on), rate_of(res, "sft"), n),
        ordering(rate_of(res, "ppo"), rate_of(res, "sft"), n),
        num(model(res, "ppo").and_then(|m| get(m, &["ppo_final", "objective/kl"]))),
        ordering(rate_of(res, "ppo"), full(res, &dpo_on), n)
    )
    .expect("string");
    writeln!(md, "RM + PPO's run: {}.\n", ppo_trajectory(dir, "ppo")).expect("string");

    // ---- Table 3
    md.push_str("## Table 3 analogue: the four scenarios under DPO\n\n");
    header(md, &["chosen / rejected", "seeds", "full score (5)", "score 4 or 5", "per seed (full score)"]);
    let mut others: Option<(&str, f64)> = None;
    for sc in ["on_on", "on_off", "off_on", "off_off"] {
        let ms = dpo_seeds(res, sc);
        let per: Vec<String> = ms.iter().map(|m| pct(get(m, &["greedy", "judge/full_score_rate"]))).collect();
        if let (Some(f), true) = (full(res, &ms), sc != "on_on") {
            if others.is_none_or(|b| f > b.1) {
                others = Some((sc, f));
            }
        }
        row(
            md,
            &[
                sc.replace('_', " / "),
                ms.len().to_string(),
                pct(full(res, &ms)),
                pct(over(&ms, &["greedy", "judge/score_4_or_5_rate"])),
                per.join(", "),
            ],
        );
    }
    let seeds = dpo_on.len().max(1) as f64;
    writeln!(
        md,
        "\nSFT model before preference training: {}. Paper: both on-policy best (33B: 47.5% vs 44.5% before). Here \
         on / on against the best other scenario ({}): {} (means of {} seeds; the noise of {} problems, which every \
         seed answers).\n",
        pct(rate_of(res, "sft")),
        others.map(|b| b.0.replace('_', " / ")).unwrap_or("-".into()),
        ordering(full(res, &dpo_on), others.map(|b| b.1), n),
        seeds,
        n
    )
    .expect("string");

    table7(md, res, "7");
    properties(md, dir, res);
    rm_vs_dpo(md, dir, res);
    if flex_groups(res).len() > 1 {
        beta_neg_sweep(md, res, "math");
    }
    Ok(())
}

fn poem(md: &mut String, dir: &Path, res: &Value) -> R<()> {
    let p = &res["profile"];
    let n = p["eval_rows"].as_f64().unwrap_or(1.0);
    md.push_str("# Instruction following (poems)\n\n");
    writeln!(
        md,
        "{} training instructions with reference poems (SFT), {} held-out instructions. An instruction asks for N rows \
         of K words, with or without a title, the last word starting with a given letter; the judge checks each rule \
         (a sample's score is the number of rules it follows, 0-4).\n",
        p["train_rows"], p["eval_rows"]
    )
    .expect("string");
    pairs_section(md, res);
    md.push_str("## Table 2 analogue: rule compliance per method\n\n");
    writeln!(
        md,
        "Greedy answers to the {} held-out instructions, judged per rule; \"full\" = every rule followed. DPO, \
         Flex-DPO and SFT-DPO train on the on-policy pairs; RM + PPO on a reward model trained on the same pairs; \
         \"PPO on the rule score\" on the judge's score itself (rules followed / 4), as the paper's rule-scored PPO.\n",
        p["eval_rows"]
    )
    .expect("string");
    method_rows(
        md,
        res,
        &[
            ("rows", &["judge/rule_rows"]),
            ("words per row", &["judge/rule_words"]),
            ("title", &["judge/rule_title"]),
            ("last letter", &["judge/rule_last_letter"]),
        ],
    );
    let dpo_on = dpo_seeds(res, "on_on");
    let rule = |ms: &[&Value], r: &str| over(ms, &["greedy", &format!("judge/rule_{r}")]);
    let ppo_rule = model(res, "ppo-rule");
    let mut lines = Vec::new();
    for r in ["rows", "words", "title", "last_letter"] {
        lines.push(format!(
            "{}: {}",
            r.replace('_', " "),
            ordering(ppo_rule.and_then(|m| rule(&[m], r)), rule(&dpo_on, r), n)
        ));
    }
    writeln!(
        md,
        "\nPaper: PPO beats DPO on the rule-scored tasks (e.g. the title rule 1.0 vs 0.78). PPO on the rule score \
         against DPO, per rule: {}; every rule: {}. RM + PPO against DPO (every rule): {}.\n",
        lines.join("; "),
        ordering(ppo_rule.and_then(|m| full(res, &[m])), full(res, &dpo_on), n),
        ordering(rate_of(res, "ppo"), full(res, &dpo_on), n)
    )
    .expect("string");
    let learnt = ppo_learnt(ppo_rule.and_then(|m| full(res, &[m])), rate_of(res, "sft"), n);
    writeln!(
        md,
        "How far the PPO runs moved: PPO on the rule score: {}; RM + PPO (its reward model's score): {}. The training \
         score averages one sample per training prompt at temperature 1 (as the sampled column above), which can move \
         much less than the greedy answers. {learnt}\n",
        ppo_trajectory(dir, "ppo-rule"),
        ppo_trajectory(dir, "ppo")
    )
    .expect("string");
    letter_use(md, res);
    beta_neg_sweep(md, res, "poem");
    table7(md, res, "7 (poems)");
    properties(md, dir, res);
    rm_vs_dpo(md, dir, res);
    Ok(())
}

/// Whether each method follows the last-letter rule by reading the instruction or by ending every poem with the same
/// letter (the judge's `judge/last_*` summary): a rise in that rule's rate means little if it is the second.
fn letter_use(md: &mut String, res: &Value) {
    md.push_str("### The last letter: read from the instruction, or one letter for every poem?\n\n");
    let prior = models(res, |_| true).iter().find_map(|m| get(m, &["greedy", "judge/last_letter_prior"]));
    writeln!(
        md,
        "A poem set that ends every poem with a word of the most requested letter passes the last-letter rule on {} of \
         these instructions without reading one. \"Another letter asked\" is the rule's rate on the instructions that \
         ask for a letter other than the method's most common last initial: near its overall rate if the model reads \
         the letter, 0 if it ends every poem alike. The \"letter-blind rate\" is what the poems' last initials would \
         score if they were independent of the instructions (the sum over letters of the share of poems ending with \
         it times the share of instructions asking for it): the part of the rule's rate above it comes from reading \
         the letter.\n",
        pct(prior)
    )
    .expect("string");
    header(
        md,
        &[
            "method",
            "last letter",
            "letter-blind rate",
            "most common last initial (share of poems)",
            "last letter, another letter asked",
            "sampled: last letter",
            "sampled: letter-blind rate",
        ],
    );
    let top = |m: &Value, kind: &str| {
        let letter = m[kind]["judge/last_initial_top"].as_str().unwrap_or("-").to_string();
        format!("{letter} ({})", pct(get(m, &[kind, "judge/last_initial_top_share"])))
    };
    let all = models(res, |_| true);
    for m in &all {
        let name = match (m["method"].as_str(), m["scenario"].as_str()) {
            (Some(method), Some(sc)) if method == "DPO" && sc != "on_on" => continue,
            // A method trained with several seeds: one row per seed.
            (Some(method), _) if all.iter().filter(|o| o["method"] == m["method"]).count() > 1 => {
                format!("{method}, seed {}", seed_of(m).unwrap_or(0))
            }
            (Some(method), _) => method.to_string(),
            _ => continue,
        };
        row(
            md,
            &[
                name,
                pct(get(m, &["greedy", "judge/rule_last_letter"])),
                pct(get(m, &["greedy", "judge/rule_last_letter_blind"])),
                top(m, "greedy"),
                pct(get(m, &["greedy", "judge/rule_last_letter_other"])),
                pct(get(m, &["sample", "judge/rule_last_letter"])),
                pct(get(m, &["sample", "judge/rule_last_letter_blind"])),
            ],
        );
    }
    let other = |name: &str| model(res, name).and_then(|m| get(m, &["greedy", "judge/rule_last_letter_other"]));
    // The instructions that ask for another letter than a model's top initial: fewer than all, and not the same
    // ones for every model; the smaller count of the two compared sizes the noise.
    let count = |name: &str| model(res, name).and_then(|m| get(m, &["greedy", "judge/last_letter_other_count"]));
    let n = |a: &str, b: &str| count(a).unwrap_or(0.0).min(count(b).unwrap_or(0.0));
    let dpo = dpo_seeds(res, "on_on");
    let margin = |kind: &str| {
        let over_blind = models(res, |_| true).into_iter().filter_map(|m| {
            Some(get(m, &[kind, "judge/rule_last_letter"])? - get(m, &[kind, "judge/rule_last_letter_blind"])?)
        });
        over_blind.reduce(f64::max).map_or("-".into(), |x| format!("{:+.1}", 100.0 * x))
    };
    // DPO's first seed (the small profile trains one on poems; the rows above list every model).
    let dpo_name = dpo.first().and_then(|m| m["name"].as_str()).unwrap_or("dpo");
    let dpo_label = if dpo.len() > 1 { "DPO's (its first seed)" } else { "DPO's" };
    let collapsed: Vec<String> = models(res, |m| get(m, &["greedy", "judge/last_initial_top_share"]) >= Some(0.9))
        .iter()
        .filter_map(|m| {
            let method = m["method"].as_str()?;
            let seeds = all.iter().filter(|o| o["method"] == m["method"]).count();
            Some(if seeds > 1 { format!("{method}, seed {}", seed_of(m).unwrap_or(0)) } else { method.to_string() })
        })
        .collect();
    writeln!(
        md,
        "\nGreedy answers ending with one initial in at least 90% of poems: {}. On the instructions asking for another \
         letter, SFT's greedy answers pass the rule at {}, PPO on the rule score's at {} ({} points against SFT, \
         ± 2 SE, * beyond), {} at {} ({}). Where a method's last-letter gain over SFT comes with its poems all \
         ending alike, the gain (and with it the \"every rule\" comparison above) measures the letter prior, not \
         instruction following. The largest margin of any model's last-letter rate over its letter-blind rate: {} \
         greedy, {} sampled (points).\n",
        if collapsed.is_empty() { "none".to_string() } else { collapsed.join(", ") },
        pct(other("sft")),
        pct(other("ppo-rule")),
        delta(other("ppo-rule"), other("sft"), n("ppo-rule", "sft")),
        dpo_label,
        pct(other(dpo_name)),
        delta(other(dpo_name), other("sft"), n(dpo_name, "sft")),
        margin("greedy"),
        margin("sample"),
    )
    .expect("string");
}

/// "scores A -> B (first and last 10 steps), KL C": how far a PPO run moved, from its metrics.
fn ppo_trajectory(dir: &Path, run: &str) -> String {
    let rows = metrics(dir, run);
    let sc: Vec<f64> = series(&rows, "objective/scores").into_iter().map(|x| x.1).collect();
    let kl = series(&rows, "objective/kl").last().map(|x| x.1);
    let k = sc.len().min(10);
    match (mean(&sc[..k]), mean(&sc[sc.len() - k..])) {
        (Some(a), Some(b)) => {
            format!("training score {a:.3} -> {b:.3} (means of its first and last {k} steps), final KL {}", num(kl))
        }
        _ => "no training metrics".into(),
    }
}

/// Whether the rule-score PPO learnt, judged by its greedy held-out full rate `ppo` against SFT's `sft` over `n`
/// prompts (beyond two standard errors of the difference: it did). Its training score averages one sample per training
/// prompt at temperature 1, which can move much less: in the full profile's poem run 0.783 -> 0.799 while the greedy
/// rate rose 20 points.
fn ppo_learnt(ppo: Option<f64>, sft: Option<f64>, n: f64) -> String {
    let (Some(a), Some(b)) = (ppo, sft) else {
        return "Its greedy held-out rate is missing, so whether it learnt cannot be told.".into();
    };
    let two_se = 2.0 * ((a * (1.0 - a) + b * (1.0 - b)) / n.max(1.0)).sqrt();
    let verdict = if a - b > two_se {
        "it learnt: its row above compares a trained PPO with DPO"
    } else {
        "within noise of SFT (or below it), it has not learnt within this profile's budget, so its row above says \
         little about PPO against DPO"
    };
    format!(
        "Its greedy held-out full rate is {:+.1} points from SFT's (2 standard errors = {:.1}): {verdict}.",
        100.0 * (a - b),
        100.0 * two_se
    )
}

fn table7(md: &mut String, res: &Value, label: &str) {
    writeln!(md, "## Table {label} analogue: per-token log-probs before and after DPO\n").expect("string");
    md.push_str(
        "Mean per-token log-prob of the chosen and rejected responses of the on/on pairs, under the SFT model (before) \
         and under DPO (after; mean over seeds).\n\n",
    );
    header(md, &["pairs", "chosen before", "chosen after", "rejected before", "rejected after", "rejected fell more"]);
    let sft = model(res, "sft");
    let dpo_on = dpo_seeds(res, "on_on");
    let mut fell_more = Vec::new();
    for (split, name) in [("train_pairs", "training"), ("heldout_pairs", "held-out")] {
        let b = |k: &str| sft.and_then(|m| get(m, &[split, k]));
        let a = |k: &str| over(&dpo_on, &[split, k]);
        let (cb, ca) = (b("eval_logps/chosen_token_mean"), a("eval_logps/chosen_token_mean"));
        let (rb, ra) = (b("eval_logps/rejected_token_mean"), a("eval_logps/rejected_token_mean"));
        let more = match (cb, ca, rb, ra) {
            (Some(cb), Some(ca), Some(rb), Some(ra)) => Some((rb - ra) > (cb - ca)),
            _ => None,
        };
        fell_more.push(more);
        let yes = more.map(|m| if m { "yes" } else { "no" }).unwrap_or("-");
        row(md, &[name.into(), num(cb), num(ca), num(rb), num(ra), yes.into()]);
    }
    let all =
        if fell_more.iter().all(Option::is_some) { Some(fell_more.iter().all(|x| *x == Some(true))) } else { None };
    writeln!(
        md,
        "\nPaper: after DPO the rejected responses' log-prob falls much more than the chosen ones'. Here: {}.\n",
        verdict(all)
    )
    .expect("string");
}

fn properties(md: &mut String, dir: &Path, res: &Value) {
    md.push_str("## The 3D-properties at the token level\n\n");
    let dpo_on = dpo_seeds(res, "on_on");
    md.push_str(
        "**Drastic drop of the rejected responses and degradation of the chosen ones**: the per-token log-probs of \
         the batches DPO trains on (first logged step -> last; figures/*_logps.svg):\n\n",
    );
    for run in dpo_on.iter().filter_map(|m| m["name"].as_str()) {
        let rows = metrics(dir, run);
        let ch = series(&rows, "logps/chosen_token_mean");
        let rj = series(&rows, "logps/rejected_token_mean");
        if let (Some(c0), Some(c1), Some(r0), Some(r1)) = (ch.first(), ch.last(), rj.first(), rj.last()) {
            let peak = ch.iter().cloned().fold((0.0, f64::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a });
            writeln!(
                md,
                "- `{run}`: chosen {:.3} -> {:.3} (highest {:.3} at step {}), rejected {:.3} -> {:.3}.",
                c0.1, c1.1, peak.1, peak.0, r0.1, r1.1
            )
            .expect("string");
        }
    }
    token_level(md, res);
    md.push_str(
        "\n**Dispersion**: the held-out reference answers' per-token log-prob (the chosen side of the held-out off/off \
         pairs) and the per-token entropy of the model's own samples (mean -log p per token of one sample per held-out \
         prompt), per method. A falling reference log-prob with a rising entropy means probability mass moving to \
         responses that are neither in the data nor right.\n\n",
    );
    header(md, &["method", "scenario", "seed", "held-out reference log-prob / token", "sample entropy / token"]);
    for m in models(res, |_| true) {
        let seed = seed_of(m).map_or("-".into(), |s| s.to_string());
        row(
            md,
            &[
                m["method"].as_str().unwrap_or("").into(),
                m["scenario"].as_str().unwrap_or("").replace('_', " / "),
                seed,
                num(get(m, &["heldout_reference", "eval_logps/chosen_token_mean"])),
                num(get(m, &["entropy_per_token"])),
            ],
        );
    }
    let sft = model(res, "sft");
    let dpo_ref = over(&dpo_on, &["heldout_reference", "eval_logps/chosen_token_mean"]);
    let sft_ref = sft.and_then(|m| get(m, &["heldout_reference", "eval_logps/chosen_token_mean"]));
    writeln!(
        md,
        "\nPaper: DPO disperses probability away from good responses it never saw. Held-out reference log-prob under \
         DPO (on / on) lower than under the SFT model: {} ({} vs {}).\n",
        verdict(dpo_ref.zip(sft_ref).map(|(d, s)| d < s)),
        num(dpo_ref),
        num(sft_ref)
    )
    .expect("string");
}

fn rm_vs_dpo(md: &mut String, dir: &Path, res: &Value) {
    md.push_str("## Figures 5/7/8 analogue: reward model vs DPO's implicit reward\n\n");
    let rm_eval = series(&metrics(dir, "rm"), "eval_rewards/accuracies");
    let dpo_run = dpo_seeds(res, "on_on").first().and_then(|m| m["name"].as_str().map(String::from));
    let dpo_rows = dpo_run.as_deref().map(|r| metrics(dir, r)).unwrap_or_default();
    let dpo_eval = series(&dpo_rows, "eval_rewards/accuracies");
    let dpo_train = series(&dpo_rows, "rewards/accuracies");
    let changes = |v: &[(f64, f64)]| mean(&v.windows(2).map(|w| (w[1].1 - w[0].1).abs()).collect::<Vec<_>>());
    let epochs = res["profile"]["pref_epochs"].as_f64().unwrap_or(1.0);
    let last_epoch: Vec<f64> = {
        let n = dpo_train.len();
        let k = (n as f64 / epochs.max(1.0)).round() as usize;
        dpo_train[n.saturating_sub(k)..].iter().map(|x| x.1).collect()
    };
    writeln!(
        md,
        "- Held-out pairwise accuracy: reward model {} at the end (mean change between evaluations {}), DPO's implicit \
         reward {} (mean change {}).\n- DPO's accuracy on its training batches over the last epoch: {} (held-out: {}).",
        num(rm_eval.last().map(|x| x.1)),
        num(changes(&rm_eval)),
        num(dpo_eval.last().map(|x| x.1)),
        num(changes(&dpo_eval)),
        num(mean(&last_epoch)),
        num(dpo_eval.last().map(|x| x.1))
    )
    .expect("string");
    let smoother = changes(&rm_eval).zip(changes(&dpo_eval)).map(|(a, b)| a <= b);
    let overfit = mean(&last_epoch).zip(dpo_eval.last().map(|x| x.1)).map(|(t, h)| t > h);
    writeln!(
        md,
        "- Paper: the reward model's held-out accuracy is smooth and stable while DPO's fluctuates; DPO's training \
         accuracy reaches 100% within the first epoch (it overfits). Reward model smoother here: {}; DPO's training \
         accuracy above its held-out accuracy: {}; at 100%: {}.\n",
        verdict(smoother),
        verdict(overfit),
        verdict(mean(&last_epoch).map(|t| t >= 0.999))
    )
    .expect("string");
}

/// Flex-DPO's runs grouped by beta_neg (each group: its seeds), in the order the study trained them.
fn flex_groups(res: &Value) -> Vec<(f64, Vec<&Value>)> {
    let mut groups: Vec<(f64, Vec<&Value>)> = Vec::new();
    for m in models(res, |m| m["method"].as_str().is_some_and(|s| s.starts_with("Flex"))) {
        let bn = m["method"].as_str().and_then(|s| s.rsplit(' ').next()?.parse().ok()).unwrap_or(f64::NAN);
        match groups.iter_mut().find(|g| g.0 == bn) {
            Some(g) => g.1.push(m),
            None => groups.push((bn, vec![m])),
        }
    }
    groups
}

fn beta_neg_sweep(md: &mut String, res: &Value, task: &str) {
    let n = res["profile"]["eval_rows"].as_f64().unwrap_or(1.0);
    md.push_str("## Figure 4 analogue: Flex-DPO's beta_neg sweep\n\n");
    let groups = flex_groups(res);
    let seeds = groups.iter().map(|g| g.1.len()).max().unwrap_or(1);
    header(md, &["beta_neg (beta_pos 0.1)", "full", "per seed", "mean score"]);
    let mut sweep = Vec::new();
    for (bn, ms) in &groups {
        sweep.push((*bn, full(res, ms).unwrap_or(f64::NAN)));
        let per: Vec<String> = ms.iter().map(|m| pct(full(res, &[m]))).collect();
        row(md, &[format!("{bn}"), pct(full(res, ms)), per.join(", "), num(over(ms, &["greedy", "judge/score_mean"]))]);
    }
    let dpo_on = dpo_seeds(res, "on_on");
    let dpo_per: Vec<String> = dpo_on.iter().map(|m| pct(full(res, &[m]))).collect();
    row(
        md,
        &[
            "DPO (beta_neg = beta_pos = 0.1)".into(),
            pct(full(res, &dpo_on)),
            dpo_per.join(", "),
            num(over(&dpo_on, &["greedy", "judge/score_mean"])),
        ],
    );
    let peak = sweep
        .iter()
        .cloned()
        .fold(None, |a: Option<(f64, f64)>, b| if a.is_none_or(|a| b.1 > a.1) { Some(b) } else { a });
    let at = |bn: f64| sweep.iter().find(|x| (x.0 - bn).abs() < 1e-9).map(|x| x.1);
    let at08 = at(0.08);
    writeln!(
        md,
        "\n\"full\" is the mean over {seeds} seed(s) of each run (the same pairs in another order); the noise below \
         is that of {n} prompts, not less, since every seed answers the same prompts. Paper: the \
         instruction-following score peaks near beta_neg 0.08 ({}). Here ({task}) the best beta_neg is {} ({}); 0.08 \
         against it: {}.\n",
        if task == "poem" { "the same kind of task" } else { "measured on its instruction tasks, not on math" },
        peak.map(|p| format!("{}", p.0)).unwrap_or("-".into()),
        pct(peak.map(|p| p.1)),
        if peak.is_some_and(|p| (p.0 - 0.08).abs() < 1e-9) {
            "**agrees** (0.08 is the best)".to_string()
        } else {
            ordering(at08, peak.map(|p| p.1), n)
        }
    )
    .expect("string");
    if task == "math" {
        // The paper's one statement on math: beta_neg 0.01 works well there.
        if let (Some(a), Some(b)) = (at(0.01), at08) {
            writeln!(
                md,
                "Paper: beta_neg 0.01 reported good on math. Here 0.01 ({}) against 0.08 ({}): {}; against DPO ({}): \
                 {}.\n",
                pct(Some(a)),
                pct(Some(b)),
                ordering(Some(a), Some(b), n),
                pct(full(res, &dpo_on)),
                ordering(Some(a), full(res, &dpo_on), n)
            )
            .expect("string");
        }
    }
}

fn choices(md: &mut String, tasks: &Map<String, Value>) {
    md.push_str("# Choices made here\n\n");
    let Some(p) = tasks.values().next().map(|r| &r["profile"]) else { return };
    writeln!(
        md,
        "- beta {} for every DPO-family loss (the paper's 0.1); Flex-DPO's beta_pos = beta; IPO eta 0.1; SLiC delta 5, \
         eta 0.1; SFT-DPO gamma 1. Learning rate {} (constant; 5e-5 to 3e-3 were tried on the math pairs, and every \
         one lowered the held-out full-score rate, more with a larger rate), batch {} pairs, {} epochs (the paper \
         trains 1 epoch at batch 80 on thousands of pairs).",
        p["beta"], p["pref_lr"], p["pref_batch"], p["pref_epochs"]
    )
    .expect("string");
    writeln!(
        md,
        "- The reward model: the SFT model with a scalar head, Bradley-Terry loss on the same on/on pairs, learning \
         rate {}. PPO: {} steps of {} prompts from the training prompts, learning rate {}, KL coefficient 0.05, \
         responses as long as the generated answers.",
        p["rm_lr"], p["ppo_steps"], p["ppo_batch"], p["ppo_lr"]
    )
    .expect("string");
    md.push_str(
        "- SFT runs until the held-out full rate is partial, so preference training has room to help; the weaker \
         \"other model\" of the off-policy pairs is an early SFT checkpoint.\n- Evaluation is greedy (one deterministic \
         answer per held-out prompt), so differences come from training, not from sampling noise; the sampled column \
         shows the same at temperature 1.\n",
    );
}

/// The token-level table: per-token log-probs by category over DPO training (from `token_categories`).
fn token_level(md: &mut String, res: &Value) {
    let points = res["token_level"]["points"].as_array().cloned().unwrap_or_default();
    if points.is_empty() {
        return;
    }
    writeln!(
        md,
        "\n**Which tokens lose probability** (`{}` at its checkpoints, every response token of the training pairs, \
         `dpo3d eval --token-logps`). The chosen response's tokens split into the prefix it shares with the rejected \
         one (same context, so equal in both and untouched by DPO's gradient except through shared weights), tokens \
         after the divergence whose id also occurs in the rest of the rejected response, and tokens that do not. The \
         paper explains the chosen likelihood's fall by such sharing: pushing the rejected tokens down pushes the same \
         tokens down in the chosen response.\n",
        res["token_level"]["run"].as_str().unwrap_or("?")
    )
    .expect("string");
    header(md, &["step", "shared prefix", "chosen, id also in rejected", "chosen only", "rejected (after divergence)"]);
    for pt in &points {
        let cell = |k: &str| format!("{} ({})", num(pt[k].as_f64()), pt[format!("{k}_tokens").as_str()]);
        row(
            md,
            &[
                pt["step"].to_string(),
                cell("shared"),
                cell("chosen_in_both"),
                cell("chosen_only"),
                cell("rejected_rest"),
            ],
        );
    }
    let first = points.first().expect("non-empty");
    let last = points.last().expect("non-empty");
    let change = |k: &str| Some(last[k].as_f64()? - first[k].as_f64()?);
    let (both, only, rej) = (change("chosen_in_both"), change("chosen_only"), change("rejected_rest"));
    let claim = match (both, only) {
        (Some(b), Some(o)) => Some(b < o),
        _ => None,
    };
    writeln!(
        md,
        "\n(mean log-prob per token, token count in brackets). From the first to the last point: chosen tokens also in \
         the rejected response {}, chosen-only tokens {}, rejected tokens {}. The paper's mechanism predicts the shared \
         ids to fare worse than the chosen-only ones: {}.\n",
        num(both),
        num(only),
        num(rej),
        verdict(claim)
    )
    .expect("string");
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(127, 127, 127),
];

/// One line chart (series of (x, y) points) as an SVG file; nothing is written when every series is empty.
fn chart(path: &Path, title: &str, xlabel: &str, ylabel: &str, lines: &[(String, Vec<(f64, f64)>)]) -> R<()> {
    let pts: Vec<(f64, f64)> = lines.iter().flat_map(|l| l.1.iter().cloned()).filter(|p| p.1.is_finite()).collect();
    if pts.is_empty() {
        return Ok(());
    }
    let (x0, x1) = pts.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let (y0, y1) = pts.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    let pad = ((y1 - y0) * 0.08).max(1e-3);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut ch = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (y0 - pad)..(y1 + pad))
            .map_err(|e| e.to_string())?;
        ch.configure_mesh().x_desc(xlabel).y_desc(ylabel).draw().map_err(|e| e.to_string())?;
        for (i, (name, pts)) in lines.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            ch.draw_series(LineSeries::new(pts.iter().cloned().filter(|p| p.1.is_finite()), c.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        }
        ch.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::LowerLeft)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    dpo3d::checkpoint::write_atomic(path, svg.as_bytes()).map_err(|e| e.to_string())
}

/// The task's figures: figures/<task>_accuracy.svg, <task>_logps.svg, <task>_beta_neg.svg.
fn figures(out: &Path, task: &str, dir: &Path, res: &Value) -> R<()> {
    let f = out.join("figures");
    let dpo_run = dpo_seeds(res, "on_on").first().and_then(|m| m["name"].as_str().map(String::from));
    let dpo_rows = dpo_run.as_deref().map(|r| metrics(dir, r)).unwrap_or_default();
    chart(
        &f.join(format!("{task}_accuracy.svg")),
        &format!("{task}: pairwise accuracy over training"),
        "step",
        "accuracy",
        &[
            ("reward model, held-out".into(), series(&metrics(dir, "rm"), "eval_rewards/accuracies")),
            ("DPO implicit reward, held-out".into(), series(&dpo_rows, "eval_rewards/accuracies")),
            ("DPO, training batch".into(), series(&dpo_rows, "rewards/accuracies")),
        ],
    )?;
    let mut lines = Vec::new();
    for sc in ["on_on", "on_off", "off_on", "off_off"] {
        if let Some(run) = dpo_seeds(res, sc).first().and_then(|m| m["name"].as_str()) {
            let rows = metrics(dir, run);
            lines.push((format!("{} chosen", sc.replace('_', "/")), series(&rows, "logps/chosen_token_mean")));
            lines.push((format!("{} rejected", sc.replace('_', "/")), series(&rows, "logps/rejected_token_mean")));
        }
    }
    chart(
        &f.join(format!("{task}_logps.svg")),
        &format!("{task}: DPO, per-token log-prob of the training batch"),
        "step",
        "log-prob / token",
        &lines,
    )?;
    // The mean over each beta_neg's seeds.
    let mut pts: Vec<(f64, f64)> =
        flex_groups(res).into_iter().filter_map(|(bn, ms)| Some((bn, full(res, &ms)?))).collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    if pts.len() > 1 {
        chart(
            &f.join(format!("{task}_beta_neg.svg")),
            &format!("{task}: held-out full rate vs Flex-DPO's beta_neg"),
            "beta_neg",
            "full rate",
            &[("Flex-DPO (beta_pos 0.1)".into(), pts)],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ppo_learnt;

    #[test]
    fn should_judge_ppo_by_its_greedy_rate_against_sft() {
        // The full profile's poem run: 44.2% against 23.8% on 500 prompts; 2 SE = 2 sqrt((.442 .558 + .238 .762) / 500)
        // = 5.85 points, so +20.4 is beyond it.
        let s = ppo_learnt(Some(0.442), Some(0.238), 500.0);
        assert!(s.contains("+20.4 points") && s.contains("= 5.9)") && s.contains("it learnt"), "{s}");
        // The small profile's: 43.0% against 35.9% on 256 prompts, 2 SE = 8.6 points: within it.
        let s = ppo_learnt(Some(0.430), Some(0.359), 256.0);
        assert!(s.contains("+7.1 points") && s.contains("= 8.6)") && s.contains("has not learnt"), "{s}");
        // Below SFT beyond the noise is not learning either.
        assert!(ppo_learnt(Some(0.1), Some(0.4), 500.0).contains("has not learnt"));
        assert!(ppo_learnt(None, Some(0.4), 500.0).contains("cannot be told"));
    }
}
