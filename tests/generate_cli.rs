//! `encdec generate` on every fixture checkpoint gives the golden greedy output of
//! `transformers` (ids and text), and every bad input is one clear line on stderr.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{assert_one_line_error, fixture};
use serde_json::Value;

const FIXTURES: &[&str] = &[
    "t5", "t5-v1_1", "mt5", "bart", "mbart", "pegasus", "marian", "m2m100",
];

fn golden(name: &str) -> Value {
    let p = fixture(name).join("golden.json");
    serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap()
}

fn encdec(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_encdec"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the encdec binary runs");
    // a run that fails before reading its input closes the pipe early
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

/// The flags that replay a golden's greedy `generate_kwargs` (plus languages).
fn greedy_flags(g: &Value) -> Vec<String> {
    let kw = &g["cases"][0]["greedy"]["generate_kwargs"];
    let mut flags = vec!["--num-beams".to_string(), "1".to_string()];
    for (key, flag) in [
        ("max_new_tokens", "--max-new-tokens"),
        ("min_length", "--min-length"),
        ("no_repeat_ngram_size", "--no-repeat-ngram-size"),
    ] {
        if let Some(v) = kw.get(key).and_then(Value::as_u64) {
            flags.push(flag.into());
            flags.push(v.to_string());
        }
    }
    for (key, flag) in [("src_lang", "--src-lang"), ("tgt_lang", "--tgt-lang")] {
        if let Some(v) = g[key].as_str() {
            flags.push(flag.into());
            flags.push(v.into());
        }
    }
    flags
}

fn run_fixture(name: &str, batch_size: usize) {
    let g = golden(name);
    let cases = g["cases"].as_array().unwrap();
    let input: String = cases
        .iter()
        .map(|c| format!("{}\n", c["text"].as_str().unwrap()))
        .collect();
    let dir = fixture(name);
    let mut args: Vec<String> = vec![
        "generate".into(),
        "--model".into(),
        dir.display().to_string(),
        "--format".into(),
        "jsonl".into(),
        "--batch-size".into(),
        batch_size.to_string(),
    ];
    args.extend(greedy_flags(&g));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = encdec(&args, input.as_bytes());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name}: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        cases.len(),
        "{name}: one output per input line"
    );
    for (i, (case, got)) in cases.iter().zip(&lines).enumerate() {
        assert_eq!(got["index"], i, "{name}");
        let text = case["text"].as_str().unwrap();
        if text.trim().is_empty() {
            assert_eq!(
                got["text"], "",
                "{name}: an empty line gives an empty output"
            );
            continue;
        }
        let want_ids: Vec<u64> = case["greedy"]["sequences"].as_array().unwrap()[1..]
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let got_ids: Vec<u64> = got["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(got_ids, want_ids, "{name} case {}", case["name"]);
        assert_eq!(
            got["text"], case["greedy"]["text"],
            "{name} case {}",
            case["name"]
        );
        let want_score = case["greedy"]["sequence_score"].as_f64().unwrap();
        let got_score = got["score"].as_f64().unwrap();
        assert!(
            (got_score - want_score).abs() <= 1e-4 * want_score.abs().max(1.0),
            "{name} case {}: score {got_score} vs {want_score}",
            case["name"]
        );
    }
}

#[test]
fn generate_reproduces_the_golden_greedy_output_of_every_fixture() {
    for name in FIXTURES {
        run_fixture(name, 1);
    }
}

#[test]
fn generate_in_batches_gives_the_same_output_in_input_order() {
    for name in ["t5", "bart", "marian"] {
        run_fixture(name, 3);
    }
}

#[test]
fn text_format_writes_one_line_per_input() {
    let dir = fixture("marian");
    let out = encdec(
        &[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--num-beams",
            "1",
            "--max-new-tokens",
            "20",
        ],
        b"the small house\n\nthe large house\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let g = golden("marian");
    let want = |n: &str| {
        g["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .unwrap()["greedy"]["text"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        stdout,
        format!("{}\n\n{}\n", want("short"), want("perturbed"))
    );
}

#[test]
fn output_file_and_show_config() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.txt");
    fs::write(&input, "the small house\n").unwrap();
    let output = tmp.path().join("out.txt");
    let dir = fixture("bart");
    let out = encdec(
        &[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_to_string(&output).unwrap().lines().count(), 1);

    let out = encdec(
        &[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--show-config",
            "--num-beams",
            "2",
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("num_beams = 2  (--num-beams)"), "{text}");
    assert!(text.contains("no_repeat_ngram_size = 3"), "{text}");
}

#[test]
fn trace_prints_steps_with_alternatives() {
    let dir = fixture("t5");
    let out = encdec(
        &[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--trace",
            "--max-new-tokens",
            "3",
        ],
        b"the small house\n",
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let steps: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("[line 1"))
        .collect();
    assert_eq!(steps.len(), 3, "{stderr}");
    assert!(steps[0].contains("step 0"), "{stderr}");
    let alternatives = steps[0].split(" | ").nth(1).unwrap_or("");
    assert_eq!(
        alternatives.split(", ").count(),
        5,
        "5 alternatives: {stderr}"
    );
}

#[test]
fn over_long_input_is_truncated_with_a_warning() {
    let dir = fixture("bart");
    let long = "the small house ".repeat(200);
    let out = encdec(
        &[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--max-new-tokens",
            "5",
            "--num-beams",
            "1",
        ],
        format!("{long}\nthe dog\n").as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("input line 1") && stderr.contains("truncated"),
        "{stderr}"
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 2);
}

#[test]
fn invalid_utf8_names_the_line() {
    let dir = fixture("t5");
    let out = encdec(
        &["generate", "--model", dir.to_str().unwrap()],
        b"fine\nbad \xff byte\n",
    );
    assert_one_line_error(&out, &["line 2", "UTF-8"]);
}

#[test]
fn unknown_language_code_lists_the_valid_ones() {
    let dir = fixture("mbart");
    let out = encdec(
        &[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--tgt-lang",
            "xx_YY",
        ],
        b"the small house\n",
    );
    assert_one_line_error(&out, &["xx_YY", "de_DE", "en_XX"]);
}

#[test]
fn bad_generation_flags_are_refused() {
    let dir = fixture("t5");
    let d = dir.to_str().unwrap();
    for (flags, needle) in [
        (vec!["--num-beams", "0"], "num_beams"),
        (vec!["--do-sample", "--top-p", "1.5"], "top_p"),
        (vec!["--max-new-tokens", "0"], "max_new_tokens"),
        (
            vec!["--num-beams", "2", "--num-return-sequences", "3"],
            "num_return_sequences",
        ),
        (vec!["--early-stopping", "sometimes"], "early"),
        (vec!["--dtype", "f64"], "--dtype"),
        (vec!["--batch-size", "0"], "--batch-size"),
    ] {
        let mut args = vec!["generate", "--model", d];
        args.extend(flags.iter().copied());
        let out = encdec(&args, b"the small house\n");
        assert_one_line_error(&out, &[needle]);
    }
}

/// A copy of a fixture checkpoint in a temp dir, to break.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for e in fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
    }
    tmp
}

#[test]
fn forced_bos_outside_the_vocabulary_is_refused() {
    let tmp = copy_fixture("mbart");
    let p = tmp.path().join("generation_config.json");
    let mut v: Value = serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap();
    v["forced_bos_token_id"] = 99_999.into();
    fs::write(&p, v.to_string()).unwrap();
    let out = encdec(
        &["generate", "--model", tmp.path().to_str().unwrap()],
        b"the small house\n",
    );
    assert_one_line_error(&out, &["forced_bos_token_id", "99999"]);
}

#[test]
fn a_tokenizer_of_another_model_is_refused() {
    let tmp = copy_fixture("t5");
    for f in ["tokenizer.json", "spiece.model", "tokenizer_config.json"] {
        fs::copy(fixture("mt5").join(f), tmp.path().join(f)).unwrap();
    }
    let out = encdec(
        &["generate", "--model", tmp.path().to_str().unwrap()],
        b"the small house\n",
    );
    assert_one_line_error(&out, &["tokenizer", "700", "500"]);
}

#[test]
fn a_checkpoint_that_does_not_fit_its_config_is_refused() {
    let tmp = copy_fixture("t5");
    let p = tmp.path().join("config.json");
    let mut v: Value = serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap();
    let d_ff = v["d_ff"].as_u64().unwrap();
    v["d_ff"] = (d_ff + 4).into();
    fs::write(&p, v.to_string()).unwrap();
    let out = encdec(
        &["generate", "--model", tmp.path().to_str().unwrap()],
        b"the small house\n",
    );
    assert_one_line_error(&out, &["DenseReluDense", &d_ff.to_string()]);
}

#[test]
fn missing_model_and_offline_hub_id_say_where_they_looked() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_encdec"))
        .args(["generate", "--model", "someorg/not-a-model"])
        .env("HF_HUB_CACHE", tmp.path())
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_one_line_error(
        &out,
        &[
            "someorg/not-a-model",
            "models--someorg--not-a-model",
            "HF_HUB_OFFLINE",
        ],
    );
    let out = encdec(&["generate", "--model", "./no/such/dir"], b"x\n");
    assert_one_line_error(&out, &["no such directory"]);
}

#[test]
fn a_hub_id_resolves_from_the_local_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models--org--tiny-marian");
    let snap = repo.join("snapshots").join("0123abcd");
    fs::create_dir_all(&snap).unwrap();
    fs::create_dir_all(repo.join("refs")).unwrap();
    fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    for e in fs::read_dir(fixture("marian")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), snap.join(e.file_name())).unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_encdec"))
        .args([
            "generate",
            "--model",
            "org/tiny-marian",
            "--num-beams",
            "1",
            "--max-new-tokens",
            "20",
        ])
        .env("HF_HUB_CACHE", tmp.path())
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"the small house\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let g = golden("marian");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim_end(),
        g["cases"][0]["greedy"]["text"].as_str().unwrap()
    );
}

#[test]
fn cuda_without_a_driver_is_a_clear_error() {
    if encdec_cuda::driver_present() {
        eprintln!("SKIP: a CUDA driver is present; the no-driver error cannot be shown");
        return;
    }
    let dir = fixture("t5");
    let out = encdec(
        &[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--device",
            "cuda",
        ],
        b"the small house\n",
    );
    assert_one_line_error(&out, &["cuda"]);
}

#[test]
fn attention_map_is_drawn_as_svg_and_png_with_the_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let bart = fixture("bart");
    let svg = dir.path().join("map.svg");
    let png_path = dir.path().join("map.png");
    for (path, layer) in [(&svg, None), (&png_path, Some("0"))] {
        let mut args = vec![
            "generate".to_string(),
            "--model".into(),
            bart.display().to_string(),
            "--attention-map".into(),
            path.display().to_string(),
        ];
        if let Some(l) = layer {
            args.extend(["--attention-layer".into(), l.into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = encdec(&args, b"\nthe small house\n");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // the outputs are written as without the map
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    }
    // the first non-empty line is drawn, labelled with its tokens
    let text = fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..80.min(text.len())]);
    assert!(text.trim_end().ends_with("</svg>"));
    for needle in [
        "input line 2",
        "decoder layer 1 (mean of 4 heads)",
        "Ġsmall",
        "Ġhouse",
        "&lt;/s&gt;",
    ] {
        assert!(text.contains(needle), "{needle:?} not in the SVG");
    }
    let decoder = png::Decoder::new(std::io::BufReader::new(fs::File::open(&png_path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert!(info.width >= 300 && info.height >= 100, "{info:?}");
    let pixels = &buf[..info.buffer_size()];
    let dark = pixels
        .chunks(3)
        .filter(|p| p.iter().all(|&c| c < 80))
        .count();
    assert!(
        dark > 100,
        "the PNG has no dark pixels: no text or cells drawn"
    );
}

#[test]
fn attention_map_bad_requests_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bart = fixture("bart").display().to_string();
    let jpg = dir.path().join("map.jpg").display().to_string();
    let out = encdec(
        &["generate", "--model", &bart, "--attention-map", &jpg],
        b"the dog\n",
    );
    assert_one_line_error(&out, &["map.jpg", ".svg or .png"]);
    let svg = dir.path().join("map.svg").display().to_string();
    let out = encdec(
        &[
            "generate",
            "--model",
            &bart,
            "--attention-map",
            &svg,
            "--attention-layer",
            "9",
        ],
        b"the dog\n",
    );
    assert_one_line_error(&out, &["--attention-map", "layer 9", "has 2"]);
    assert!(!Path::new(&svg).exists());
    let out = encdec(
        &["generate", "--model", &bart, "--attention-map", &svg],
        b"\n\n",
    );
    assert_one_line_error(&out, &["every input line is empty"]);
}
