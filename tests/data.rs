//! Data loading: JSONL preference and SFT rows (text and token-id forms), the error for every malformed row naming
//! file and line, the batch layout the trainers rely on, the generated toy corpus, and a real tokenizer.json.

use std::path::PathBuf;

use dpo3d::data::{
    collate_preferences, collate_sft, load_preferences, parse_preferences, parse_sft, read_preferences, toy_corpus,
    toy_preferences, ByteTokenizer, DataOptions, HfTokenizer, PreferencePair, SftExample, TextEncoder, TOY_MAX_LEN,
};
use dpo3d::Error;

fn tmp_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("data-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ids(s: &str) -> Vec<u32> {
    s.bytes().map(u32::from).collect()
}

const BYTES: Option<&dyn TextEncoder> = Some(&ByteTokenizer);

#[test]
fn should_parse_text_rows_with_byte_tokenizer() {
    let text = "{\"prompt\": \"Q: 1+1=\", \"chosen\": \"2\", \"rejected\": \"3\", \"id\": 7}\n\
                {\"prompt\": \"é\", \"chosen\": \" yes\", \"rejected\": \" no\"}\n";
    let pairs = parse_preferences(text, "file.jsonl", BYTES, &DataOptions::default()).unwrap();
    assert_eq!(
        pairs,
        vec![
            PreferencePair { prompt: ids("Q: 1+1="), chosen: ids("2"), rejected: ids("3") },
            PreferencePair { prompt: vec![0xC3, 0xA9], chosen: ids(" yes"), rejected: ids(" no") },
        ]
    );
}

#[test]
fn should_parse_token_id_rows_and_mixed_rows_without_an_encoder_for_ids() {
    let text = "{\"prompt\": [1, 2], \"chosen\": [3, 4, 5], \"rejected\": [6]}\r\n\
                \n   \n\
                {\"prompt\": [0], \"chosen\": [4294967295], \"rejected\": [9]}\n";
    let pairs = parse_preferences(text, "file.jsonl", None, &DataOptions::default()).unwrap();
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs[0], PreferencePair { prompt: vec![1, 2], chosen: vec![3, 4, 5], rejected: vec![6] });
    assert_eq!(pairs[1].chosen, vec![u32::MAX]);

    let mixed = "{\"prompt\": \"ab\", \"chosen\": [99], \"rejected\": \"c\"}";
    let pairs =
        parse_preferences(mixed, "m.jsonl", BYTES, &DataOptions { vocab_size: Some(256), max_len: Some(3) }).unwrap();
    assert_eq!(pairs[0], PreferencePair { prompt: ids("ab"), chosen: vec![99], rejected: ids("c") });
}

/// A good row on line 1, a blank line 2 (skipped, but still counted), then `bad` on line 3.
fn expect_line3_error(bad: &str, encoder: Option<&dyn TextEncoder>, opts: DataOptions, want_msg: &str) {
    let text = format!("{{\"prompt\": [1], \"chosen\": [2], \"rejected\": [3]}}\n\n{bad}\n{{\"prompt\": [1]}}\n");
    let err = parse_preferences(&text, "file.jsonl", encoder, &opts).expect_err(bad);
    let shown = err.to_string();
    assert!(matches!(err, Error::Data { line: 3, .. }), "{bad}: wrong error {err:?}");
    assert!(shown.contains("file.jsonl:3"), "{bad}: {shown}");
    assert!(shown.contains(want_msg), "{bad}: message {shown:?} lacks {want_msg:?}");
}

#[test]
fn should_name_file_and_line_for_each_malformed_row() {
    let none = DataOptions::default();
    let cases: &[(&str, Option<&dyn TextEncoder>, DataOptions, &str)] = &[
        ("{\"prompt\": [1], \"chosen\": [2], ", None, none, "invalid JSON"),
        ("{\"prompt\": [1], \"chosen\": [2]}", None, none, "missing field `rejected`"),
        ("{\"chosen\": [2], \"rejected\": [3]}", None, none, "missing field `prompt`"),
        ("{\"prompt\": [1], \"chosen\": 2, \"rejected\": [3]}", None, none, "field `chosen` must be a string"),
        ("{\"prompt\": null, \"chosen\": [2], \"rejected\": [3]}", None, none, "got null"),
        ("{\"prompt\": [1], \"chosen\": [2, -1], \"rejected\": [3]}", None, none, "field `chosen`[1] is a number (-1)"),
        ("{\"prompt\": [1], \"chosen\": [2.5], \"rejected\": [3]}", None, none, "not a token id"),
        ("{\"prompt\": [1], \"chosen\": [4294967296], \"rejected\": [3]}", None, none, "not a token id"),
        ("{\"prompt\": [1], \"chosen\": [\"2\"], \"rejected\": [3]}", None, none, "is a string, not a token id"),
        ("{\"prompt\": [{\"role\": \"user\"}], \"chosen\": [2], \"rejected\": [3]}", None, none, "chat template"),
        ("{\"prompt\": \"hi\", \"chosen\": [2], \"rejected\": [3]}", None, none, "no tokenizer was given"),
        (
            "{\"prompt\": [1], \"chosen\": [2, 10], \"rejected\": [3]}",
            None,
            DataOptions { vocab_size: Some(10), max_len: None },
            "token id 10 (position 1) is out of range for vocab_size 10",
        ),
        (
            "{\"prompt\": \"\u{00ff}\", \"chosen\": [2], \"rejected\": [3]}",
            BYTES,
            DataOptions { vocab_size: Some(128), max_len: None },
            "field `prompt`: token id 195",
        ),
        ("{\"prompt\": [1], \"chosen\": [], \"rejected\": [3]}", None, none, "field `chosen` is empty"),
        ("{\"prompt\": [1], \"chosen\": [2], \"rejected\": \"\"}", BYTES, none, "field `rejected` is empty"),
        ("{\"prompt\": [], \"chosen\": [2], \"rejected\": [3]}", None, none, "field `prompt` is empty"),
        (
            "{\"prompt\": [1, 2], \"chosen\": [3], \"rejected\": [4, 5]}",
            None,
            DataOptions { vocab_size: None, max_len: Some(3) },
            "prompt + rejected is 4 tokens (2 + 2), longer than max_len 3",
        ),
        ("[1, 2, 3]", None, none, "expected a JSON object per line, got an array"),
        ("\"just text\"", None, none, "expected a JSON object"),
    ];
    for &(bad, enc, opts, want) in cases {
        expect_line3_error(bad, enc, opts, want);
    }
}

#[test]
fn should_report_invalid_utf8_with_its_line() {
    let mut bytes = b"{\"prompt\": [1], \"chosen\": [2], \"rejected\": [3]}\n".to_vec();
    bytes.extend_from_slice(b"{\"prompt\": \"\xff\"}\n");
    let err = read_preferences(bytes.as_slice(), "file.jsonl", BYTES, &DataOptions::default()).unwrap_err();
    assert!(err.to_string().starts_with("file.jsonl:2: not valid UTF-8"), "{err}");
}

#[test]
fn should_load_from_a_path_and_name_the_file_in_errors() {
    let dir = tmp_dir("path");
    let path = dir.join("file.jsonl");
    std::fs::write(&path, "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n\n{\"prompt\": \"a\"}\n")
        .unwrap();
    let err = load_preferences(&path, BYTES, &DataOptions::default()).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("file.jsonl:3: missing field `chosen`"), "{shown}");

    std::fs::write(&path, "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n").unwrap();
    let pairs = load_preferences(&path, BYTES, &DataOptions::default()).unwrap();
    assert_eq!(pairs, vec![PreferencePair { prompt: ids("a"), chosen: ids("b"), rejected: ids("c") }]);

    let missing = load_preferences(dir.join("absent.jsonl"), BYTES, &DataOptions::default()).unwrap_err();
    assert!(matches!(missing, Error::Io { .. }), "{missing:?}");
}

#[test]
fn should_parse_sft_rows_and_name_their_errors() {
    let text = "{\"prompt\": \"2+2=\", \"completion\": \"4\"}\n{\"prompt\": [5], \"completion\": [6, 7]}\n";
    let rows = parse_sft(text, "sft.jsonl", BYTES, &DataOptions::default()).unwrap();
    assert_eq!(
        rows,
        vec![
            SftExample { prompt: ids("2+2="), completion: ids("4") },
            SftExample { prompt: vec![5], completion: vec![6, 7] }
        ]
    );
    let bad = "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\", \"response\": \"b\"}\n";
    let err = parse_sft(bad, "sft.jsonl", BYTES, &DataOptions::default()).unwrap_err().to_string();
    assert!(err.contains("sft.jsonl:2: missing field `completion`"), "{err}");
    let long = "{\"prompt\": \"abc\", \"completion\": \"de\"}";
    let err = parse_sft(long, "sft.jsonl", BYTES, &DataOptions { vocab_size: None, max_len: Some(4) }).unwrap_err();
    assert!(err.to_string().contains("sft.jsonl:1: prompt + completion is 5 tokens"), "{err}");
}

#[test]
fn should_collate_preferences_chosen_rows_first_with_response_mask() {
    let pairs = vec![
        PreferencePair { prompt: vec![1, 2], chosen: vec![3, 4, 5], rejected: vec![6] },
        PreferencePair { prompt: vec![7], chosen: vec![8], rejected: vec![9, 10, 11, 12, 13] },
    ];
    let pad = 99;
    let batch = collate_preferences(&pairs, 6, pad).unwrap();
    assert_eq!((batch.b, batch.t), (2, 6));
    // Worked by hand: seq = prompt ++ response; tokens[i] = seq[i]; targets[i] = seq[i+1]; mask where i+1 >= P.
    #[rustfmt::skip]
    let tokens = vec![
        1, 2, 3, 4, 5, 99,      // pair 0 chosen:   [1 2 | 3 4 5]
        7, 8, 99, 99, 99, 99,   // pair 1 chosen:   [7 | 8]
        1, 2, 6, 99, 99, 99,    // pair 0 rejected: [1 2 | 6]
        7, 9, 10, 11, 12, 13,   // pair 1 rejected: [7 | 9 10 11 12 13], exactly T
    ];
    #[rustfmt::skip]
    let targets = vec![
        2, 3, 4, 5, 99, 99,
        8, 99, 99, 99, 99, 99,
        2, 6, 99, 99, 99, 99,
        9, 10, 11, 12, 13, 99,
    ];
    #[rustfmt::skip]
    let mask = vec![
        0., 1., 1., 1., 0., 0.,
        1., 0., 0., 0., 0., 0.,
        0., 1., 0., 0., 0., 0.,
        1., 1., 1., 1., 1., 0.,
    ];
    assert_eq!(batch.tokens, tokens);
    assert_eq!(batch.targets, targets);
    assert_eq!(batch.mask, mask);
    // Each row's mask counts exactly its response tokens.
    for (row, n) in [(0, 3), (1, 1), (2, 1), (3, 5)] {
        assert_eq!(batch.mask[row * 6..(row + 1) * 6].iter().sum::<f32>(), n as f32);
    }
}

#[test]
fn should_refuse_to_truncate_when_collating() {
    let pairs = vec![PreferencePair { prompt: vec![1, 2], chosen: vec![3], rejected: vec![4, 5] }];
    let err = collate_preferences(&pairs, 3, 0).unwrap_err();
    assert!(err.to_string().contains("pair 0 is 4 tokens, longer than T = 3"), "{err}");
    assert!(collate_preferences(&[], 3, 0).is_err());
    let ex = vec![SftExample { prompt: vec![1], completion: vec![2, 3] }];
    assert!(collate_sft(&ex, 2, 0).is_err());
}

#[test]
fn should_collate_sft_with_completion_mask() {
    let ex = vec![
        SftExample { prompt: vec![1, 2, 3], completion: vec![4] },
        SftExample { prompt: vec![5], completion: vec![6, 7] },
    ];
    let batch = collate_sft(&ex, 4, 0).unwrap();
    assert_eq!((batch.b, batch.t), (2, 4));
    assert_eq!(batch.tokens, vec![1, 2, 3, 4, 5, 6, 7, 0]);
    assert_eq!(batch.targets, vec![2, 3, 4, 0, 6, 7, 0, 0]);
    assert_eq!(batch.mask, vec![0., 0., 1., 0., 1., 1., 0., 0.]);
}

#[test]
fn should_generate_deterministic_learnable_toy_data() {
    let corpus = toy_corpus(200, 1);
    assert_eq!(corpus, toy_corpus(200, 1));
    assert_ne!(corpus, toy_corpus(200, 2));
    let tok = ByteTokenizer;
    let (mut sums, mut animals) = (0, 0);
    for ex in &corpus {
        assert!(ex.len() <= TOY_MAX_LEN && !ex.prompt.is_empty() && !ex.completion.is_empty());
        let (p, c) = (tok.decode(&ex.prompt), tok.decode(&ex.completion));
        assert!(c.ends_with(".\n"), "{c:?}");
        if p.starts_with("what is ") {
            sums += 1;
            let (a, b) = (p.as_bytes()[8] - b'0', p.as_bytes()[10] - b'0');
            assert_eq!(c, format!("{a}+{b}={}.\n", a + b));
        } else {
            animals += 1;
            assert!(p.starts_with("where did the ") && c.starts_with("the "), "{p:?} {c:?}");
        }
    }
    assert!(sums > 50 && animals > 50, "{sums} sums, {animals} animal sentences");
    // The place depends only on the animal, so the corpus is learnable.
    let mut place = std::collections::HashMap::new();
    for ex in corpus.iter().map(|e| tok.decode(&e.completion)).filter(|c| c.starts_with("the ")) {
        let words: Vec<&str> = ex.split_whitespace().collect();
        assert_eq!(*place.entry(words[1].to_string()).or_insert(words[5].to_string()), words[5], "{ex:?}");
    }

    let prefs = toy_preferences(200, 3);
    assert_eq!(prefs, toy_preferences(200, 3));
    // Every prompt of the preferences appears in a large enough corpus (106 distinct prompts exist).
    let prompts: std::collections::HashSet<String> =
        toy_corpus(5000, 4).iter().map(|e| tok.decode(&e.prompt)).collect();
    assert_eq!(prompts.len(), 106);
    for pair in &prefs {
        assert!(pair.max_len() <= TOY_MAX_LEN);
        assert_ne!(pair.chosen, pair.rejected);
        assert!(prompts.contains(&tok.decode(&pair.prompt)), "toy preferences use the toy corpus prompts");
        // chosen and rejected share most tokens: a common prefix and the ".\n" ending.
        let common = pair.chosen.iter().zip(&pair.rejected).take_while(|(a, b)| a == b).count();
        assert!(common >= 4, "{:?} vs {:?}", tok.decode(&pair.chosen), tok.decode(&pair.rejected));
        assert!(pair.rejected.ends_with(&ids(".\n")));
        let c = tok.decode(&pair.chosen);
        if let Some(eq) = c.split_once('=') {
            let (a, b) = (c.as_bytes()[0] - b'0', c.as_bytes()[2] - b'0');
            let wrong: u32 =
                tok.decode(&pair.rejected).split_once('=').unwrap().1.trim_end_matches(".\n").parse().unwrap();
            assert_eq!(eq.1, format!("{}.\n", a + b));
            assert_ne!(wrong, (a + b) as u32);
        }
    }
    // Collates straight into a batch at the toy context length.
    collate_preferences(&prefs, TOY_MAX_LEN, 0).unwrap();
    collate_sft(&corpus, TOY_MAX_LEN, 0).unwrap();
}

/// A minimal Hugging Face tokenizer.json: a WordLevel model over whitespace-split words.
const WORDLEVEL_JSON: &str = r#"{
  "version": "1.0",
  "truncation": null,
  "padding": null,
  "added_tokens": [{"id": 0, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": true}],
  "normalizer": null,
  "pre_tokenizer": {"type": "Whitespace"},
  "post_processor": null,
  "decoder": null,
  "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "the": 1, "cat": 2, "sat": 3, "on": 4, "mat": 5, "dog": 6},
            "unk_token": "[UNK]"}
}"#;

#[test]
fn should_encode_with_a_tokenizer_json() {
    let dir = tmp_dir("tokenizer");
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, WORDLEVEL_JSON).unwrap();
    let tok = HfTokenizer::from_file(&path).unwrap();
    assert_eq!(tok.vocab_size(), Some(7));
    assert_eq!(tok.encode("the cat sat on the mat").unwrap(), vec![1, 2, 3, 4, 1, 5]);
    assert_eq!(tok.encode("the bird").unwrap(), vec![1, 0]);

    let text = "{\"prompt\": \"the cat sat on\", \"chosen\": \"the mat\", \"rejected\": \"the dog\"}\n";
    let opts = DataOptions { vocab_size: Some(7), max_len: Some(6) };
    let pairs = parse_preferences(text, "t.jsonl", Some(&tok), &opts).unwrap();
    assert_eq!(pairs, vec![PreferencePair { prompt: vec![1, 2, 3, 4], chosen: vec![1, 5], rejected: vec![1, 6] }]);
    // The tokenizer's ids are checked against the model's vocabulary too.
    let small = DataOptions { vocab_size: Some(6), max_len: None };
    let err = parse_preferences(text, "t.jsonl", Some(&tok), &small).unwrap_err();
    assert!(err.to_string().contains("t.jsonl:1: field `rejected`: token id 6"), "{err}");

    std::fs::write(&path, "{\"model\": 3}").unwrap();
    assert!(HfTokenizer::from_file(&path).unwrap_err().to_string().contains("tokenizer.json"));
}
