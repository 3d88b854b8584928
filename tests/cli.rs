//! The binary's contract: every bad input is one clear line on stderr and a
//! non-zero exit, never a panic.

mod common;

use common::assert_one_line_error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn encdec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_encdec"))
        .args(args)
        .output()
        .expect("the encdec binary runs")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/models/tests/fixtures")
        .join(name)
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

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn info_of_a_catalogue_shape_reports_transformers_parameter_count() {
    let out = encdec(&["info", "--arch", "t5-small", "--format", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // transformers' T5ForConditionalGeneration(t5-small).num_parameters().
    assert_eq!(v["parameters"], 60_506_624);
    assert_eq!(v["d_model"], 512);
}

#[test]
fn info_validates_a_real_checkpoint() {
    let out = encdec(&["info", "--model", s(&fixture("tiny-bart"))]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("BartForConditionalGeneration"), "{stdout}");
    assert!(stdout.contains("valid"), "{stdout}");
}

#[test]
fn info_unknown_arch_lists_the_catalogue() {
    assert_one_line_error(
        &encdec(&["info", "--arch", "t5-huge"]),
        &["t5-huge", "t5-small"],
    );
}

#[test]
fn info_missing_config() {
    let tmp = tempfile::tempdir().unwrap();
    assert_one_line_error(
        &encdec(&["info", "--model", s(tmp.path())]),
        &["config.json"],
    );
}

#[test]
fn info_unreadable_directory() {
    assert_one_line_error(
        &encdec(&["info", "--model", "/nonexistent/encdec-model"]),
        &["/nonexistent/encdec-model"],
    );
}

#[test]
fn info_unknown_model_type_lists_supported() {
    let tmp = copy_fixture("tiny-bart");
    let cfg = tmp.path().join("config.json");
    let text = fs::read_to_string(&cfg).unwrap();
    fs::write(
        &cfg,
        text.replace("\"model_type\": \"bart\"", "\"model_type\": \"gpt2\""),
    )
    .unwrap();
    assert_one_line_error(
        &encdec(&["info", "--model", s(tmp.path())]),
        &["gpt2", "t5", "bart"],
    );
}

#[test]
fn info_truncated_safetensors() {
    let tmp = copy_fixture("tiny-bart");
    let st = tmp.path().join("model.safetensors");
    let bytes = fs::read(&st).unwrap();
    fs::write(&st, &bytes[..bytes.len() - 100]).unwrap();
    assert_one_line_error(
        &encdec(&["info", "--model", s(tmp.path())]),
        &["model.safetensors"],
    );
}

#[test]
fn info_header_not_json() {
    let tmp = copy_fixture("tiny-bart");
    let st = tmp.path().join("model.safetensors");
    let mut bytes = fs::read(&st).unwrap();
    bytes[8] = b'!';
    fs::write(&st, &bytes).unwrap();
    assert_one_line_error(
        &encdec(&["info", "--model", s(tmp.path())]),
        &["model.safetensors"],
    );
}

#[test]
fn info_missing_tensor_is_named() {
    // A config with more layers than the checkpoint stores.
    let tmp = copy_fixture("tiny-bart");
    let cfg = tmp.path().join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&cfg).unwrap()).unwrap();
    let n = v["encoder_layers"].as_u64().unwrap();
    v["encoder_layers"] = (n + 1).into();
    fs::write(&cfg, v.to_string()).unwrap();
    assert_one_line_error(
        &encdec(&["info", "--model", s(tmp.path())]),
        &[&format!("encoder.layers.{n}.")],
    );
}

#[test]
fn info_wrong_shape_names_both_shapes() {
    let tmp = copy_fixture("tiny-bart");
    let cfg = tmp.path().join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&cfg).unwrap()).unwrap();
    let ffn = v["encoder_ffn_dim"].as_u64().unwrap();
    v["encoder_ffn_dim"] = (ffn * 2).into();
    fs::write(&cfg, v.to_string()).unwrap();
    let out = encdec(&["info", "--model", s(tmp.path())]);
    assert_one_line_error(&out, &["fc1", &ffn.to_string(), &(ffn * 2).to_string()]);
}

#[test]
fn info_pytorch_bin_only_says_convert() {
    let tmp = tempfile::tempdir().unwrap();
    fs::copy(
        fixture("tiny-bart").join("config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    fs::write(tmp.path().join("pytorch_model.bin"), b"not really").unwrap();
    assert_one_line_error(
        &encdec(&["info", "--model", s(tmp.path())]),
        &["safetensors"],
    );
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn score_bleu_of_identical_files_is_100() {
    let tmp = tempfile::tempdir().unwrap();
    let h = write(
        tmp.path(),
        "h.txt",
        b"the cat sat on the mat\nhello world again\n",
    );
    let out = encdec(&[
        "score",
        "bleu",
        "--hyp",
        s(&h),
        "--ref",
        s(&h),
        "--format",
        "json",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["metric"], "bleu");
    // sacrebleu 2.6.0 prints 100.00000000000004 here (exp of the mean log of four
    // 100.0 precisions); we are bit-exact with it.
    assert_eq!(v["score"].as_f64().unwrap(), 100.00000000000004);
}

#[test]
fn score_line_count_mismatch_names_both_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let h = write(tmp.path(), "h.txt", b"a\nb\nc\n");
    let r = write(tmp.path(), "r.txt", b"a\nb\n");
    for metric in ["bleu", "chrf", "rouge"] {
        let out = encdec(&["score", metric, "--hyp", s(&h), "--ref", s(&r)]);
        assert_one_line_error(&out, &["3 lines", "2", "r.txt"]);
    }
}

#[test]
fn score_missing_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let h = write(tmp.path(), "h.txt", b"a\n");
    let out = encdec(&[
        "score",
        "bleu",
        "--hyp",
        s(&h),
        "--ref",
        "/nonexistent/ref.txt",
    ]);
    assert_one_line_error(&out, &["/nonexistent/ref.txt"]);
}

#[test]
fn score_invalid_utf8_names_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let h = write(tmp.path(), "h.txt", b"fine\nbad \xff byte\n");
    let out = encdec(&["score", "rouge", "--hyp", s(&h), "--ref", s(&h)]);
    assert_one_line_error(&out, &["h.txt", "line 2"]);
}

#[test]
fn score_empty_file() {
    let tmp = tempfile::tempdir().unwrap();
    let h = write(tmp.path(), "h.txt", b"");
    let out = encdec(&["score", "bleu", "--hyp", s(&h), "--ref", s(&h)]);
    assert_one_line_error(&out, &["h.txt", "empty"]);
}

#[test]
fn score_unknown_tokenizer_lists_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let h = write(tmp.path(), "h.txt", b"a\n");
    let out = encdec(&[
        "score",
        "bleu",
        "--hyp",
        s(&h),
        "--ref",
        s(&h),
        "--tokenize",
        "moses",
    ]);
    assert_one_line_error(&out, &["moses", "13a", "intl"]);
}

#[test]
fn score_rouge_unknown_type_lists_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let h = write(tmp.path(), "h.txt", b"a\n");
    let out = encdec(&[
        "score",
        "rouge",
        "--hyp",
        s(&h),
        "--ref",
        s(&h),
        "--types",
        "rougeX",
    ]);
    assert_one_line_error(&out, &["rougeX", "rouge1"]);
}

#[test]
fn table_unknown_name_lists_tables() {
    assert_one_line_error(&encdec(&["table", "nope"]), &["nope", "wmt22-systems"]);
}

#[test]
fn table_wmt22_systems_reproduces_official_bleu() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if !data.is_dir() {
        eprintln!("SKIP table_wmt22_systems_reproduces_official_bleu: ../shared/data not found");
        return;
    }
    let out = encdec(&[
        "table",
        "wmt22-systems",
        "--data",
        s(&data),
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 36, "18 systems x (BLEU, chrF)");
    for r in rows {
        assert_eq!(r["status"], "ok", "{r}");
    }
}
