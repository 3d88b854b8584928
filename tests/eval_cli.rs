//! `encdec eval` and `encdec eval merge` (issue 7): bad input gives one clear line
//! on stderr; on tiny fixture checkpoints and a synthetic data directory, eval
//! writes what `encdec generate` gives, resumes after an interruption, refuses to
//! mix settings, and shards merge to the unsharded scores.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{assert_one_line_error, fixture, SENTENCES};
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs the binary in `cwd` (a temp dir, so that default `runs/` paths land there).
fn encdec_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_encdec"))
        .args(args)
        .current_dir(cwd)
        .env_remove("ENCDEC_DATA")
        .stdin(Stdio::null())
        .output()
        .expect("the encdec binary runs")
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// newstest2014 en-de in sacreBLEU's plain-text form, with the registry's 3003
/// lines (only the first few are evaluated with --limit).
fn wmt_data(root: &Path) -> PathBuf {
    let data = root.join("data");
    let wmt = data.join("wmt");
    fs::create_dir_all(&wmt).unwrap();
    let mut src = String::new();
    let mut refs = String::new();
    for i in 0..3003 {
        let line = SENTENCES[i % SENTENCES.len()];
        src.push_str(line);
        src.push('\n');
        // Half the references equal the source (a copy model scores well on them).
        if i % 2 == 0 {
            refs.push_str(line);
        } else {
            refs.push_str("das kleine Haus");
        }
        refs.push('\n');
    }
    fs::write(wmt.join("newstest2014.en-de.en"), src).unwrap();
    fs::write(wmt.join("newstest2014.en-de.de"), refs).unwrap();
    data
}

/// CNN/DailyMail as test.source / test.target with the registry's 11490 lines.
fn cnndm_data(root: &Path) -> PathBuf {
    let data = root.join("data");
    let dir = data.join("cnndm");
    fs::create_dir_all(&dir).unwrap();
    let mut src = String::new();
    let mut tgt = String::new();
    for i in 0..11490 {
        let a = SENTENCES[i % SENTENCES.len()];
        let b = SENTENCES[(i + 3) % SENTENCES.len()];
        src.push_str(&format!("{a} {b}\n"));
        tgt.push_str(&format!("{a}\n"));
    }
    fs::write(dir.join("test.source"), src).unwrap();
    fs::write(dir.join("test.target"), tgt).unwrap();
    data
}

fn first_sources(data: &Path, file: &str, n: usize) -> String {
    let text = fs::read_to_string(data.join(file)).unwrap();
    text.lines().take(n).map(|l| format!("{l}\n")).collect()
}

/// `encdec generate` over `input` with `flags`.
fn generate(cwd: &Path, model: &str, input: &str, flags: &[&str]) -> String {
    let path = cwd.join("gen-input.txt");
    fs::write(&path, input).unwrap();
    let mut args = vec!["generate", "--model", model, "--input", s(&path)];
    args.extend_from_slice(flags);
    let out = encdec_in(cwd, &args);
    assert_ok(&out);
    String::from_utf8(out.stdout).unwrap()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn scores(dir: &Path) -> Value {
    read_json(&dir.join("scores.json"))["scores"].clone()
}

fn eval_args<'a>(model: &'a str, dataset: &'a str, data: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "eval",
        "--model",
        model,
        "--dataset",
        dataset,
        "--data",
        s(data),
        "--out",
        s(out),
    ]
}

// ---------------------------------------------------------------------------------
// Bad input

#[test]
fn unknown_dataset_lists_the_valid_names() {
    let tmp = tempfile::tempdir().unwrap();
    let t5 = fixture("t5");
    let out = encdec_in(
        tmp.path(),
        &["eval", "--model", s(&t5), "--dataset", "wmt99-xx-yy"],
    );
    assert_one_line_error(
        &out,
        &["wmt99-xx-yy", "cnndm", "wmt14-en-de", "wmt14-en-fr"],
    );
}

#[test]
fn missing_data_says_what_to_get() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let t5 = fixture("t5");
    let out = encdec_in(
        tmp.path(),
        &eval_args(s(&t5), "wmt14-en-de", &empty, &tmp.path().join("o")),
    );
    assert_one_line_error(
        &out,
        &[
            "wmt14-en-de",
            "newstest2014.en-de.en",
            "sacrebleu",
            "--data",
        ],
    );
    let out = encdec_in(
        tmp.path(),
        &eval_args(s(&t5), "cnndm", &empty, &tmp.path().join("o")),
    );
    assert_one_line_error(&out, &["cnndm", "test.source", "cnn_dailymail"]);
}

#[test]
fn shard_out_of_range_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = wmt_data(tmp.path());
    let t5 = fixture("t5");
    let o = tmp.path().join("o");
    let mut args = eval_args(s(&t5), "wmt14-en-de", &data, &o);
    args.extend(["--shard", "3/2"]);
    assert_one_line_error(
        &encdec_in(tmp.path(), &args),
        &["--shard 3/2", "0 <= I < N"],
    );
}

#[test]
fn malformed_shard_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = wmt_data(tmp.path());
    let t5 = fixture("t5");
    let o = tmp.path().join("o");
    for bad in ["x", "1-2", "0/0", "-1/2", "1/", "/2"] {
        let mut args = eval_args(s(&t5), "wmt14-en-de", &data, &o);
        let flag = format!("--shard={bad}");
        args.push(&flag);
        assert_one_line_error(&encdec_in(tmp.path(), &args), &["--shard", "I/N"]);
    }
}

#[test]
fn zero_limit_batch_size_and_unknown_tokenizer_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = wmt_data(tmp.path());
    let t5 = fixture("t5");
    let o = tmp.path().join("o");
    let mut args = eval_args(s(&t5), "wmt14-en-de", &data, &o);
    args.extend(["--limit", "0"]);
    assert_one_line_error(&encdec_in(tmp.path(), &args), &["--limit"]);
    let mut args = eval_args(s(&t5), "wmt14-en-de", &data, &o);
    args.extend(["--batch-size", "0"]);
    assert_one_line_error(&encdec_in(tmp.path(), &args), &["--batch-size"]);
    let mut args = eval_args(s(&t5), "wmt14-en-de", &data, &o);
    args.extend(["--tokenize", "bogus"]);
    assert_one_line_error(&encdec_in(tmp.path(), &args), &["bogus", "13a", "intl"]);
}

#[test]
fn merge_of_a_non_run_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = encdec_in(tmp.path(), &["eval", "merge", s(tmp.path())]);
    assert_one_line_error(&out, &["run.json"]);
}

// ---------------------------------------------------------------------------------
// Runs on the fixtures

#[test]
fn translation_eval_equals_generate_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = wmt_data(tmp.path());
    let t5 = fixture("t5");
    let out_dir = tmp.path().join("run");
    let mut args = eval_args(s(&t5), "wmt14-en-de", &data, &out_dir);
    args.extend(["--limit", "3", "--batch-size", "2"]);
    let out = encdec_in(tmp.path(), &args);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("BLEU ="), "{stdout}");

    // T5: the translation prefix from the data set's languages.
    let run = read_json(&out_dir.join("run.json"));
    assert_eq!(run["prefix"], "translate English to German: ");
    assert_eq!(run["examples"], serde_json::json!([0, 3]));

    let hyps = fs::read_to_string(out_dir.join("hyps.txt")).unwrap();
    assert_eq!(hyps.lines().count(), 3);
    let sources = first_sources(&data, "wmt/newstest2014.en-de.en", 3);
    let want = generate(
        tmp.path(),
        s(&t5),
        &sources,
        &["--prefix", "translate English to German: "],
    );
    assert_eq!(hyps, want);

    let sc = read_json(&out_dir.join("scores.json"));
    for key in ["bleu", "chrf"] {
        assert!(sc["scores"][key].is_f64(), "{key} missing: {sc}");
    }
    assert!(sc["bleu"]["signature"]
        .as_str()
        .unwrap()
        .contains("tok:13a"));
    assert_eq!(sc["n"], 3);
    assert!(sc["elapsed_s"].is_f64());
    assert!(sc["tokens_per_s"].is_f64());
    let report = fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(
        report.contains("wmt14-en-de") && report.contains("bleu"),
        "{report}"
    );

    // Interrupted: one complete line and half of the next one.
    let first = hyps.lines().next().unwrap();
    fs::write(out_dir.join("hyps.txt"), format!("{first}\nhalf a li")).unwrap();
    let out = encdec_in(tmp.path(), &args);
    assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unfinished"), "{stderr}");
    assert!(stderr.contains("1 of 3"), "{stderr}");
    assert_eq!(fs::read_to_string(out_dir.join("hyps.txt")).unwrap(), hyps);
    assert_eq!(scores(&out_dir), sc["scores"]);

    // Complete: a re-run only re-scores.
    let out = encdec_in(tmp.path(), &args);
    assert_ok(&out);
    assert_eq!(fs::read_to_string(out_dir.join("hyps.txt")).unwrap(), hyps);

    // Other settings: refused, unless --restart.
    let mut other = args.clone();
    other.extend(["--num-beams", "2"]);
    assert_one_line_error(
        &encdec_in(tmp.path(), &other),
        &["num_beams", "--restart", s(&out_dir)],
    );
    let mut other_limit = eval_args(s(&t5), "wmt14-en-de", &data, &out_dir);
    other_limit.extend(["--limit", "2"]);
    assert_one_line_error(&encdec_in(tmp.path(), &other_limit), &["limit"]);
    other.push("--restart");
    assert_ok(&encdec_in(tmp.path(), &other));
    let run = read_json(&out_dir.join("run.json"));
    assert_eq!(run["generation"]["num_beams"], 2);
    assert_eq!(
        fs::read_to_string(out_dir.join("hyps.txt"))
            .unwrap()
            .lines()
            .count(),
        3
    );
}

#[test]
fn shards_merge_to_the_unsharded_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let data = wmt_data(tmp.path());
    let t5 = fixture("t5");
    let model = s(&t5);
    let base = |extra: &[&str]| -> Output {
        let mut args = vec![
            "eval",
            "--model",
            model,
            "--dataset",
            "wmt14-en-de",
            "--data",
            s(&data),
            "--limit",
            "5",
        ];
        args.extend_from_slice(extra);
        encdec_in(tmp.path(), &args)
    };
    // Default output directories under runs/ of the working directory.
    assert_ok(&base(&[]));
    let whole = tmp.path().join("runs/t5-wmt14-en-de-limit-5");
    let whole_hyps = fs::read_to_string(whole.join("hyps.txt")).unwrap();
    assert_eq!(whole_hyps.lines().count(), 5);

    assert_ok(&base(&["--shard", "1/2"]));
    assert_ok(&base(&["--shard", "0/2"]));
    let s0 = tmp.path().join("runs/t5-wmt14-en-de-limit-5-shard-0-of-2");
    let s1 = tmp.path().join("runs/t5-wmt14-en-de-limit-5-shard-1-of-2");
    assert_eq!(
        fs::read_to_string(s0.join("hyps.txt"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    assert_eq!(
        fs::read_to_string(s1.join("hyps.txt"))
            .unwrap()
            .lines()
            .count(),
        3
    );

    // A missing shard is named.
    assert_one_line_error(
        &encdec_in(tmp.path(), &["eval", "merge", s(&s0)]),
        &["missing shard", "1/2"],
    );
    // The same shard twice.
    assert_one_line_error(
        &encdec_in(tmp.path(), &["eval", "merge", s(&s0), s(&s0)]),
        &["0/2", "twice"],
    );
    // An unsharded run is not a shard.
    assert_one_line_error(
        &encdec_in(tmp.path(), &["eval", "merge", s(&s0), s(&whole)]),
        &["not a shard"],
    );

    let merged = tmp.path().join("merged");
    let out = encdec_in(
        tmp.path(),
        &["eval", "merge", s(&s1), s(&s0), "--out", s(&merged)],
    );
    assert_ok(&out);
    assert_eq!(
        fs::read_to_string(merged.join("hyps.txt")).unwrap(),
        whole_hyps
    );
    assert_eq!(scores(&merged), scores(&whole));
    let m = read_json(&merged.join("scores.json"));
    assert_eq!(m["n"], 5);
    assert!(m["bleu"]["signature"].is_string());
    assert!(merged.join("report.md").is_file());

    // Shards of different runs are refused, naming the difference.
    let other = tmp.path().join("other-shard-1");
    assert_ok(&base(&[
        "--shard",
        "1/2",
        "--num-beams",
        "2",
        "--out",
        s(&other),
    ]));
    assert_one_line_error(
        &encdec_in(tmp.path(), &["eval", "merge", s(&s0), s(&other)]),
        &["different runs", "num_beams"],
    );
    // Different shard counts.
    let third = tmp.path().join("third");
    assert_ok(&base(&["--shard", "2/3", "--out", s(&third)]));
    assert_one_line_error(
        &encdec_in(tmp.path(), &["eval", "merge", s(&s0), s(&third)]),
        &["shard"],
    );
    // An unfinished shard.
    fs::write(s1.join("hyps.txt"), "only one\n").unwrap();
    assert_one_line_error(
        &encdec_in(tmp.path(), &["eval", "merge", s(&s0), s(&s1)]),
        &["unfinished", "1 of 3"],
    );
}

#[test]
fn summarization_uses_the_t5_prefix_and_scores_rouge() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cnndm_data(tmp.path());
    let t5 = fixture("t5");
    let out_dir = tmp.path().join("run");
    let mut args = eval_args(s(&t5), "cnndm", &data, &out_dir);
    args.extend(["--limit", "3"]);
    assert_ok(&encdec_in(tmp.path(), &args));
    let run = read_json(&out_dir.join("run.json"));
    assert_eq!(run["prefix"], "summarize: ");
    let hyps = fs::read_to_string(out_dir.join("hyps.txt")).unwrap();
    let sources = first_sources(&data, "cnndm/test.source", 3);
    assert_eq!(
        hyps,
        generate(tmp.path(), s(&t5), &sources, &["--prefix", "summarize: "])
    );
    let sc = scores(&out_dir);
    for key in ["rouge1", "rouge2", "rougeL", "rougeLsum"] {
        assert!(sc[key].is_f64(), "{key} missing: {sc}");
    }
    let full = read_json(&out_dir.join("scores.json"));
    assert_eq!(full["rouge"]["settings"]["split_sentences"], true, "{full}");

    // --prefix "" turns the default off: a different run.
    let mut no_prefix = args.clone();
    no_prefix.extend(["--prefix", ""]);
    assert_one_line_error(&encdec_in(tmp.path(), &no_prefix), &["prefix"]);
}

#[test]
fn multilingual_checkpoints_get_the_language_codes_of_the_data_set() {
    let tmp = tempfile::tempdir().unwrap();
    let data = wmt_data(tmp.path());
    for (fixture_name, src, tgt) in [
        ("mbart", "en_XX", "de_DE"),
        ("m2m100", "eng_Latn", "deu_Latn"),
    ] {
        let model = fixture(fixture_name);
        let out_dir = tmp.path().join(fixture_name);
        let mut args = eval_args(s(&model), "wmt14-en-de", &data, &out_dir);
        args.extend(["--limit", "3"]);
        assert_ok(&encdec_in(tmp.path(), &args));
        let run = read_json(&out_dir.join("run.json"));
        assert_eq!(run["src_lang"], src, "{fixture_name}");
        assert_eq!(run["tgt_lang"], tgt, "{fixture_name}");
        let sources = first_sources(&data, "wmt/newstest2014.en-de.en", 3);
        assert_eq!(
            fs::read_to_string(out_dir.join("hyps.txt")).unwrap(),
            generate(
                tmp.path(),
                s(&model),
                &sources,
                &["--src-lang", src, "--tgt-lang", tgt]
            ),
            "{fixture_name}"
        );
    }
}

/// The real newstest2014 from ../shared/data, through the default data roots.
#[test]
fn real_wmt14_from_shared_data() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !root
        .join("../shared/data/wmt/newstest2014.en-de.en")
        .is_file()
    {
        eprintln!(
            "SKIP real_wmt14_from_shared_data: ../shared/data/wmt/newstest2014.en-de.en is absent"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let marian = fixture("marian");
    let out_dir = tmp.path().join("run");
    let out = Command::new(env!("CARGO_BIN_EXE_encdec"))
        .args([
            "eval",
            "--model",
            s(&marian),
            "--dataset",
            "wmt14-en-de",
            "--limit",
            "4",
            "--out",
            s(&out_dir),
        ])
        .current_dir(root)
        .env_remove("ENCDEC_DATA")
        .output()
        .unwrap();
    assert_ok(&out);
    let run = read_json(&out_dir.join("run.json"));
    assert_eq!(run["data"]["examples"], 4);
    assert!(run["data"]["files"][0]
        .as_str()
        .unwrap()
        .contains("newstest2014.en-de.en"));
    assert_eq!(
        fs::read_to_string(out_dir.join("hyps.txt"))
            .unwrap()
            .lines()
            .count(),
        4
    );
    assert!(scores(&out_dir)["bleu"].is_f64());
}
