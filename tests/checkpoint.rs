//! Checkpoints: GPT save/load round trips bit-exactly; the files follow Hugging Face's GPT-2 layout (checked by
//! parsing the safetensors header by hand, independently of the safetensors crate); broken checkpoints give errors
//! that name the tensor; the generic tensor files and atomic writes work.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dpo3d::checkpoint::{load_gpt, load_packed, load_tensors, save_gpt, save_packed, save_tensors, write_atomic};
use dpo3d::model::config::{GptConfig, MlpConfig};
use dpo3d::rng::Rng;
use serde_json::Value;

fn tmp_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("checkpoint-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// V, T, L, NH, C all distinct (and C not 3C or 4C of anything else) so a swapped or untransposed axis shows.
fn tiny(scalar_head: bool) -> GptConfig {
    GptConfig { vocab_size: 11, context: 7, layers: 2, heads: 2, width: 6, scalar_head }
}

fn params_for(cfg: &GptConfig, seed: u64) -> Vec<f32> {
    let mut p = vec![0f32; cfg.num_params()];
    Rng::new(seed).fill_normal(&mut p, 1.0);
    // Values a lossy path would change.
    p[0] = -0.0;
    p[1] = f32::MIN_POSITIVE / 3.0; // subnormal
    p[2] = f32::MAX;
    p[3] = 1.0 + f32::EPSILON;
    p
}

/// Offset and shape of a tensor in the packed buffer.
fn slot(cfg: &GptConfig, name: &str) -> (usize, Vec<usize>) {
    let mut off = 0;
    for (n, s) in cfg.param_shapes() {
        if n == name {
            return (off, s);
        }
        off += s.iter().product::<usize>();
    }
    panic!("no {name}");
}

/// The safetensors header, parsed by hand: 8-byte little-endian length, then JSON.
fn header(path: &Path) -> (serde_json::Map<String, Value>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let json: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (json.as_object().unwrap().clone(), bytes[8 + n..].to_vec())
}

fn assert_bits_eq(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "param {i}: {a} vs {b}");
    }
}

#[test]
fn should_round_trip_gpt_checkpoint_bit_exact() {
    for scalar_head in [false, true] {
        let dir = tmp_dir(&format!("roundtrip-{scalar_head}"));
        let cfg = tiny(scalar_head);
        let params = params_for(&cfg, 5);
        save_gpt(&dir, &cfg, &params).unwrap();
        let (cfg2, params2) = load_gpt(&dir).unwrap();
        assert_eq!(cfg2, cfg);
        assert_bits_eq(&params2, &params);
        // Saving again over the old files works and leaves no temp files behind.
        save_gpt(&dir, &cfg, &params2).unwrap();
        let mut names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, vec!["config.json", "model.safetensors"]);
    }
}

#[test]
fn should_write_hf_gpt2_names_and_transposed_conv1d_weights() {
    let dir = tmp_dir("layout");
    let cfg = tiny(true);
    let c = cfg.width;
    let params = params_for(&cfg, 6);
    save_gpt(&dir, &cfg, &params).unwrap();
    let (hdr, data) = header(&dir.join("model.safetensors"));

    assert_eq!(hdr["__metadata__"]["format"], "pt", "transformers needs the format entry");
    let mut stored: Vec<&str> = hdr.keys().map(String::as_str).filter(|k| *k != "__metadata__").collect();
    stored.sort();
    let mut expected: Vec<String> = cfg.param_shapes().into_iter().map(|(n, _)| n).collect();
    expected.sort();
    assert_eq!(stored, expected, "HF names, no lm_head (tied)");
    assert!(stored.contains(&"transformer.h.1.attn.c_attn.weight") && stored.contains(&"score.weight"));

    // Every tensor is F32; Conv1D weights are (in, out), everything else as internal; the data is the transpose.
    for (name, shape) in cfg.param_shapes() {
        let info = &hdr[&name];
        assert_eq!(info["dtype"], "F32", "{name}");
        let conv = ["attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"]
            .iter()
            .any(|s| name.ends_with(s));
        let want: Vec<usize> = if conv { vec![shape[1], shape[0]] } else { shape.clone() };
        let got: Vec<usize> = info["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        assert_eq!(got, want, "{name}");

        let (begin, end) =
            (info["data_offsets"][0].as_u64().unwrap() as usize, info["data_offsets"][1].as_u64().unwrap() as usize);
        let file: Vec<f32> =
            data[begin..end].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let (off, _) = slot(&cfg, &name);
        let internal = &params[off..off + file.len()];
        if conv {
            let (out, inp) = (shape[0], shape[1]);
            for o in 0..out {
                for i in 0..inp {
                    assert_eq!(file[i * out + o].to_bits(), internal[o * inp + i].to_bits(), "{name}[{o},{i}]");
                }
            }
        } else {
            assert_bits_eq(&file, internal);
        }
    }
    assert_eq!(hdr["transformer.h.0.attn.c_attn.weight"]["shape"], serde_json::json!([c, 3 * c]));
    assert_eq!(hdr["transformer.h.0.mlp.c_proj.weight"]["shape"], serde_json::json!([4 * c, c]));
    assert_eq!(hdr["score.weight"]["shape"], serde_json::json!([1, c]));
}

#[test]
fn should_write_gpt2_config_fields() {
    for scalar_head in [false, true] {
        let dir = tmp_dir(&format!("config-{scalar_head}"));
        let cfg = tiny(scalar_head);
        save_gpt(&dir, &cfg, &params_for(&cfg, 7)).unwrap();
        let j: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(j["model_type"], "gpt2");
        let arch = if scalar_head { "GPT2ForSequenceClassification" } else { "GPT2LMHeadModel" };
        assert_eq!(j["architectures"], serde_json::json!([arch]));
        for (key, want) in
            [("vocab_size", 11), ("n_positions", 7), ("n_ctx", 7), ("n_embd", 6), ("n_layer", 2), ("n_head", 2)]
        {
            assert_eq!(j[key], want, "{key}");
        }
        assert!(j.get("n_inner").unwrap().is_null());
        assert_eq!(j["activation_function"], "gelu_new");
        assert_eq!(j["layer_norm_epsilon"], 1e-5);
        for key in ["resid_pdrop", "embd_pdrop", "attn_pdrop"] {
            assert_eq!(j[key], 0.0, "{key}");
        }
        assert_eq!(j["tie_word_embeddings"], true);
        assert_eq!(j["bos_token_id"], 10, "last id when the vocabulary is smaller than GPT-2's");
        assert_eq!(j["eos_token_id"], 10);
        let own: GptConfig = serde_json::from_value(j["dpo3d"].clone()).unwrap();
        assert_eq!(own, cfg);
        if scalar_head {
            assert_eq!(j["num_labels"], 1);
            assert_eq!(j["id2label"].as_object().unwrap().len(), 1);
        }
    }
    let gpt2 = GptConfig { vocab_size: 50257, context: 1024, layers: 12, heads: 12, width: 768, scalar_head: false };
    assert_eq!(dpo3d::checkpoint::gpt2_config_json(&gpt2)["eos_token_id"], 50256);
}

fn rewrite_weights(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) {
    let path = dir.join("model.safetensors");
    let (mut tensors, meta) = load_tensors(&path).unwrap();
    edit(&mut tensors);
    save_tensors(&path, &tensors, &meta).unwrap();
}

fn saved(name: &str) -> (PathBuf, GptConfig, Vec<f32>) {
    let dir = tmp_dir(name);
    let cfg = tiny(false);
    let params = params_for(&cfg, 8);
    save_gpt(&dir, &cfg, &params).unwrap();
    (dir, cfg, params)
}

#[test]
fn should_name_a_missing_tensor() {
    let (dir, _, _) = saved("missing");
    rewrite_weights(&dir, |t| t.retain(|(n, _, _)| n != "transformer.h.1.ln_2.bias"));
    let err = load_gpt(&dir).unwrap_err().to_string();
    assert!(err.contains("missing tensor transformer.h.1.ln_2.bias"), "{err}");
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn should_name_a_tensor_with_the_wrong_shape() {
    let (dir, cfg, params) = saved("shape");
    // The internal (out, in) layout stored where HF expects (in, out): the classic forgotten transpose.
    let (off, shape) = slot(&cfg, "transformer.h.1.mlp.c_fc.weight");
    let n = shape[0] * shape[1];
    rewrite_weights(&dir, |t| {
        let e = t.iter_mut().find(|(n, _, _)| n == "transformer.h.1.mlp.c_fc.weight").unwrap();
        *e = (e.0.clone(), shape.clone(), params[off..off + n].to_vec());
    });
    let err = load_gpt(&dir).unwrap_err().to_string();
    assert!(err.contains("tensor transformer.h.1.mlp.c_fc.weight has shape [24, 6], expected [6, 24]"), "{err}");
}

#[test]
fn should_reject_non_f32_tensors_and_unknown_tensors() {
    let (dir, _, _) = saved("dtype");
    let path = dir.join("model.safetensors");
    let (tensors, _) = load_tensors(&path).unwrap();
    // Rewrite with ln_f.weight as F64, through the safetensors crate directly.
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(n, _, d)| {
            if n == "transformer.ln_f.weight" {
                d.iter().flat_map(|x| (*x as f64).to_le_bytes()).collect()
            } else {
                d.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            let dt = if n == "transformer.ln_f.weight" { safetensors::Dtype::F64 } else { safetensors::Dtype::F32 };
            (n.clone(), safetensors::tensor::TensorView::new(dt, s.clone(), b).unwrap())
        })
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    let err = load_gpt(&dir).unwrap_err().to_string();
    assert!(err.contains("tensor transformer.ln_f.weight has dtype F64"), "{err}");

    let (dir, _, _) = saved("unknown");
    rewrite_weights(&dir, |t| t.push(("transformer.h.0.mlp.extra".into(), vec![2], vec![1.0, 2.0])));
    let err = load_gpt(&dir).unwrap_err().to_string();
    assert!(err.contains("unexpected tensors") && err.contains("transformer.h.0.mlp.extra"), "{err}");
}

#[test]
fn should_load_hub_style_names_tied_lm_head_and_mask_buffers() {
    let (dir, cfg, params) = saved("hub");
    let wte = params[..cfg.vocab_size * cfg.width].to_vec();
    // The original gpt2 hub checkpoint: no "transformer." prefix, lm_head stored, attention-mask buffers stored.
    rewrite_weights(&dir, |t| {
        for e in t.iter_mut() {
            e.0 = e.0.trim_start_matches("transformer.").to_string();
        }
        t.push(("lm_head.weight".into(), vec![cfg.vocab_size, cfg.width], wte.clone()));
        t.push(("h.0.attn.bias".into(), vec![1, 1, 7, 7], vec![1.0; 49]));
        t.push(("h.1.attn.masked_bias".into(), vec![], vec![-1e4]));
    });
    let (cfg2, params2) = load_gpt(&dir).unwrap();
    assert_eq!(cfg2, cfg);
    assert_bits_eq(&params2, &params);

    // An untied head would be silently dropped: refuse it.
    rewrite_weights(&dir, |t| t.iter_mut().find(|e| e.0 == "lm_head.weight").unwrap().2[3] += 1.0);
    let err = load_gpt(&dir).unwrap_err().to_string();
    assert!(err.contains("lm_head.weight differs"), "{err}");
}

#[test]
fn should_read_plain_gpt2_config_and_reject_variants_it_cannot_run() {
    let (dir, cfg, params) = saved("cfgvariants");
    let path = dir.join("config.json");
    let original: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let with = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut j = original.clone();
        edit(j.as_object_mut().unwrap());
        std::fs::write(&path, serde_json::to_string(&j).unwrap()).unwrap();
        load_gpt(&dir)
    };
    // A config.json from transformers has no dpo3d object (and no n_positions in some old ones: n_ctx).
    let (cfg2, params2) = with(&|j| {
        j.remove("dpo3d");
        j.remove("n_positions");
    })
    .unwrap();
    assert_eq!(cfg2, cfg);
    assert_bits_eq(&params2, &params);

    type Edit<'a> = &'a dyn Fn(&mut serde_json::Map<String, Value>);
    let cases: &[(Edit, &str)] = &[
        (&|j| drop(j.insert("activation_function".into(), "relu".into())), "activation_function"),
        (&|j| drop(j.insert("n_inner".into(), 7.into())), "n_inner"),
        (&|j| drop(j.insert("layer_norm_epsilon".into(), 1e-6.into())), "layer_norm_epsilon"),
        (&|j| drop(j.insert("tie_word_embeddings".into(), false.into())), "tie_word_embeddings"),
        (&|j| drop(j.insert("model_type".into(), "llama".into())), "model_type"),
        (&|j| drop(j.remove("n_embd")), "no `n_embd`"),
        (&|j| drop(j.insert("n_layer".into(), 3.into())), "disagrees"),
    ];
    for (edit, want) in cases {
        let err = with(*edit).unwrap_err().to_string();
        assert!(err.contains(want) && err.contains("config.json"), "{want}: {err}");
    }
}

#[test]
fn should_round_trip_packed_tensors_with_metadata() {
    let dir = tmp_dir("packed");
    let path = dir.join("mlp.safetensors");
    let cfg = MlpConfig::paper_toy();
    let shapes = cfg.param_shapes();
    let n: usize = shapes.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    let mut params = vec![0f32; n];
    Rng::new(9).fill_normal(&mut params, 0.1);
    let meta = HashMap::from([("step".to_string(), "42".to_string())]);
    save_packed(&path, &shapes, &params, &meta).unwrap();
    let (back, meta2) = load_packed(&path, &shapes).unwrap();
    assert_bits_eq(&back, &params);
    assert_eq!(meta2["step"], "42");

    let mut other = shapes.clone();
    other[1].1 = vec![256, 255];
    assert!(load_packed(&path, &other).unwrap_err().to_string().contains("tensor fc2.weight has shape [256, 256]"));
    let err = load_packed(&path, &shapes[..2]).unwrap_err().to_string();
    assert!(err.contains("unexpected tensors") && err.contains("fc3.bias"), "{err}");
    assert!(save_packed(&path, &shapes, &params[1..], &meta).is_err());
    assert!(save_tensors(&path, &[("a".into(), vec![2, 2], vec![0.0; 3])], &meta).is_err());
}

#[test]
fn should_write_atomically_and_replace_existing_files() {
    let dir = tmp_dir("atomic");
    let path = dir.join("report.json");
    write_atomic(&path, b"first").unwrap();
    write_atomic(&path, b"second").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temp file left");
    let err = write_atomic(&dir.join("absent/x.json"), b"x").unwrap_err();
    assert!(matches!(err, dpo3d::Error::Io { .. }), "{err:?}");
}
