//! What a run leaves in `output_dir`: `metrics.jsonl` (TRL's metric names, one JSON object per logged step, eval
//! metrics prefixed `eval_`), `checkpoint-N/` directories (model, tokenizer, resolved config, trainer and optimizer
//! state), the final model at the top level, and `plots/*.svg`. Every file is written atomically, and a directory
//! that already holds a run is never written over without `--resume` or `overwrite_output_dir`.

use std::path::{Path, PathBuf};

use dpo3d::checkpoint::{save_gpt, write_atomic};
use dpo3d::model::GptConfig;
use dpo3d::{Error, Result};
use serde_json::{Map, Value};

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CONFIG_FILE: &str = "training_config.yaml";

/// The checkpoint-N directories of `out` that are complete (they hold trainer_state.json), by N.
pub fn checkpoints(out: &Path) -> Vec<(usize, PathBuf)> {
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(out)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n = name.strip_prefix("checkpoint-")?.parse::<usize>().ok()?;
            let p = e.path();
            p.join(dpo3d::train::state::TRAINER_STATE_FILE).is_file().then_some((n, p))
        })
        .collect();
    v.sort();
    v
}

/// Refuses to start a fresh run over an existing one, unless asked to overwrite (then stale checkpoints go, so a
/// later `--resume` cannot pick one of them up).
pub fn prepare_output_dir(out: &Path, resume: bool, overwrite: bool) -> Result<()> {
    let holds_run = out.join(METRICS_FILE).exists() || out.join("model.safetensors").exists();
    let ckpts = checkpoints(out);
    if resume {
        if ckpts.is_empty() {
            return Err(Error::config(format!(
                "--resume: no checkpoint-N with trainer_state.json in {}",
                out.display()
            )));
        }
    } else if holds_run || !ckpts.is_empty() {
        if !overwrite {
            return Err(Error::config(format!(
                "output_dir {} already holds a run: pass --resume to continue it, --overwrite-output-dir to start \
                 over, or another --output-dir",
                out.display()
            )));
        }
        for (_, p) in ckpts {
            std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))
}

/// A model directory: model.safetensors + config.json (HF GPT-2), tokenizer.json when there is one, and the
/// resolved training config.
pub fn save_model(
    dir: &Path,
    mcfg: &GptConfig,
    params: &[f32],
    tokenizer: Option<&str>,
    config_yaml: &str,
) -> Result<()> {
    save_gpt(dir, mcfg, params)?;
    if let Some(t) = tokenizer {
        write_atomic(&dir.join("tokenizer.json"), t.as_bytes())?;
    }
    write_atomic(&dir.join(CONFIG_FILE), config_yaml.as_bytes())
}

/// The logged rows, kept in memory and rewritten atomically at every log.
pub struct Metrics {
    pub path: PathBuf,
    pub rows: Vec<Map<String, Value>>,
    /// The rows as written (an earlier run's lines are kept byte for byte when resuming).
    lines: Vec<String>,
}

impl Metrics {
    /// Fresh, or (resuming from `step`) the rows of the earlier run up to that step.
    pub fn open(out: &Path, resume_step: Option<usize>) -> Result<Metrics> {
        let path = out.join(METRICS_FILE);
        let (mut rows, mut lines) = (Vec::new(), Vec::new());
        if let (Some(step), true) = (resume_step, path.exists()) {
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let row: Map<String, Value> = serde_json::from_str(line).map_err(|e| Error::Data {
                    path: path.display().to_string(),
                    line: i + 1,
                    msg: e.to_string(),
                })?;
                if row.get("step").and_then(Value::as_u64).unwrap_or(0) as usize <= step {
                    rows.push(row);
                    lines.push(line.to_string());
                }
            }
        }
        Ok(Metrics { path, rows, lines })
    }

    pub fn log(&mut self, row: Map<String, Value>) -> Result<()> {
        self.lines.push(serde_json::to_string(&row).expect("row serializes"));
        self.rows.push(row);
        let mut text = String::new();
        for l in &self.lines {
            text.push_str(l);
            text.push('\n');
        }
        write_atomic(&self.path, text.as_bytes())
    }

    /// One SVG per logged metric (loss, rewards/margins, eval_loss, learning_rate, ...) in `out/plots`.
    pub fn plot(&self, out: &Path) -> Result<()> {
        let dir = out.join("plots");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut keys: Vec<String> = Vec::new();
        for r in &self.rows {
            for (k, v) in r {
                if k != "step" && k != "epoch" && v.is_number() && !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
        }
        for k in keys {
            let pts: Vec<(f64, f64)> = self
                .rows
                .iter()
                .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(&k)?.as_f64()?)))
                .filter(|(_, y)| y.is_finite())
                .collect();
            if pts.is_empty() {
                continue;
            }
            let file = dir.join(format!("{}.svg", k.replace('/', "_")));
            let svg = line_plot(&k, &pts).map_err(|e| Error::config(format!("plot {k}: {e}")))?;
            write_atomic(&file, svg.as_bytes())?;
        }
        Ok(())
    }
}

fn line_plot(title: &str, pts: &[(f64, f64)]) -> std::result::Result<String, Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 400)).into_drawing_area();
        root.fill(&WHITE)?;
        let (x0, x1) =
            (pts.iter().map(|p| p.0).fold(f64::MAX, f64::min), pts.iter().map(|p| p.0).fold(f64::MIN, f64::max));
        let (mut y0, mut y1) =
            (pts.iter().map(|p| p.1).fold(f64::MAX, f64::min), pts.iter().map(|p| p.1).fold(f64::MIN, f64::max));
        if y1 - y0 < 1e-9 {
            y0 -= 0.5;
            y1 += 0.5;
        }
        let pad = 0.05 * (y1 - y0);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))?;
        chart.configure_mesh().x_desc("step").draw()?;
        chart.draw_series(LineSeries::new(pts.iter().copied(), &BLUE))?;
        root.present()?;
    }
    Ok(svg)
}

/// The file in each checkpoint that lists the kernel the tuner chose for each op and shape (`dpo3d::gpu::tune`) on
/// the adapter the run trained on: `{"adapter": "name | backend | driver", "choices": {"family shape": kernel}}`.
pub const KERNELS_FILE: &str = "kernels.json";

/// Write `KERNELS_FILE` into a checkpoint directory: every kernel choice this process has made on `gpu`'s adapter.
pub fn save_kernels(gpu: &dpo3d::Gpu, dir: &Path) -> Result<()> {
    let choices = dpo3d::gpu::tune::used_choices(&gpu.tuner.adapter_key);
    let json = serde_json::json!({ "adapter": gpu.tuner.adapter_key, "choices": choices });
    let text = serde_json::to_string_pretty(&json).expect("a JSON value serializes");
    write_atomic(&dir.join(KERNELS_FILE), text.as_bytes())
}

/// For `--resume`: pin the kernel choices saved in the last checkpoint of `out` (`save_kernels`), so the resumed run
/// builds the plans the interrupted one ran with and continues it bit for bit, whatever the tuner's cache holds now.
/// On another adapter (or without the file: a checkpoint from an older version) nothing is pinned, and it says so.
pub fn pin_kernels(gpu: &dpo3d::Gpu, out: &Path) -> Result<()> {
    let Some((_, dir)) = checkpoints(out).pop() else { return Ok(()) };
    let path = dir.join(KERNELS_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!(
            "note: {} is missing; kernels are chosen afresh (results may differ in the last bits)",
            path.display()
        );
        return Ok(());
    };
    let bad = |msg: String| Error::Checkpoint { path: path.display().to_string(), msg };
    let file: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let adapter = file.get("adapter").and_then(Value::as_str).ok_or_else(|| bad("no \"adapter\"".into()))?;
    let choices: std::collections::BTreeMap<String, String> =
        serde_json::from_value(file.get("choices").cloned().unwrap_or(Value::Null)).map_err(|e| bad(e.to_string()))?;
    if adapter != gpu.tuner.adapter_key {
        eprintln!(
            "note: {} was trained on {adapter}; resuming on {}, so the kernels are chosen afresh (results may \
             differ in the last bits)",
            dir.display(),
            gpu.tuner.adapter_key
        );
        return Ok(());
    }
    gpu.tuner.pin(&choices);
    Ok(())
}
