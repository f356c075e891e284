//! Wrong-sized user input to the model and objective APIs is an `Err` with a message saying what was expected, not a
//! panic (or a silent truncation): `Gpt::full_logprobs` with a token count that is not B * T, `upload_params` too short
//! or too long (GPT and MLP), `RewardObjective::set_last_from_mask` with a mask of the wrong length.

mod common;
use common::*;
use dpo3d::model::{Gpt, GptConfig, Mlp, MlpConfig};
use dpo3d::objectives::RewardObjective;

fn cfg(scalar_head: bool) -> GptConfig {
    GptConfig { vocab_size: 7, context: 6, layers: 1, heads: 1, width: 8, scalar_head }
}

#[test]
fn should_reject_full_logprobs_for_a_token_count_other_than_b_times_t() {
    let gpu = gpu();
    let c = cfg(false);
    let (b, t) = (2, 5);
    let gpt = Gpt::new(&gpu, &c, b, t, &dpo3d::model::init::gpt_params(&c, 1).unwrap()).unwrap();
    for n in [0usize, 3, 7, 11] {
        let err = pollster::block_on(gpt.full_logprobs(&gpu, &vec![1u32; n])).unwrap_err().to_string();
        assert!(err.contains("10 token ids") && err.contains(&format!("got {n}")), "{n} tokens: {err}");
    }
    assert_eq!(pollster::block_on(gpt.full_logprobs(&gpu, &[1u32; 10])).unwrap().len(), 10 * 7);
}

#[test]
fn should_reject_upload_params_of_the_wrong_length() {
    let gpu = gpu();
    let c = cfg(false);
    let p = dpo3d::model::init::gpt_params(&c, 2).unwrap();
    let gpt = Gpt::new(&gpu, &c, 1, 4, &p).unwrap();
    for len in [0, p.len() - 1, p.len() + 1] {
        let err = gpt.upload_params(&gpu, &vec![0.5; len]).unwrap_err().to_string();
        assert!(err.contains(&format!("{} parameters, got {len}", p.len())), "{err}");
    }
    // a rejected upload left the parameters as they were; an exact one replaces them
    assert_eq!(pollster::block_on(gpt.download_params(&gpu)).unwrap(), p);
    gpt.upload_params(&gpu, &vec![0.5; p.len()]).unwrap();
    assert_eq!(pollster::block_on(gpt.download_params(&gpu)).unwrap(), vec![0.5; p.len()]);

    let mc = MlpConfig { prompts: 3, hidden: 4, responses: 5, first_bias: false, scalar_head: false, depth: 2 };
    let one = dpo3d::model::init::mlp_params(&mc, 3).unwrap();
    let two: Vec<f32> = one.iter().chain(&one).copied().collect();
    let mlp = Mlp::replicated(&gpu, &mc, 2, 3, &two).unwrap();
    for len in [one.len(), two.len() - 1, two.len() + 1] {
        let err = mlp.upload_params(&gpu, &vec![0.5; len]).unwrap_err().to_string();
        assert!(err.contains(&format!("{} parameters", two.len())) && err.contains(&format!("got {len}")), "{err}");
    }
    mlp.upload_params(&gpu, &two).unwrap();
}

#[test]
fn should_reject_a_reward_mask_of_the_wrong_length() {
    let gpu = gpu();
    let c = cfg(true);
    let (pairs, t) = (2, 4);
    let gpt = Gpt::new(&gpu, &c, 2 * pairs, t, &dpo3d::model::init::gpt_params(&c, 4).unwrap()).unwrap();
    let rm = RewardObjective::new(&gpu, &gpt).unwrap();
    for n in [0usize, 2 * pairs, 2 * pairs * t - 1, 2 * pairs * t + t] {
        let err = rm.set_last_from_mask(&gpu, &vec![1.0; n]).unwrap_err().to_string();
        assert!(err.contains("16 entries") && err.contains(&format!("got {n}")), "{n} entries: {err}");
    }
    rm.set_last_from_mask(&gpu, &vec![1.0; 2 * pairs * t]).unwrap();
}
