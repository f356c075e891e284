//! Sampling from a GPT with prompts of different lengths: the ragged sampling kernels against the CPU reference on odd
//! shapes, and `model::Generator` against a CPU replay (reference GPT forward + reference sampler) token for token,
//! including stop tokens, top-k, greedy decoding, each completion's log-probability, determinism and bad input.

mod common;
use common::*;
use dpo3d::gpu::{Plan, Tensor};
use dpo3d::model::init::gpt_params;
use dpo3d::model::{GenerationConfig, Generator, GptConfig};
use dpo3d::ops::sampling::{self, rng_words};
use dpo3d::reference::gpt::GptRef;
use dpo3d::reference::sampling as cpu_s;
use dpo3d::rng::Rng;
use dpo3d::Gpu;

fn tu(gpu: &Gpu, v: &[u32]) -> Tensor {
    Tensor::from_u32(gpu, "t", v).unwrap()
}
fn run(gpu: &Gpu, ds: Vec<dpo3d::gpu::Dispatch>) {
    let mut plan = Plan::new();
    plan.extend(ds);
    plan.submit(gpu);
}

#[test]
fn should_match_reference_ragged_sampling_and_appending() {
    let gpu = gpu();
    let (b, t, v) = (7usize, 9usize, 70usize);
    let lens: Vec<u32> = vec![1, 3, 8, 2, 5, 9, 4]; // row 5: its first step already lands outside T
    let logits = randn(3, b * t * v, 2.0);
    let tl = Tensor::from_f32(&gpu, "logits", &logits).unwrap();
    let (tlens, trng) = (tu(&gpu, &lens), tu(&gpu, &rng_words(11, 4)));
    for (temp, top_k) in [(1.0f32, 0usize), (0.7, 5), (0.0, 0)] {
        for step in [0usize, 2, 5] {
            let out = Tensor::zeros(&gpu, "out", b).unwrap();
            run(&gpu, vec![sampling::sample_ragged(&gpu, &out, &tl, &trng, &tlens, b, t, v, step, temp, top_k)]);
            let mut want = vec![0u32; b];
            cpu_s::sample_ragged(&mut want, &logits, rng_words(11, 4), &lens, t, v, step, temp, top_k);
            assert_eq!(out.to_vec_u32(&gpu).unwrap(), want, "temperature {temp} top-k {top_k} step {step}");
        }
    }
    // Appending: rows stop at their own eos and never write past T.
    let eos = 3u32;
    let mut tokens: Vec<u32> = (0..b * t).map(|i| (i % 5) as u32 + 4).collect();
    let (mut targets, mut mask) = (vec![0u32; b * t], vec![0.0f32; b * t]);
    let (tt, ttg) = (tu(&gpu, &tokens), tu(&gpu, &targets));
    let tm = Tensor::from_f32(&gpu, "mask", &mask).unwrap();
    for step in 0..t {
        let sampled: Vec<u32> =
            (0..b).map(|r| if (r + step) % 4 == 0 { eos } else { (r + step) as u32 % 7 + 4 }).collect();
        let ts = tu(&gpu, &sampled);
        run(&gpu, vec![sampling::append_ragged(&gpu, &tt, &ttg, &tm, &ts, &tlens, b, t, step, Some(eos))]);
        cpu_s::append_ragged(&mut tokens, &mut targets, &mut mask, &sampled, &lens, t, step, Some(eos));
    }
    assert_eq!(tt.to_vec_u32(&gpu).unwrap(), tokens, "tokens");
    assert_eq!(ttg.to_vec_u32(&gpu).unwrap(), targets, "targets");
    assert_eq!(tm.to_vec(&gpu).unwrap(), mask, "mask");
    // Independent check of the reference: row 0 (Lp 1) samples eos at step 0, so only its first response position is
    // in the mask; row 5 (Lp 9 = T) is untouched.
    assert_eq!(&mask[0..t], &[1.0, 0., 0., 0., 0., 0., 0., 0., 0.]);
    assert!(mask[5 * t..6 * t].iter().all(|&m| m == 0.0));
    assert!(tokens[t + 1..2 * t].iter().all(|&x| x != 0), "row 1's response is written");
}

/// The log-probability of each row's sampled token, from the prefill's (B, T, V) logits at the row's own position and
/// from a decode step's (B, V) logits, against the reference log-softmax of that logits row; only the row's target
/// slot is written. Logits 300 nats apart check that it stays in log space.
#[test]
fn should_match_reference_log_probabilities_of_the_sampled_tokens() {
    let gpu = gpu();
    let (b, t, v) = (5usize, 7usize, 83usize);
    let lens: Vec<u32> = vec![1, 3, 7, 2, 6];
    let mut logits = randn(21, b * t * v, 3.0);
    logits[5] = 300.0; // row 0, position 0: one logit far above the rest
    let sampled: Vec<u32> = (0..b).map(|r| (r * 17 % v) as u32).collect();
    let (tl, ts, tlens) = (Tensor::from_f32(&gpu, "logits", &logits).unwrap(), tu(&gpu, &sampled), tu(&gpu, &lens));
    let lp_of = |row: &[f32], tok: u32| {
        let (mut lp, mut lse) = ([0.0f32], [0.0f32]);
        dpo3d::reference::logprobs::logprobs_forward(&mut lp, &mut lse, row, &[tok], 1, v);
        lp[0]
    };
    for step in [0usize, 1, 4] {
        for ragged in [true, false] {
            let sentinel = -7.0f32;
            let out = Tensor::from_f32(&gpu, "out", &vec![sentinel; b * t]).unwrap();
            run(
                &gpu,
                vec![sampling::sampled_logprob(&gpu, &out, &tl, &ts, &tlens, b, t, v, step, ragged.then_some(t))],
            );
            let mut want = vec![sentinel; b * t];
            for r in 0..b {
                let pos = (lens[r] as usize - 1 + step).min(t - 1);
                let row = if ragged { &logits[(r * t + pos) * v..][..v] } else { &logits[r * v..][..v] };
                want[r * t + pos] = lp_of(row, sampled[r]);
            }
            let got = out.to_vec(&gpu).unwrap();
            assert_close(&format!("step {step} ragged {ragged}"), &got, &want, 1e-4, 1e-5);
        }
    }
    // row 0 at step 0 sampled token 0, about 300 nats below the max: finite, not -inf
    let out = Tensor::zeros(&gpu, "out", b * t).unwrap();
    run(&gpu, vec![sampling::sampled_logprob(&gpu, &out, &tl, &ts, &tlens, b, t, v, 0, Some(t))]);
    let lp0 = out.to_vec(&gpu).unwrap()[0];
    assert!(lp0.is_finite() && lp0 < -250.0, "log-prob of a token far below the max: {lp0}");
}

fn small_gpt() -> GptConfig {
    GptConfig { vocab_size: 11, context: 16, layers: 1, heads: 2, width: 16, scalar_head: false }
}

/// The CPU replay of one `Generator::generate` call: (completions, their log-probs).
fn replay(
    reference: &GptRef,
    prompts: &[Vec<u32>],
    b: usize,
    t: usize,
    g: &GenerationConfig,
    call: u32,
) -> Vec<(Vec<u32>, f32)> {
    let v = reference.cfg.vocab_size;
    let mut tokens = vec![0u32; b * t];
    let mut lens = vec![1u32; b];
    for (r, p) in prompts.iter().enumerate() {
        tokens[r * t..r * t + p.len()].copy_from_slice(p);
        lens[r] = p.len() as u32;
    }
    let (mut targets, mut mask) = (vec![0u32; b * t], vec![0.0f32; b * t]);
    for s in 0..g.max_new_tokens {
        let acts = reference.forward(&tokens, &targets, b, t);
        let mut sampled = vec![0u32; b];
        cpu_s::sample_ragged(
            &mut sampled,
            &acts.logits,
            rng_words(g.seed, call),
            &lens,
            t,
            v,
            s,
            g.temperature,
            g.top_k,
        );
        cpu_s::append_ragged(&mut tokens, &mut targets, &mut mask, &sampled, &lens, t, s, g.stop_token_id);
    }
    let acts = reference.forward(&tokens, &targets, b, t);
    prompts
        .iter()
        .enumerate()
        .map(|(r, p)| {
            let lp = p.len();
            let mut ids = tokens[r * t + lp..r * t + lp + g.max_new_tokens].to_vec();
            if let Some(k) = g.stop_token_id.and_then(|s| ids.iter().position(|&x| x == s)) {
                ids.truncate(k + 1);
            }
            let logp: f32 = (0..ids.len()).map(|i| acts.logps[r * t + lp - 1 + i]).sum();
            (ids, logp)
        })
        .collect()
}

#[test]
fn should_generate_like_the_cpu_replay_for_prompts_of_different_lengths() {
    let gpu = gpu();
    let cfg = small_gpt();
    let mut reference = GptRef::from_params(&cfg, gpt_params(&cfg, 8).unwrap());
    for w in reference.tensor_mut("transformer.wte.weight") {
        *w *= 30.0; // sharper next-token distributions: varied completions, some of which stop early
    }
    let (b, max_prompt) = (6usize, 7usize);
    let mut prng = Rng::new(5);
    let mut stopped = 0;
    for g in [
        GenerationConfig { max_new_tokens: 6, temperature: 0.9, top_k: 0, stop_token_id: Some(2), seed: 17 },
        GenerationConfig { max_new_tokens: 5, temperature: 1.3, top_k: 4, stop_token_id: None, seed: 3 },
        GenerationConfig { max_new_tokens: 9, temperature: 0.0, top_k: 0, stop_token_id: Some(1), seed: 0 },
    ] {
        let mut gen = Generator::new(&gpu, &cfg, &reference.params, b, max_prompt, &g).unwrap();
        let t = max_prompt + g.max_new_tokens;
        for call in 1..=2u32 {
            // 1 to B prompts of 1 to 7 tokens
            let n = if call == 1 { b } else { 4 };
            let prompts: Vec<Vec<u32>> = (0..n)
                .map(|r| (0..1 + (r * 3 + call as usize) % max_prompt).map(|_| prng.below(11)).collect())
                .collect();
            let got = gen.generate_blocking(&gpu, &prompts).unwrap();
            let want = replay(&reference, &prompts, b, t, &g, call);
            for (r, (c, (ids, logp))) in got.iter().zip(&want).enumerate() {
                assert_eq!(&c.tokens, ids, "{g:?} call {call} row {r}: GPU vs CPU replay");
                assert_eq!(c.stopped, g.stop_token_id.is_some_and(|s| ids.last() == Some(&s)));
                stopped += c.stopped as usize;
                assert!((c.logp - logp).abs() <= 1e-3 * (1.0 + logp.abs()), "row {r}: logp {} vs {logp}", c.logp);
                assert!(c.logp <= 0.0 && c.logp.is_finite());
            }
        }
    }
    assert!(stopped > 0, "the case should contain completions that stop early");
}

#[test]
fn should_repeat_with_the_same_seed_and_refuse_bad_prompts() {
    let gpu = gpu();
    let cfg = small_gpt();
    let params = gpt_params(&cfg, 2).unwrap();
    let g = GenerationConfig { max_new_tokens: 4, temperature: 1.0, seed: 9, ..Default::default() };
    let prompts = vec![vec![1, 2, 3], vec![4]];
    let mut a = Generator::new(&gpu, &cfg, &params, 3, 5, &g).unwrap();
    let mut b = Generator::new(&gpu, &cfg, &params, 3, 5, &g).unwrap();
    let first = a.generate_blocking(&gpu, &prompts).unwrap();
    assert_eq!(first, b.generate_blocking(&gpu, &prompts).unwrap(), "same seed, same call: same completions");
    let calls: Vec<_> = (0..6).map(|_| a.generate_blocking(&gpu, &prompts).unwrap()).collect();
    assert!(calls.iter().any(|c| c != &first), "later calls draw new samples");

    let err = |r: dpo3d::Result<Vec<dpo3d::model::Completion>>| r.unwrap_err().to_string();
    assert!(err(a.generate_blocking(&gpu, &[vec![1; 6]])).contains("prompt 0 has 6 tokens"));
    assert!(err(a.generate_blocking(&gpu, &[vec![]])).contains("prompt 0 has 0 tokens"));
    assert!(err(a.generate_blocking(&gpu, &vec![vec![1]; 4])).contains("1 to B = 3 prompts"));
    assert!(err(a.generate_blocking(&gpu, &[vec![11]])).contains("outside the vocabulary"));
    let too_long = GenerationConfig { max_new_tokens: 12, ..g.clone() };
    let e = Generator::new(&gpu, &cfg, &params, 3, 5, &too_long).err().expect("context exceeded").to_string();
    assert!(e.contains("fit the model's context (16)"), "{e}");
}

/// The KV-cached decode steps reproduce the full forward: with the tokens already in place (teacher forcing), step s
/// of row b gives the forward's logits at position lens_b - 1 + s, for 2 layers, rows of different prompt lengths,
/// and a scalar-head model (PPO's shared trunk), whose scalar head the decoder leaves out; with the GPT's own cache
/// (`Decoder::new`, a prefill over all T positions) and with the decoder's caches filled from a prefill GPT built
/// for the longest prompt's 11 positions only (`Decoder::after_prefill`, what `Generator` does).
#[test]
fn should_give_the_forwards_logits_at_each_rows_position_when_decoding_with_the_kv_cache() {
    let gpu = gpu();
    for (scalar_head, short_prefill) in [(false, false), (true, false), (false, true)] {
        let cfg = GptConfig { vocab_size: 13, context: 24, layers: 2, heads: 3, width: 12, scalar_head };
        let (b, t, v) = (3usize, 19usize, 13usize);
        let params = gpt_params(&cfg, 5).unwrap();
        let gpt = dpo3d::model::Gpt::new(&gpu, &cfg, b, t, &params).unwrap();
        let mut r = Rng::new(6);
        let tokens: Vec<u32> = (0..b * t).map(|_| r.below(v as u32)).collect();
        gpt.set_batch(&gpu, &tokens, &vec![0u32; b * t]).unwrap();
        let lens = [1u32, 6, 11];
        let steps = t - 11 + 1; // the longest prompt's last step reaches position T - 1
        let (tp, tlens, ttokens) = (11usize, tu(&gpu, &lens), tu(&gpu, &tokens));
        let prefill = dpo3d::model::Gpt::new(&gpu, &cfg, b, tp, &params).unwrap();
        let prompts: Vec<u32> = tokens.chunks(t).flat_map(|row| row[..tp].to_vec()).collect();
        prefill.set_batch(&gpu, &prompts, &vec![0u32; b * tp]).unwrap();
        let decoder = if short_prefill {
            dpo3d::model::Decoder::after_prefill(&gpu, &prefill, &ttokens, t, &tlens, steps).unwrap()
        } else {
            dpo3d::model::Decoder::new(&gpu, &gpt, &tlens, steps).unwrap()
        };
        gpt.forward.submit(&gpu);
        if short_prefill {
            dpo3d::gpu::submit_all(&gpu, &[&prefill.forward, &decoder.fill]);
        }
        let full = gpt.logits.to_vec(&gpu).unwrap();
        for s in 1..steps {
            dpo3d::gpu::submit_all(&gpu, &decoder.step(s));
            let got = decoder.logits.to_vec(&gpu).unwrap();
            let want: Vec<f32> =
                (0..b).flat_map(|row| full[(row * t + lens[row] as usize - 1 + s) * v..][..v].to_vec()).collect();
            let what = format!(
                "scalar head {scalar_head}, prefill of {} positions, step {s}",
                if short_prefill { tp } else { t }
            );
            assert_close(&format!("{what} logits"), &got, &want, 1e-4, 1e-4);
            let pos: Vec<u32> = lens.iter().map(|&l| l - 1 + s as u32).collect();
            assert_eq!(decoder.pos.to_vec_u32(&gpu).unwrap(), pos, "{what} positions");
        }
    }
}

/// A generator longer than the KV cache's attention takes (T > 2048) is refused with a config error naming the limit.
#[test]
fn should_refuse_a_generator_longer_than_the_decode_attention_takes() {
    let gpu = gpu();
    let cfg = GptConfig { vocab_size: 5, context: 2100, layers: 1, heads: 1, width: 4, scalar_head: false };
    let params = gpt_params(&cfg, 1).unwrap();
    let g = GenerationConfig { max_new_tokens: 4, ..Default::default() };
    let err = Generator::new(&gpu, &cfg, &params, 1, 2045, &g).err().expect("T = 2049 must be refused");
    let msg = err.to_string();
    assert!(msg.contains("2048") && msg.contains("T = 2049"), "{msg}");
    Generator::new(&gpu, &cfg, &params, 1, 2044, &g).expect("T = 2048 is within the limit");
}
