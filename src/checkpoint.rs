//! Checkpoints on disk (native only). A GPT checkpoint is a directory Hugging Face transformers can open with
//! `GPT2LMHeadModel.from_pretrained` (or `GPT2ForSequenceClassification` for models with a scalar head):
//! - `model.safetensors`: HF's GPT-2 tensor names and layouts. HF's Conv1D layers (`attn.c_attn`, `attn.c_proj`,
//!   `mlp.c_fc`, `mlp.c_proj`) store their weight as (in, out), the transpose of dpo3d's internal (out, in), so
//!   saving and loading transpose those four; everything else is stored as is. The tied `lm_head.weight` is not
//!   written; `score.weight` (1, C) is written when the model has a scalar head.
//! - `config.json`: a GPT2Config (GELU tanh = `gelu_new`, eps 1e-5, no dropout, tied embeddings) plus a `dpo3d`
//!   object holding the [`GptConfig`].
//!
//! Every file is written atomically ([`write_atomic`]: temp file in the same directory, fsync, rename), so a crash
//! leaves either the old file or the new one. Loading checks every tensor's presence, dtype (F32) and shape and
//! names the offending tensor. [`save_tensors`]/[`load_tensors`] and [`save_packed`]/[`load_packed`] are the generic
//! forms, for the toy MLP and optimizer state.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};

use crate::model::config::GptConfig;
use crate::{Error, Result};

/// The weights file inside a GPT checkpoint directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The config file inside a GPT checkpoint directory.
pub const CONFIG_FILE: &str = "config.json";

/// One named tensor: (name, shape, row-major f32 data).
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

fn ckpt_err(path: impl AsRef<Path>, msg: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.as_ref().display().to_string(), msg: msg.into() }
}

/// Writes `bytes` to `path` so that readers see either the old file or the complete new one: the bytes go to a
/// temp file in the same directory, which is fsynced and renamed over `path` (then the directory is fsynced).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| ckpt_err(path, "not a file path"))?.to_string_lossy();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    // Make the rename itself durable. Not every platform can open a directory for syncing; the file is in place
    // either way, so a failure here is not an error.
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

// ---- generic safetensors files ------------------------------------------------------------------------------------

/// Writes F32 tensors (name, shape, data) and string metadata to a safetensors file, atomically.
pub fn save_tensors(path: &Path, tensors: &[NamedTensor], metadata: &HashMap<String, String>) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    let mut bytes = Vec::with_capacity(tensors.len());
    for (name, shape, data) in tensors {
        if !seen.insert(name.as_str()) {
            return Err(ckpt_err(path, format!("tensor {name} given twice")));
        }
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(ckpt_err(
                path,
                format!("tensor {name}: shape {shape:?} holds {n} values but {} were given", data.len()),
            ));
        }
        bytes.push(data.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
    }
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (name.as_str(), v))
                .map_err(|e| ckpt_err(path, format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = if metadata.is_empty() { None } else { Some(metadata.clone()) };
    let file = safetensors::serialize(views, meta).map_err(|e| ckpt_err(path, format!("cannot serialize: {e}")))?;
    write_atomic(path, &file)
}

fn read_safetensors(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn parse_safetensors<'a>(path: &Path, buf: &'a [u8]) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(buf).map_err(|e| ckpt_err(path, format!("not a valid safetensors file: {e}")))
}

fn f32_data(path: &Path, name: &str, view: &TensorView) -> Result<Vec<f32>> {
    if view.dtype() != Dtype::F32 {
        return Err(ckpt_err(
            path,
            format!(
                "tensor {name} has dtype {:?}; dpo3d reads F32 only (convert the checkpoint to float32)",
                view.dtype()
            ),
        ));
    }
    Ok(view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// Reads every tensor of a safetensors file (all must be F32), sorted by name, and its metadata.
pub fn load_tensors(path: &Path) -> Result<(Vec<NamedTensor>, HashMap<String, String>)> {
    let buf = read_safetensors(path)?;
    let st = parse_safetensors(path, &buf)?;
    let metadata = SafeTensors::read_metadata(&buf)
        .map_err(|e| ckpt_err(path, format!("not a valid safetensors file: {e}")))?
        .1
        .metadata()
        .clone()
        .unwrap_or_default();
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let data = f32_data(path, &name, &view)?;
        out.push((name, view.shape().to_vec(), data));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((out, metadata))
}

/// Writes a packed parameter buffer as one tensor per entry of a parameter table (`param_shapes()` order, no
/// transposes): the toy MLP, optimizer moments, ...
pub fn save_packed(
    path: &Path,
    shapes: &[(String, Vec<usize>)],
    packed: &[f32],
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let total: usize = shapes.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    if total != packed.len() {
        return Err(ckpt_err(
            path,
            format!("the parameter table holds {total} values but {} were given", packed.len()),
        ));
    }
    let mut off = 0;
    let tensors: Vec<NamedTensor> = shapes
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            off += n;
            (name.clone(), shape.clone(), packed[off - n..off].to_vec())
        })
        .collect();
    save_tensors(path, &tensors, metadata)
}

/// Reads a file written by [`save_packed`] back into one packed buffer in the table's order. Every tensor of the
/// table must be present with its exact shape; tensors the table does not name are an error.
pub fn load_packed(path: &Path, shapes: &[(String, Vec<usize>)]) -> Result<(Vec<f32>, HashMap<String, String>)> {
    let (tensors, metadata) = load_tensors(path)?;
    let mut by_name: HashMap<&str, (&Vec<usize>, &Vec<f32>)> =
        tensors.iter().map(|(n, s, d)| (n.as_str(), (s, d))).collect();
    let mut packed = Vec::new();
    for (name, shape) in shapes {
        let (s, d) = by_name.remove(name.as_str()).ok_or_else(|| ckpt_err(path, format!("missing tensor {name}")))?;
        if s != shape {
            return Err(ckpt_err(path, format!("tensor {name} has shape {s:?}, expected {shape:?}")));
        }
        packed.extend_from_slice(d);
    }
    if !by_name.is_empty() {
        let mut extra: Vec<&str> = by_name.into_keys().collect();
        extra.sort();
        return Err(ckpt_err(path, format!("unexpected tensors (not in the parameter table): {}", extra.join(", "))));
    }
    Ok((packed, metadata))
}

// ---- GPT checkpoints ----------------------------------------------------------------------------------------------

/// HF's Conv1D weights, stored (in, out): the transpose of dpo3d's (out, in).
fn is_conv1d_weight(name: &str) -> bool {
    [".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight"]
        .iter()
        .any(|s| name.ends_with(s))
}

/// (rows, cols) row-major -> (cols, rows) row-major.
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = x[r * cols + c];
        }
    }
    out
}

/// GPT-2's `<|endoftext|>` (50256) when the vocabulary has it, else the last id.
fn eos_id(cfg: &GptConfig) -> usize {
    (cfg.vocab_size - 1).min(50256)
}

/// The `config.json` of a GPT checkpoint: a GPT2Config plus the `dpo3d` object.
pub fn gpt2_config_json(cfg: &GptConfig) -> Value {
    let eos = eos_id(cfg);
    let mut v = json!({
        "model_type": "gpt2",
        "architectures": [if cfg.scalar_head { "GPT2ForSequenceClassification" } else { "GPT2LMHeadModel" }],
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context,
        "n_ctx": cfg.context,
        "n_embd": cfg.width,
        "n_layer": cfg.layers,
        "n_head": cfg.heads,
        "n_inner": null,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "scale_attn_weights": true,
        "scale_attn_by_inverse_layer_idx": false,
        "tie_word_embeddings": true,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "torch_dtype": "float32",
        "dpo3d": cfg,
    });
    if cfg.scalar_head {
        let obj = v.as_object_mut().expect("object");
        obj.insert("num_labels".into(), json!(1));
        obj.insert("id2label".into(), json!({"0": "LABEL_0"}));
        obj.insert("label2id".into(), json!({"LABEL_0": 0}));
        // GPT2ForSequenceClassification scores the last non-pad token and needs a pad id to find it for B > 1.
        obj.insert("pad_token_id".into(), json!(eos));
    }
    v
}

/// Reads a GptConfig from a GPT2Config `config.json` value (the `dpo3d` object, when present, must agree with it).
/// Rejects GPT-2 variants dpo3d does not implement rather than load them wrongly.
pub fn gpt_config_from_json(v: &Value, path: &Path) -> Result<GptConfig> {
    let err = |msg: String| ckpt_err(path, msg);
    let obj = v.as_object().ok_or_else(|| err("config.json is not a JSON object".into()))?;
    if let Some(mt) = obj.get("model_type") {
        if mt != "gpt2" {
            return Err(err(format!("model_type is {mt}, dpo3d loads only \"gpt2\"")));
        }
    }
    let size = |key: &str| -> Result<usize> {
        match obj.get(key) {
            None => Err(err(format!("config.json has no `{key}`"))),
            Some(x) => x
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| err(format!("`{key}` is {x}, expected a positive integer"))),
        }
    };
    let context = if obj.contains_key("n_positions") { size("n_positions")? } else { size("n_ctx")? };
    let width = size("n_embd")?;
    let architectures: Vec<&str> = obj
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let scalar_head = architectures.contains(&"GPT2ForSequenceClassification");
    let derived = GptConfig {
        vocab_size: size("vocab_size")?,
        context,
        layers: size("n_layer")?,
        heads: size("n_head")?,
        width,
        scalar_head,
    };
    // Variants dpo3d's kernels do not compute.
    match obj.get("n_inner") {
        None | Some(Value::Null) => {}
        Some(x) if x.as_u64() == Some(4 * width as u64) => {}
        Some(x) => return Err(err(format!("n_inner is {x}; dpo3d's MLP is 4 * n_embd = {}", 4 * width))),
    }
    if let Some(a) = obj.get("activation_function") {
        if a != "gelu_new" && a != "gelu_pytorch_tanh" {
            return Err(err(format!("activation_function is {a}; dpo3d computes the tanh GELU (\"gelu_new\")")));
        }
    }
    if let Some(e) = obj.get("layer_norm_epsilon").and_then(Value::as_f64) {
        if (e - 1e-5).abs() > 1e-12 {
            return Err(err(format!("layer_norm_epsilon is {e}; dpo3d's layernorm uses 1e-5")));
        }
    }
    if obj.get("tie_word_embeddings") == Some(&Value::Bool(false)) {
        return Err(err("tie_word_embeddings is false; dpo3d ties lm_head to wte".into()));
    }
    if obj.get("scale_attn_weights") == Some(&Value::Bool(false)) {
        return Err(err("scale_attn_weights is false; dpo3d scales attention by 1/sqrt(head size)".into()));
    }
    if obj.get("scale_attn_by_inverse_layer_idx") == Some(&Value::Bool(true)) {
        return Err(err("scale_attn_by_inverse_layer_idx is true; dpo3d does not implement it".into()));
    }
    if scalar_head {
        let labels =
            match (obj.get("num_labels").and_then(Value::as_u64), obj.get("id2label").and_then(Value::as_object)) {
                (Some(n), _) => n as usize,
                (None, Some(m)) => m.len(),
                (None, None) => 2, // GPT2Config's default
            };
        if labels != 1 {
            return Err(err(format!("GPT2ForSequenceClassification with {labels} labels; dpo3d's scalar head has 1")));
        }
    }
    if let Some(d) = obj.get("dpo3d") {
        let own: GptConfig = serde_json::from_value(d.clone())
            .map_err(|e| err(format!("the `dpo3d` object is not a GptConfig: {e}")))?;
        if own != derived {
            return Err(err(format!("the `dpo3d` object {own:?} disagrees with the GPT2Config fields {derived:?}")));
        }
    }
    derived.validate()?;
    Ok(derived)
}

/// Saves a GPT checkpoint directory (created if needed): `model.safetensors` and `config.json`, each atomically.
/// `params` is packed in `cfg.param_shapes()` order.
pub fn save_gpt(dir: &Path, cfg: &GptConfig, params: &[f32]) -> Result<()> {
    cfg.validate()?;
    let shapes = cfg.param_shapes();
    let total: usize = shapes.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    if params.len() != total {
        return Err(ckpt_err(dir, format!("the config has {total} parameters but {} were given", params.len())));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut off = 0;
    let mut tensors = Vec::with_capacity(shapes.len());
    for (name, shape) in shapes {
        let n: usize = shape.iter().product();
        let data = &params[off..off + n];
        off += n;
        if is_conv1d_weight(&name) {
            let (out, inp) = (shape[0], shape[1]);
            tensors.push((name, vec![inp, out], transpose(data, out, inp)));
        } else {
            tensors.push((name, shape, data.to_vec()));
        }
    }
    // transformers refuses safetensors files without a "format" entry.
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    save_tensors(&dir.join(WEIGHTS_FILE), &tensors, &metadata)?;
    let config = serde_json::to_string_pretty(&gpt2_config_json(cfg)).expect("config serializes");
    write_atomic(&dir.join(CONFIG_FILE), config.as_bytes())
}

/// Loads a GPT checkpoint directory written by [`save_gpt`] or by transformers' `save_pretrained` (GPT-2, float32):
/// the config and the parameters packed in `param_shapes()` order (Conv1D weights transposed back to (out, in)).
/// Tensor names may carry the `transformer.` prefix or not; a stored `lm_head.weight` must equal `wte` (tied);
/// HF's attention-mask buffers (`attn.bias`, `attn.masked_bias`) are ignored; any other unknown tensor is an error.
pub fn load_gpt(dir: &Path) -> Result<(GptConfig, Vec<f32>)> {
    let config_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| ckpt_err(&config_path, format!("config.json is not valid JSON: {e}")))?;
    let cfg = gpt_config_from_json(&json, &config_path)?;

    let path = dir.join(WEIGHTS_FILE);
    let buf = read_safetensors(&path)?;
    let st = parse_safetensors(&path, &buf)?;
    let mut by_name: HashMap<String, (String, TensorView)> = HashMap::new();
    let mut unknown = Vec::new();
    for (stored, view) in st.tensors() {
        let name = if stored.starts_with("transformer.") || stored == "score.weight" || stored == "lm_head.weight" {
            stored.clone()
        } else {
            format!("transformer.{stored}")
        };
        if name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") {
            continue; // causal-mask buffers of older transformers versions, not parameters
        }
        if let Some((first, _)) = by_name.get(&name) {
            return Err(ckpt_err(&path, format!("tensor {name} is stored twice (as {first} and {stored})")));
        }
        by_name.insert(name, (stored, view));
    }

    let mut params = Vec::with_capacity(cfg.num_params());
    let mut wte = Vec::new();
    for (name, shape) in cfg.param_shapes() {
        let (stored, view) =
            by_name.remove(&name).ok_or_else(|| ckpt_err(&path, format!("missing tensor {name} (config: {cfg:?})")))?;
        let conv = is_conv1d_weight(&name);
        let expect = if conv { vec![shape[1], shape[0]] } else { shape.clone() };
        if view.shape() != expect.as_slice() {
            let layout = if conv { " (HF Conv1D layout, (in, out))" } else { "" };
            return Err(ckpt_err(
                &path,
                format!("tensor {stored} has shape {:?}, expected {expect:?}{layout} for {cfg:?}", view.shape()),
            ));
        }
        let data = f32_data(&path, &stored, &view)?;
        if conv {
            params.extend(transpose(&data, shape[1], shape[0]));
        } else {
            if name == "transformer.wte.weight" {
                wte = data.clone();
            }
            params.extend(data);
        }
    }
    if let Some((stored, view)) = by_name.remove("lm_head.weight") {
        let expect = [cfg.vocab_size, cfg.width];
        if view.shape() != expect {
            return Err(ckpt_err(&path, format!("tensor {stored} has shape {:?}, expected {expect:?}", view.shape())));
        }
        let head = f32_data(&path, &stored, &view)?;
        if head.iter().zip(&wte).any(|(a, b)| a.to_bits() != b.to_bits()) {
            return Err(ckpt_err(&path, "lm_head.weight differs from transformer.wte.weight; dpo3d ties them"));
        }
    }
    unknown.extend(by_name.into_values().map(|(stored, _)| stored));
    if !unknown.is_empty() {
        unknown.sort();
        return Err(ckpt_err(&path, format!("unexpected tensors for {cfg:?}: {}", unknown.join(", "))));
    }
    Ok((cfg, params))
}
