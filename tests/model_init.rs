//! `model::init`: the parameter vectors every training run starts from. The first values are pinned by an
//! independent computation (PCG32 and Box-Muller re-implemented in Python from O'Neill's PCG paper and the formulas
//! in the functions' docs, not from this crate's code), the scales by their statistics, and a bad config is an
//! error, not a panic.

use dpo3d::model::init::{gpt_params, mlp_params};
use dpo3d::model::{GptConfig, MlpConfig};
use dpo3d::Error;

fn std(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
}

#[test]
fn should_draw_mlp_fc1_from_u_minus_half_to_half_with_pcg32() {
    // P = 4 -> fc1 bound 1/sqrt(4) = 0.5; fc1.weight is first in the table, so it takes the first four draws of
    // PCG32(seed 7): w = -0.5 + 1.0 * u, u = (next_u32 >> 8) / 2^24. Python (numpy float32):
    //   [0.09374887, -0.1483509, -0.40196413, 0.12622339]
    let cfg = MlpConfig { prompts: 4, hidden: 8, responses: 3, first_bias: false, scalar_head: false, depth: 2 };
    let p = mlp_params(&cfg, 7).unwrap();
    assert_eq!(p.len(), 8 * 4 + 8 * 8 + 8 + 3 * 8 + 3);
    for (got, want) in p[..4].iter().zip([0.09374887f32, -0.1483509, -0.40196413, 0.12622339]) {
        assert!((got - want).abs() <= 1e-7, "{got} vs {want}");
    }
    // fc2.weight, fc3.* read H = 8: bound 1/sqrt(8)
    let bound = 1.0 / 8f32.sqrt();
    assert!(p[32..].iter().all(|x| x.abs() <= bound));
    assert!(p[32..].iter().any(|x| x.abs() > 0.9 * bound), "fc2/fc3 use the full U(-1/sqrt(H), 1/sqrt(H)) range");
}

#[test]
fn should_draw_gpt_wte_from_n_0_002_with_box_muller() {
    // wte is first: 0.02 * sqrt(-2 ln u1) cos(2 pi u2) over PCG32(seed 3) uniform pairs. Python (f64 Box-Muller,
    // rounded to f32): [-0.0069617536, -0.024668083, -0.030395059, -0.035657395]
    let cfg = GptConfig { vocab_size: 11, context: 5, layers: 1, heads: 1, width: 4, scalar_head: false };
    let p = gpt_params(&cfg, 3).unwrap();
    assert_eq!(p.len(), cfg.num_params());
    for (got, want) in p[..4].iter().zip([-0.0069617536f32, -0.024668083, -0.030395059, -0.035657395]) {
        assert!((got - want).abs() <= 1e-8, "{got} vs {want}");
    }
}

#[test]
fn should_init_gpt_with_gpt2_scales_and_be_deterministic() {
    let cfg = GptConfig { vocab_size: 50, context: 16, layers: 4, heads: 2, width: 32, scalar_head: true };
    let p = gpt_params(&cfg, 9).unwrap();
    assert_eq!(p, gpt_params(&cfg, 9).unwrap());
    assert_ne!(p, gpt_params(&cfg, 10).unwrap());
    // walk the table here (not through any crate helper) to find each tensor
    let mut at = std::collections::HashMap::new();
    let mut off = 0;
    for (name, shape) in cfg.param_shapes() {
        let n: usize = shape.iter().product();
        at.insert(name, &p[off..off + n]);
        off += n;
    }
    assert_eq!(off, p.len());
    let t = |name: &str| at[name];
    assert!((std(t("transformer.wte.weight")) - 0.02).abs() < 0.002);
    assert!((std(t("transformer.wpe.weight")) - 0.01).abs() < 0.002);
    assert!((std(t("transformer.h.1.mlp.c_fc.weight")) - 0.02).abs() < 0.002);
    let proj = 0.02 / (2.0f32 * 4.0).sqrt(); // 0.02 / sqrt(2L)
    assert!((std(t("transformer.h.3.mlp.c_proj.weight")) - proj).abs() < 0.1 * proj);
    assert!((std(t("transformer.h.0.attn.c_proj.weight")) - proj).abs() < 0.15 * proj);
    assert!(t("transformer.h.2.ln_1.weight").iter().all(|&x| x == 1.0));
    assert!(t("transformer.h.2.attn.c_attn.bias").iter().all(|&x| x == 0.0));
    assert!(t("transformer.ln_f.bias").iter().all(|&x| x == 0.0));
    assert!((std(t("score.weight")) - 0.02).abs() < 0.01);
}

#[test]
fn should_reject_a_bad_config_with_an_error() {
    let gpt = GptConfig { vocab_size: 50, context: 16, layers: 2, heads: 3, width: 32, scalar_head: false };
    match gpt_params(&gpt, 0) {
        Err(Error::Config(msg)) => assert!(msg.contains("heads") && msg.contains("width"), "{msg}"),
        other => panic!("expected a config error, got {other:?}"),
    }
    let gpt0 = GptConfig { layers: 0, heads: 4, ..gpt };
    assert!(matches!(gpt_params(&gpt0, 0), Err(Error::Config(m)) if m.contains("layers")));
    let mlp = MlpConfig { prompts: 4, hidden: 0, responses: 10, first_bias: false, scalar_head: false, depth: 2 };
    assert!(matches!(mlp_params(&mlp, 0), Err(Error::Config(_))));
}
