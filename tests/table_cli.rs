//! `encdec table` running model rows, and data sets from the Hugging Face cache (issue 7).
//!
//! On tiny fixture checkpoints and a synthetic data directory: a table file's model
//! rows generate with `encdec eval`'s settings and their scores equal `encdec score`
//! on the hypotheses they produced; `--limit` marks rows partial; an absent checkpoint
//! is not run, with the command that fetches it; bad table names and files give one
//! clear line. CNN/DailyMail laid out in a temporary Hugging Face cache (the hub's
//! parquet layout, a 2 KB stand-in made by tools/make_cnndm_parquet_fixture.py) is
//! found without `--data`; offline and absent, the error names what to get. newstest2014
//! en-de (a 2 KB stand-in for `wmt/wmt14` `de-en/test-00000-of-00001.parquet`, made by
//! tools/make_wmt_parquet_fixture.py) is downloaded from a stand-in hub and then found
//! in the cache; the report names the hub copy; a row count that is not the registry's
//! is one clear line.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_one_line_error, fixture, SENTENCES};
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A temp dir with `work/` as the working directory (so `../shared/data` does not
/// exist) and `hf/` as an empty `HF_HOME`.
struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        fs::create_dir_all(root.join("work")).unwrap();
        fs::create_dir_all(root.join("hf")).unwrap();
        Sandbox { _tmp: tmp, root }
    }

    fn work(&self) -> PathBuf {
        self.root.join("work")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_encdec"));
        cmd.args(args)
            .current_dir(self.work())
            .env_remove("ENCDEC_DATA")
            .env_remove("HF_HUB_CACHE")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("TRANSFORMERS_OFFLINE")
            .env("HF_HOME", self.root.join("hf"))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the binary offline, with this sandbox's HF_HOME and no $ENCDEC_DATA.
    fn encdec(&self, args: &[&str]) -> Output {
        self.command(args)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .expect("the encdec binary runs")
    }

    /// Runs the binary online against the hub at `endpoint` (no proxies).
    fn encdec_online(&self, endpoint: &str, args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        cmd.env_remove("HF_HUB_OFFLINE")
            .env("HF_ENDPOINT", endpoint);
        for k in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            cmd.env_remove(k);
        }
        cmd.output().expect("the encdec binary runs")
    }
}

fn assert_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// CNN/DailyMail as test.source / test.target and newstest2014 en-de as plain text,
/// with the registry's line counts (11490 and 3003).
fn data_dir(root: &Path) -> PathBuf {
    let data = root.join("data");
    fs::create_dir_all(data.join("cnndm")).unwrap();
    fs::create_dir_all(data.join("wmt")).unwrap();
    let n = SENTENCES.len();
    let (mut src, mut tgt) = (String::new(), String::new());
    for i in 0..11490 {
        src.push_str(&format!(
            "{} {}\n",
            SENTENCES[i % n],
            SENTENCES[(i + 3) % n]
        ));
        tgt.push_str(&format!("{}\n", SENTENCES[i % n]));
    }
    fs::write(data.join("cnndm/test.source"), src).unwrap();
    fs::write(data.join("cnndm/test.target"), tgt).unwrap();
    let (mut src, mut tgt) = (String::new(), String::new());
    for i in 0..3003 {
        src.push_str(&format!("{}\n", SENTENCES[i % n]));
        tgt.push_str(if i % 2 == 0 {
            SENTENCES[i % n]
        } else {
            "das kleine Haus"
        });
        tgt.push('\n');
    }
    fs::write(data.join("wmt/newstest2014.en-de.en"), src).unwrap();
    fs::write(data.join("wmt/newstest2014.en-de.de"), tgt).unwrap();
    data
}

/// The first `n` lines of `file`, each with its newline.
fn head(file: &Path, n: usize) -> String {
    let text = fs::read_to_string(file).unwrap();
    text.lines().take(n).map(|l| format!("{l}\n")).collect()
}

/// `encdec generate` over `input` with `flags`.
fn generate(sb: &Sandbox, model: &Path, input: &str, flags: &[&str]) -> String {
    let path = sb.root.join("gen-input.txt");
    fs::write(&path, input).unwrap();
    let mut args = vec!["generate", "--model", s(model), "--input", s(&path)];
    args.extend_from_slice(flags);
    assert_ok(&sb.encdec(&args))
}

/// A table with a T5 summarization row (ROUGE), a BART translation row (BLEU) and a
/// row whose checkpoint is nowhere.
fn table_file(dir: &Path) -> PathBuf {
    let text = format!(
        r#"
name = "fixtures"
title = "Fixture checkpoints"
notes = "tiny random checkpoints"

[[rows]]
kind = "model"
system = "T5 fixture"
checkpoint = "{t5}"
dataset = "cnndm"
metrics = ["rouge1", "rouge2", "rougeLsum"]
split_sentences = true
published = {{ rouge1 = 40.0, rouge2 = 20.0, rougeLsum = 30.0 }}
source = "test"

[rows.generation]
num_beams = 2
max_length = 12

[[rows]]
kind = "model"
system = "BART fixture"
checkpoint = "{bart}"
dataset = "wmt14-en-de"
metrics = ["bleu"]
published = {{ bleu = 10.0 }}
source = "test"

[[rows]]
kind = "model"
system = "Absent"
checkpoint = "nobody/absent-model"
dataset = "cnndm"
metrics = ["rouge1"]
published = {{ rouge1 = 40.0 }}
source = "test"
"#,
        t5 = s(&fixture("t5")),
        bart = s(&fixture("bart")),
    );
    let path = dir.join("fixtures-table.toml");
    fs::write(&path, text).unwrap();
    path
}

fn rows_of<'a>(report: &'a Value, system: &str) -> Vec<&'a Value> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["system"] == system)
        .collect()
}

fn measured(report: &Value, system: &str, metric: &str) -> f64 {
    let row = rows_of(report, system)
        .into_iter()
        .find(|r| r["metric"] == metric)
        .unwrap_or_else(|| panic!("no {system} {metric} in {report}"));
    row["measured"]
        .as_f64()
        .unwrap_or_else(|| panic!("{system} {metric} not measured: {row}"))
}

// ---------------------------------------------------------------------------------
// Model rows

#[test]
fn model_rows_run_and_score_what_encdec_score_gives() {
    let sb = Sandbox::new();
    let data = data_dir(&sb.root);
    let table = table_file(&sb.root);
    let saved = sb.root.join("saved");
    let out = sb.encdec(&[
        "table",
        s(&table),
        "--data",
        s(&data),
        "--limit",
        "3",
        "--batch-size",
        "2",
        "--save-outputs",
        s(&saved),
        "--format",
        "json",
    ]);
    let report: Value = serde_json::from_str(&assert_ok(&out)).unwrap();
    assert_eq!(report["table"], "fixtures");

    // Every measured row ran on 3 examples and says it is partial, with no diff.
    for system in ["T5 fixture", "BART fixture"] {
        for r in rows_of(&report, system) {
            assert!(r["measured"].is_f64(), "{r}");
            assert_eq!(r["examples"], 3, "{r}");
            assert_eq!(r["diff"], Value::Null, "{r}");
            let status = r["status"].as_str().unwrap();
            assert!(
                status.starts_with("partial: measured on the first 3 of "),
                "{status}"
            );
            assert!(!status.starts_with("not run"), "{status}");
        }
    }

    // T5: the hypotheses are `encdec generate`'s with the T5 prefix and the row's
    // settings, and ROUGE equals `encdec score rouge` on them.
    let t5_hyps = saved.join("t5-fixture.cnndm.hyps.txt");
    let sources = head(&data.join("cnndm/test.source"), 3);
    assert_eq!(
        fs::read_to_string(&t5_hyps).unwrap(),
        generate(
            &sb,
            &fixture("t5"),
            &sources,
            &[
                "--prefix",
                "summarize: ",
                "--num-beams",
                "2",
                "--max-length",
                "12"
            ]
        )
    );
    let refs = sb.root.join("cnndm-refs.txt");
    fs::write(&refs, head(&data.join("cnndm/test.target"), 3)).unwrap();
    let scored = assert_ok(&sb.encdec(&[
        "score",
        "rouge",
        "--hyp",
        s(&t5_hyps),
        "--ref",
        s(&refs),
        "--types",
        "rouge1,rouge2,rougeLsum",
        "--split-sentences",
        "--format",
        "json",
    ]));
    let scored: Value = serde_json::from_str(&scored).unwrap();
    for metric in ["rouge1", "rouge2", "rougeLsum"] {
        let want = scored[metric]["fmeasure"].as_f64().unwrap();
        let got = measured(&report, "T5 fixture", metric);
        assert!(
            (got - want).abs() < 1e-9,
            "{metric}: table {got}, score {want}"
        );
    }
    // The saved references are the first 3 targets.
    let saved_refs: Vec<String> = fs::read_to_string(saved.join("t5-fixture.cnndm.refs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(saved_refs.len(), 3);
    assert_eq!(saved_refs[0], SENTENCES[0]);

    // BART: checkpoint defaults, BLEU equals `encdec score bleu`.
    let bart_hyps = saved.join("bart-fixture.wmt14-en-de.hyps.txt");
    let sources = head(&data.join("wmt/newstest2014.en-de.en"), 3);
    assert_eq!(
        fs::read_to_string(&bart_hyps).unwrap(),
        generate(&sb, &fixture("bart"), &sources, &[])
    );
    let refs = sb.root.join("wmt-refs.txt");
    fs::write(&refs, head(&data.join("wmt/newstest2014.en-de.de"), 3)).unwrap();
    let scored = assert_ok(&sb.encdec(&[
        "score",
        "bleu",
        "--hyp",
        s(&bart_hyps),
        "--ref",
        s(&refs),
        "--format",
        "json",
    ]));
    let scored: Value = serde_json::from_str(&scored).unwrap();
    let want = scored["score"].as_f64().unwrap();
    let got = measured(&report, "BART fixture", "bleu");
    assert!((got - want).abs() < 1e-9, "bleu: table {got}, score {want}");

    // The absent checkpoint is not run, and the reason says how to fetch it.
    let absent = rows_of(&report, "Absent");
    assert_eq!(absent.len(), 1);
    assert_eq!(absent[0]["measured"], Value::Null);
    let status = absent[0]["status"].as_str().unwrap();
    for want in [
        "not run: checkpoint nobody/absent-model is not available locally",
        "--download",
        "huggingface-cli download nobody/absent-model",
    ] {
        assert!(status.contains(want), "{want:?} not in {status}");
    }
    assert!(!saved.join("absent.cnndm.hyps.txt").exists());
}

#[test]
fn text_report_says_partial_and_system_filters_rows() {
    let sb = Sandbox::new();
    let data = data_dir(&sb.root);
    let table = table_file(&sb.root);
    let out = sb.encdec(&[
        "table",
        s(&table),
        "--data",
        s(&data),
        "--limit",
        "2",
        "--system",
        "t5",
    ]);
    let text = assert_ok(&out);
    assert!(text.contains("T5 fixture"), "{text}");
    assert!(!text.contains("BART fixture"), "{text}");
    assert!(!text.contains("Absent"), "{text}");
    assert!(
        text.contains("3 partial (on the first 2 examples only: NOT the table's numbers)"),
        "{text}"
    );

    let out = sb.encdec(&["table", s(&table), "--system", "nothing-like-this"]);
    assert_one_line_error(&out, &["nothing-like-this", "T5 fixture", "BART fixture"]);

    // --no-run: model rows are reported as not run without generating.
    let out = sb.encdec(&["table", s(&table), "--data", s(&data), "--no-run"]);
    let text = assert_ok(&out);
    assert!(text.contains("5 not run"), "{text}");
}

// ---------------------------------------------------------------------------------
// Bad input

#[test]
fn missing_table_file_is_one_clear_line() {
    let sb = Sandbox::new();
    let path = sb.root.join("no-such-table.toml");
    let out = sb.encdec(&["table", s(&path)]);
    assert_one_line_error(&out, &[s(&path), "no such table file", "cnndm-rouge"]);
}

#[test]
fn bad_toml_names_the_file_and_line() {
    let sb = Sandbox::new();
    let path = sb.root.join("bad.toml");
    fs::write(
        &path,
        "name = \"bad\"\ntitle = \"Bad\"\n[[rows]\nkind = \"model\"\n",
    )
    .unwrap();
    let out = sb.encdec(&["table", s(&path)]);
    assert_one_line_error(&out, &[s(&path), "invalid table TOML at line 3"]);
}

#[test]
fn unknown_metric_and_data_set_list_the_valid_ones() {
    let sb = Sandbox::new();
    let table = fs::read_to_string(table_file(&sb.root)).unwrap();
    let path = sb.root.join("metric.toml");
    fs::write(
        &path,
        table.replacen(r#"metrics = ["bleu"]"#, r#"metrics = ["bleu4"]"#, 1),
    )
    .unwrap();
    let out = sb.encdec(&["table", s(&path)]);
    assert_one_line_error(&out, &[s(&path), "bleu4", "bleu", "chrf", "rougeLsum"]);

    let path = sb.root.join("dataset.toml");
    fs::write(
        &path,
        table.replacen(r#"dataset = "wmt14-en-de""#, r#"dataset = "wmt99-xx""#, 1),
    )
    .unwrap();
    let out = sb.encdec(&["table", s(&path)]);
    assert_one_line_error(&out, &[s(&path), "wmt99-xx", "cnndm", "wmt14-en-de"]);
}

#[test]
fn unknown_table_name_lists_the_built_in_tables() {
    let sb = Sandbox::new();
    let out = sb.encdec(&["table", "no-such-table"]);
    assert_one_line_error(
        &out,
        &[
            "no-such-table",
            "cnndm-rouge",
            "wmt-bleu",
            "wmt22-systems",
            ".toml",
        ],
    );
}

// ---------------------------------------------------------------------------------
// Data sets from the Hugging Face cache

/// Lays the parquet stand-in out as `huggingface_hub` caches abisee/cnn_dailymail.
fn cache_cnndm(sb: &Sandbox) -> PathBuf {
    let repo = sb.root.join("hf/hub/datasets--abisee--cnn_dailymail");
    let snap = repo.join("snapshots/0123abc/3.0.0");
    fs::create_dir_all(&snap).unwrap();
    fs::create_dir_all(repo.join("refs")).unwrap();
    fs::write(repo.join("refs/main"), "0123abc").unwrap();
    let file = snap.join("test-00000-of-00001.parquet");
    fs::copy(fixture("datasets/cnn_dailymail-3.0.0-test.parquet"), &file).unwrap();
    file
}

#[test]
fn cnndm_is_found_in_the_hugging_face_cache() {
    let sb = Sandbox::new();
    let file = cache_cnndm(&sb);
    let t5 = fixture("t5");
    let out_dir = sb.root.join("run");
    let out = sb.encdec(&[
        "eval",
        "--model",
        s(&t5),
        "--dataset",
        "cnndm",
        "--limit",
        "2",
        "--out",
        s(&out_dir),
    ]);
    assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Hugging Face cache"), "{stderr}");
    let run: Value =
        serde_json::from_str(&fs::read_to_string(out_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["data"]["format"], "parquet");
    assert_eq!(run["data"]["examples"], 2);
    let files = run["data"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(
        Path::new(files[0].as_str().unwrap()),
        file.canonicalize().unwrap()
    );
    // The parquet rows are the articles tools/make_cnndm_parquet_fixture.py writes.
    let n = SENTENCES.len();
    let sources: String = (0..2)
        .map(|i| format!("{} {}\n", SENTENCES[i % n], SENTENCES[(i + 3) % n]))
        .collect();
    assert_eq!(
        fs::read_to_string(out_dir.join("hyps.txt")).unwrap(),
        generate(&sb, &t5, &sources, &["--prefix", "summarize: "])
    );
    // Highlights keep their newline (sentence breaks for rougeLsum).
    let refs = fs::read_to_string(out_dir.join("references.jsonl")).unwrap();
    let first: String = serde_json::from_str(refs.lines().next().unwrap()).unwrap();
    assert_eq!(first, format!("{}\n{}", SENTENCES[0], SENTENCES[1]));

    // `encdec table` finds data and checkpoint there too: no --data, a hub id.
    let repo = sb.root.join("hf/hub/models--test-org--t5-fixture");
    let snap = repo.join("snapshots/r1");
    fs::create_dir_all(&snap).unwrap();
    fs::create_dir_all(repo.join("refs")).unwrap();
    fs::write(repo.join("refs/main"), "r1").unwrap();
    for entry in fs::read_dir(&t5).unwrap() {
        let p = entry.unwrap().path();
        fs::copy(&p, snap.join(p.file_name().unwrap())).unwrap();
    }
    let table = sb.root.join("hub.toml");
    fs::write(
        &table,
        r#"
name = "hub"
title = "From the cache"

[[rows]]
kind = "model"
system = "T5 fixture (cached)"
checkpoint = "test-org/t5-fixture"
dataset = "cnndm"
metrics = ["rouge1", "rougeLsum"]
split_sentences = true
published = "none"
note = "a fixture"
source = "test"
"#,
    )
    .unwrap();
    let out = sb.encdec(&["table", s(&table), "--limit", "2", "--format", "json"]);
    let report: Value = serde_json::from_str(&assert_ok(&out)).unwrap();
    let rows = rows_of(&report, "T5 fixture (cached)");
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert!(r["measured"].is_f64(), "{r}");
        assert_eq!(r["examples"], 2, "{r}");
    }
    // The report says the references came from the hub copy, in every format.
    let notes = report["notes"].as_str().unwrap();
    assert!(
        notes.contains("Data read from Hugging Face hub copies: cnndm: abisee/cnn_dailymail"),
        "{notes}"
    );
    let out = sb.encdec(&["table", s(&table), "--limit", "2"]);
    let text = assert_ok(&out);
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with("Data read from Hugging Face hub copies: cnndm:"),
        "{text}"
    );
}

#[test]
fn offline_without_data_names_what_to_get() {
    let sb = Sandbox::new();
    let t5 = fixture("t5");
    let out = sb.encdec(&["eval", "--model", s(&t5), "--dataset", "cnndm"]);
    assert_one_line_error(
        &out,
        &[
            "data set 'cnndm' not found",
            "test.source",
            "datasets--abisee--cnn_dailymail/snapshots/*/3.0.0/test-00000-of-00001.parquet",
            "HF_HUB_OFFLINE is set",
            "huggingface-cli download abisee/cnn_dailymail 3.0.0/test-00000-of-00001.parquet --repo-type dataset",
        ],
    );
    // newstest2014 has a hub copy: offline, the error names it and how to fetch it.
    let out = sb.encdec(&["eval", "--model", s(&t5), "--dataset", "wmt14-en-de"]);
    assert_one_line_error(
        &out,
        &[
            "newstest2014.en-de.en",
            "sacrebleu -t wmt14/full",
            "datasets--wmt--wmt14/snapshots/*/de-en/test-00000-of-00001.parquet",
            "HF_HUB_OFFLINE is set",
            "huggingface-cli download wmt/wmt14 de-en/test-00000-of-00001.parquet --repo-type dataset",
        ],
    );
    // generaltest2022 has none: the error says so instead of guessing one.
    let out = sb.encdec(&["eval", "--model", s(&t5), "--dataset", "wmt22-en-de"]);
    assert_one_line_error(
        &out,
        &[
            "generaltest2022.en-de.en",
            "sacrebleu -t wmt22",
            "no Hugging Face hub copy",
        ],
    );
}

/// A stand-in for the hub's file server on 127.0.0.1: serves `body` at `path` the way
/// hf-hub fetches it (a `bytes=0-0` probe for the commit, etag and size, then the
/// range from where it stands), 404 for anything else. It answers at most 16
/// connections and stops after 60 s.
fn serve_hub_file(path: &'static str, body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut served = 0;
        while served < 16 && Instant::now() < deadline {
            let mut stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            served += 1;
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let request = String::from_utf8_lossy(&request).to_string();
            let target = request.split_whitespace().nth(1).unwrap_or("");
            let start: usize = request
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim().eq_ignore_ascii_case("range")).then(|| v.trim().to_string())
                })
                .and_then(|r| r.strip_prefix("bytes=")?.split('-').next()?.parse().ok())
                .unwrap_or(0);
            let probe = request.to_ascii_lowercase().contains("range: bytes=0-0");
            let response = if target != path || start >= body.len() {
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec()
            } else {
                let end = if probe { 1 } else { body.len() };
                let mut r = format!(
                    "HTTP/1.1 206 Partial Content\r\netag: \"blob0123\"\r\nx-repo-commit: c0ffee\r\n\
                     content-range: bytes {start}-{}/{}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    end - 1,
                    body.len(),
                    end - start
                )
                .into_bytes();
                r.extend_from_slice(&body[start..end]);
                r
            };
            let _ = stream.write_all(&response);
        }
    });
    format!("http://{addr}")
}

#[test]
fn cnndm_is_downloaded_into_the_cache_when_online() {
    let sb = Sandbox::new();
    let body = fs::read(fixture("datasets/cnn_dailymail-3.0.0-test.parquet")).unwrap();
    let endpoint = serve_hub_file(
        "/datasets/abisee/cnn_dailymail/resolve/main/3.0.0/test-00000-of-00001.parquet",
        body.clone(),
    );
    let t5 = fixture("t5");
    let out_dir = sb.root.join("run");
    let args = eval_limit_2(&t5, "cnndm", &out_dir);
    let out = sb.encdec_online(&endpoint, &args);
    assert_downloaded(
        &sb,
        &out,
        "downloading abisee/cnn_dailymail",
        "datasets--abisee--cnn_dailymail/snapshots/c0ffee/3.0.0/test-00000-of-00001.parquet",
        &body,
    );
    let run: Value =
        serde_json::from_str(&fs::read_to_string(out_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["data"]["format"], "parquet");
    assert_eq!(run["data"]["examples"], 2);

    // Offline now, it comes from the cache.
    let again = sb.root.join("again");
    let out = sb.encdec(&[
        "eval",
        "--model",
        s(&t5),
        "--dataset",
        "cnndm",
        "--limit",
        "2",
        "--out",
        s(&again),
    ]);
    assert_ok(&out);
    assert_eq!(
        fs::read_to_string(again.join("hyps.txt")).unwrap(),
        fs::read_to_string(out_dir.join("hyps.txt")).unwrap()
    );
}

#[test]
fn wmt14_is_downloaded_into_the_cache_when_online() {
    let sb = Sandbox::new();
    let body = fs::read(fixture("datasets/wmt14-de-en-test.parquet")).unwrap();
    let endpoint = serve_hub_file(
        "/datasets/wmt/wmt14/resolve/main/de-en/test-00000-of-00001.parquet",
        body.clone(),
    );
    let t5 = fixture("t5");
    let out_dir = sb.root.join("run");
    let args = eval_limit_2(&t5, "wmt14-en-de", &out_dir);
    let out = sb.encdec_online(&endpoint, &args);
    assert_downloaded(
        &sb,
        &out,
        "downloading wmt/wmt14 de-en/test-00000-of-00001.parquet",
        "datasets--wmt--wmt14/snapshots/c0ffee/de-en/test-00000-of-00001.parquet",
        &body,
    );

    // English from `translation.en` is the source, `translation.de` the reference.
    let sources: String = SENTENCES[..2].iter().map(|l| format!("{l}\n")).collect();
    let hyps = fs::read_to_string(out_dir.join("hyps.txt")).unwrap();
    assert_eq!(
        hyps,
        generate(
            &sb,
            &t5,
            &sources,
            &["--prefix", "translate English to German: "]
        )
    );
    let refs: Vec<String> = fs::read_to_string(out_dir.join("references.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(refs, vec![SENTENCES[0], "das kleine Haus"]);

    // run.json and report.md say where the data came from.
    let run: Value =
        serde_json::from_str(&fs::read_to_string(out_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["data"]["format"], "parquet");
    assert_eq!(run["data"]["examples"], 2);
    let hub = run["data"]["hub"].as_str().unwrap();
    assert!(
        hub.starts_with("wmt/wmt14 de-en/test-00000-of-00001.parquet (revision main)")
            && hub.contains("not verified to equal sacreBLEU's"),
        "{hub}"
    );
    let report = fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(
        report.contains("(Hugging Face hub: wmt/wmt14 de-en/test-00000-of-00001.parquet"),
        "{report}"
    );

    // Offline now, it comes from the cache, with the same hypotheses.
    let again = sb.root.join("again");
    let mut offline = args;
    offline[8] = s(&again);
    let out = sb.encdec(&offline);
    assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Hugging Face cache"), "{stderr}");
    assert_eq!(fs::read_to_string(again.join("hyps.txt")).unwrap(), hyps);

    // The same 3003 rows as wmt/wmt17's newstest2017 (3004 segments): one clear line.
    let wmt17 = sb
        .root
        .join("hf/hub/datasets--wmt--wmt17/snapshots/r17/de-en");
    fs::create_dir_all(&wmt17).unwrap();
    let file = wmt17.join("test-00000-of-00001.parquet");
    fs::write(&file, &body).unwrap();
    let out = sb.encdec(&[
        "eval",
        "--model",
        s(&t5),
        "--dataset",
        "wmt17-en-de",
        "--limit",
        "2",
        "--out",
        s(&sb.root.join("wmt17")),
    ]);
    // The error is one line, after the line that says which cache file was read.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].contains("using the Hugging Face cache copy"),
        "{stderr}"
    );
    for want in [
        "data set 'wmt17-en-de'",
        s(&file),
        "has 3003 examples, expected 3004",
    ] {
        assert!(lines[1].contains(want), "{want:?} not in: {stderr}");
    }
}

/// `encdec eval --model MODEL --dataset DATASET --limit 2 --out OUT`.
fn eval_limit_2<'a>(model: &'a Path, dataset: &'a str, out: &'a Path) -> [&'a str; 9] {
    [
        "eval",
        "--model",
        s(model),
        "--dataset",
        dataset,
        "--limit",
        "2",
        "--out",
        s(out),
    ]
}

/// The run succeeded, said `message`, and left `body` in the hub cache at
/// `hf/hub/<cached>` with `refs/main` naming the stand-in's revision `c0ffee`.
fn assert_downloaded(sb: &Sandbox, out: &Output, message: &str, cached: &str, body: &[u8]) {
    assert_ok(out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(message), "{stderr}");
    let hub = sb.root.join("hf/hub");
    assert_eq!(fs::read(hub.join(cached)).unwrap(), body);
    let repo = hub.join(cached.split('/').next().unwrap());
    assert_eq!(
        fs::read_to_string(repo.join("refs/main")).unwrap(),
        "c0ffee"
    );
}
