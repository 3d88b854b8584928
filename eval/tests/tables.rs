//! Benchmark tables: every embedded table parses and validates, wmt22-systems matches
//! automatic-scores.tsv and its files exist (skipped with a message when ../shared/data
//! is absent), reports are formatted as text / Markdown / JSON, and rows that cannot run
//! are marked as such with no measured number. Scoring uses a fake scorer; the CLI wires
//! the real metrics in.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use encdec_eval::datasets::Examples;
use encdec_eval::tables::{
    list_tables, load_table, parse_table, Metric, ModelRow, ModelRunner, Published, ReportOptions,
    RougeOptions, Row, RunOutcome, Scorer,
};
use encdec_eval::{EvalError, Result};

fn shared_data() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    p.join("wmt").is_dir().then_some(p)
}

macro_rules! need_shared {
    ($name:expr) => {
        match shared_data() {
            Some(p) => p,
            None => {
                eprintln!("SKIP {}: ../shared/data not found", $name);
                return;
            }
        }
    };
}

/// A scorer that returns fixed values and records what it was asked.
#[derive(Default)]
struct FakeScorer {
    bleu: f64,
    chrf: Option<f64>,
    rouge: (f64, f64, f64),
    calls: RefCell<Vec<String>>,
}

impl Scorer for FakeScorer {
    fn bleu(&self, hyp: &[String], refs: &[String], tokenize: &str) -> Result<f64> {
        assert_eq!(hyp.len(), refs.len());
        self.calls
            .borrow_mut()
            .push(format!("bleu {tokenize} {}", hyp.len()));
        Ok(self.bleu)
    }

    fn rouge(
        &self,
        hyp: &[String],
        refs: &[String],
        opts: &RougeOptions,
    ) -> Result<(f64, f64, f64)> {
        assert_eq!(hyp.len(), refs.len());
        self.calls.borrow_mut().push(format!(
            "rouge stem={} split={} lsum={} {}",
            opts.stem,
            opts.split_sentences,
            opts.summary_level,
            hyp.len()
        ));
        Ok(self.rouge)
    }

    fn chrf(&self, hyp: &[String], _refs: &[String]) -> Result<f64> {
        self.calls.borrow_mut().push(format!("chrf {}", hyp.len()));
        self.chrf
            .ok_or_else(|| EvalError::Invalid("this scorer does not compute chrF".into()))
    }
}

#[test]
fn every_embedded_table_parses_and_validates() {
    let names = list_tables();
    assert_eq!(
        names,
        vec!["cnndm-rouge", "cnndm-simcls", "wmt-bleu", "wmt22-systems"]
    );
    for name in &names {
        let t = load_table(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&t.name, name);
        assert!(!t.title.is_empty() && !t.notes.trim().is_empty(), "{name}");
        assert!(!t.rows.is_empty(), "{name}");
    }
}

#[test]
fn unknown_table_lists_valid_names() {
    let err = load_table("glue").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EvalError::Unknown { .. }), "{msg}");
    for name in list_tables() {
        assert!(msg.contains(name), "{msg}");
    }
}

#[test]
fn cnndm_rouge_rows_hold_the_published_numbers() {
    let t = load_table("cnndm-rouge").unwrap();
    let find = |sys: &str| -> &ModelRow {
        t.rows
            .iter()
            .find_map(|r| match r {
                Row::Model(m) if m.system.starts_with(sys) => Some(m),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no row {sys}"))
    };
    let scores = |m: &ModelRow| -> Vec<f64> {
        [Metric::Rouge1, Metric::Rouge2, Metric::RougeLsum]
            .iter()
            .map(|&x| m.published.get(x).unwrap())
            .collect()
    };
    let bart = find("BART-large");
    assert_eq!(bart.checkpoint.as_deref(), Some("facebook/bart-large-cnn"));
    assert_eq!(scores(bart), vec![44.16, 21.28, 40.90]);
    assert_eq!(bart.generation.num_beams, Some(4));
    assert_eq!(bart.generation.min_length, Some(56));
    assert_eq!(bart.generation.max_length, Some(142));
    let pegasus = find("PEGASUS");
    assert_eq!(
        pegasus.checkpoint.as_deref(),
        Some("google/pegasus-cnn_dailymail")
    );
    assert_eq!(scores(pegasus), vec![44.16, 21.56, 41.30]);
    assert!(pegasus.note.contains("44.17/21.47/41.11"));
    let t5 = find("T5-Large");
    assert_eq!(scores(t5), vec![42.50, 20.68, 39.75]);
    assert_eq!(t5.generation.prefix.as_deref(), Some("summarize: "));
    assert_eq!(scores(find("T5-11B")), vec![43.52, 21.55, 40.69]);
    let led = find("LED-large");
    assert!(!led.verified && led.checkpoint.is_none());
    assert!(led.source.contains("to verify"));
    for r in &t.rows {
        if let Row::Model(m) = r {
            assert_eq!(m.dataset, "cnndm");
            assert!(m.split_sentences && m.stem, "{}", m.system);
        }
    }
}

#[test]
fn wmt_bleu_rows_cover_the_three_families_and_pairs() {
    let t = load_table("wmt-bleu").unwrap();
    let models: Vec<&ModelRow> = t
        .rows
        .iter()
        .filter_map(|r| match r {
            Row::Model(m) => Some(m),
            Row::Outputs(_) => None,
        })
        .collect();
    for family in [
        "Helsinki-NLP/opus-mt-",
        "facebook/mbart-large-50",
        "facebook/nllb-200",
    ] {
        for pair in ["en-de", "en-fr", "en-zh"] {
            let hit = models.iter().any(|m| {
                m.checkpoint.as_deref().unwrap_or("").starts_with(family)
                    && m.dataset.ends_with(pair)
            });
            assert!(hit, "no {family} row for {pair}");
        }
    }
    for m in &models {
        if m.dataset.ends_with("-zh") {
            assert_eq!(m.tokenize.as_deref(), Some("zh"), "{}", m.system);
        }
        if m.published.is_none() {
            assert!(!m.note.is_empty(), "{}", m.system);
        }
    }
    let nllb = models
        .iter()
        .find(|m| m.checkpoint.as_deref() == Some("facebook/nllb-200-distilled-600M"))
        .unwrap();
    assert_eq!(nllb.published, Published::None("none".into()));
    assert_eq!(nllb.generation.src_lang.as_deref(), Some("eng_Latn"));
}

fn tsv_scores(data: &Path) -> BTreeMap<(String, String, String), f64> {
    let text =
        fs::read_to_string(data.join("wmt/outputs/generaltest2022/automatic-scores.tsv")).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        out.insert(
            (f[0].to_string(), f[1].to_string(), f[4].to_string()),
            f[5].parse().unwrap(),
        );
    }
    out
}

#[test]
fn wmt22_systems_has_18_rows_matching_the_tsv_with_existing_files() {
    let t = load_table("wmt22-systems").unwrap();
    assert_eq!(t.rows.len(), 18);
    let data = need_shared!("wmt22_systems_has_18_rows_matching_the_tsv_with_existing_files");
    let tsv = tsv_scores(&data);
    for row in &t.rows {
        let Row::Outputs(r) = row else {
            panic!("wmt22-systems rows are outputs rows")
        };
        let (hyp, reference) = r.resolve(Some(&data)).unwrap();
        assert!(hyp.is_file() && reference.is_file());
        let pair = r.pair.clone().unwrap();
        let tgt = pair.split('-').nth(1).unwrap();
        assert_eq!(
            r.tokenize.as_deref(),
            Some(if tgt == "zh" { "zh" } else { "13a" })
        );
        assert!(
            r.hyp.ends_with(&format!("{pair}.hyp.{}.{tgt}", r.system)),
            "{}",
            r.hyp
        );
        assert!(
            r.reference.ends_with(&format!("{pair}.ref.A.{tgt}")),
            "{}",
            r.reference
        );
        for (metric, col) in [(Metric::Bleu, "bleu-A"), (Metric::Chrf, "chrf-A")] {
            let want = tsv[&(pair.clone(), r.system.clone(), col.to_string())];
            assert_eq!(
                r.published.get(metric),
                Some(want),
                "{} {pair} {col}",
                r.system
            );
        }
    }
    // Every system output in the folder has a row.
    let outputs = fs::read_dir(data.join("wmt/outputs/generaltest2022"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".hyp.")
        })
        .count();
    assert_eq!(outputs, 18);
}

#[test]
fn wmt22_report_with_a_fake_scorer() {
    let data = need_shared!("wmt22_report_with_a_fake_scorer");
    let t = load_table("wmt22-systems").unwrap();
    // BLEU equal to JDExploreAcademy en-de's published value; chrF not provided.
    let scorer = FakeScorer {
        bleu: 37.79203841537659,
        ..Default::default()
    };
    let report = t.report(
        &scorer,
        &ReportOptions {
            data_dir: Some(&data),
            runner: None,
        },
    );
    assert_eq!(report.rows.len(), 36);
    let jd = report
        .rows
        .iter()
        .find(|r| {
            r.system == "JDExploreAcademy" && r.dataset == "wmt22-en-de" && r.metric == Metric::Bleu
        })
        .unwrap();
    assert_eq!(jd.status, "ok");
    assert!(jd.diff.unwrap().abs() < 1e-9);
    let other = report
        .rows
        .iter()
        .find(|r| r.system == "LT22" && r.metric == Metric::Bleu)
        .unwrap();
    assert!(
        other.status.starts_with("differs: by +11.78"),
        "{}",
        other.status
    );
    for r in report.rows.iter().filter(|r| r.metric == Metric::Chrf) {
        assert!(r.status.starts_with("not run: chrF failed"), "{}", r.status);
        assert_eq!(r.measured, None);
        assert!(r.published.is_some());
    }
    let calls = scorer.calls.borrow();
    assert!(calls.contains(&"bleu zh 2037".to_string()), "{calls:?}");
    assert!(calls.contains(&"bleu 13a 1984".to_string()), "{calls:?}");
}

#[test]
fn simcls_report_explains_the_difference() {
    let data = need_shared!("simcls_report_explains_the_difference");
    let t = load_table("cnndm-simcls").unwrap();
    // The values rouge-score gives on these files.
    let scorer = FakeScorer {
        rouge: (46.40069875147946, 22.0840666783518, 43.32606662016464),
        ..Default::default()
    };
    let report = t.report(
        &scorer,
        &ReportOptions {
            data_dir: Some(&data),
            runner: None,
        },
    );
    assert_eq!(report.rows.len(), 3);
    for r in &report.rows {
        assert!(
            r.status
                .starts_with("differs: published with Perl ROUGE-1.5.5"),
            "{}",
            r.status
        );
        assert!(
            r.status.contains("matches rouge-score 0.1.2"),
            "{}",
            r.status
        );
    }
    assert!((report.rows[0].diff.unwrap() - (46.40069875147946 - 46.67)).abs() < 1e-9);
    assert_eq!(
        scorer.calls.borrow().as_slice(),
        &["rouge stem=true split=true lsum=true 11490".to_string()]
    );
}

#[test]
fn model_rows_without_a_runner_are_not_run_and_get_no_numbers() {
    let t = load_table("cnndm-rouge").unwrap();
    let scorer = FakeScorer::default();
    let report = t.report(&scorer, &ReportOptions::default());
    assert_eq!(report.rows.len(), t.rows.len() * 3);
    for r in &report.rows {
        assert!(r.is_not_run(), "{}", r.status);
        assert_eq!(r.measured, None);
        assert_eq!(r.diff, None);
    }
    let bart = report
        .rows
        .iter()
        .find(|r| r.system.starts_with("BART"))
        .unwrap();
    assert!(
        bart.status.contains("facebook/bart-large-cnn"),
        "{}",
        bart.status
    );
    assert!(
        bart.status
            .contains("encdec eval --model facebook/bart-large-cnn --dataset cnndm"),
        "{}",
        bart.status
    );
    let led = report
        .rows
        .iter()
        .find(|r| r.system == "LED-large")
        .unwrap();
    assert!(
        led.status.starts_with("not run: no checkpoint"),
        "{}",
        led.status
    );
    assert!(
        led.status.contains("published number unverified"),
        "{}",
        led.status
    );
    assert_eq!(led.published, Some(44.40));
    assert!(scorer.calls.borrow().is_empty());
}

/// A runner that copies the references (a perfect system) or declines.
struct EchoRunner {
    decline: bool,
}

impl ModelRunner for EchoRunner {
    fn run(&self, _table: &str, row: &ModelRow, examples: &Examples) -> Result<RunOutcome> {
        if self.decline {
            return Ok(RunOutcome::NotRun(format!("no GPU for {}", row.system)));
        }
        Ok(RunOutcome::Hypotheses(examples.references.clone()))
    }
}

#[test]
fn model_rows_with_a_runner_are_scored_or_say_why_not() {
    let data = need_shared!("model_rows_with_a_runner_are_scored_or_say_why_not");
    let t = parse_table(
        r#"
name = "mini"
title = "mini table"
notes = "test"

[[rows]]
kind = "model"
system = "Marian"
checkpoint = "Helsinki-NLP/opus-mt-en-de"
dataset = "wmt19-en-de"
metrics = ["bleu"]
tolerance = 0.05
published = { bleu = 40.9 }
source = "card"

[[rows]]
kind = "model"
system = "No data"
checkpoint = "t5-large"
dataset = "wmt16-en-ro"
metrics = ["bleu"]
published = { bleu = 28.1 }
source = "paper"
"#,
    )
    .unwrap();
    let scorer = FakeScorer {
        bleu: 40.93,
        ..Default::default()
    };
    let runner = EchoRunner { decline: false };
    let report = t.report(
        &scorer,
        &ReportOptions {
            data_dir: Some(&data),
            runner: Some(&runner),
        },
    );
    assert_eq!(report.rows[0].status, "ok");
    assert_eq!(report.rows[0].measured, Some(40.93));
    assert!(
        report.rows[1]
            .status
            .starts_with("not run: no data: data set 'wmt16-en-ro' not found"),
        "{}",
        report.rows[1].status
    );
    assert_eq!(
        scorer.calls.borrow().as_slice(),
        &["bleu 13a 1997".to_string()]
    );

    let decline = EchoRunner { decline: true };
    let report = t.report(
        &scorer,
        &ReportOptions {
            data_dir: Some(&data),
            runner: Some(&decline),
        },
    );
    assert_eq!(report.rows[0].status, "not run: no GPU for Marian");
    assert_eq!(report.rows[0].measured, None);
}

#[test]
fn missing_output_files_are_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let t = load_table("wmt22-systems").unwrap();
    let report = t.report(
        &FakeScorer::default(),
        &ReportOptions {
            data_dir: Some(dir.path()),
            runner: None,
        },
    );
    for r in &report.rows {
        assert!(
            r.status
                .starts_with("not run: no data: file not found: tried "),
            "{}",
            r.status
        );
        assert_eq!(r.measured, None);
    }
}

#[test]
fn mismatched_output_line_counts_are_not_run() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("h.txt"), "a\nb\nc\n").unwrap();
    fs::write(dir.path().join("r.txt"), "a\nb\n").unwrap();
    let t = parse_table(
        r#"
name = "x"
title = "x"
[[rows]]
kind = "outputs"
system = "s"
hyp = "h.txt"
ref = "r.txt"
metrics = ["bleu"]
published = { bleu = 1.0 }
source = "s"
"#,
    )
    .unwrap();
    let report = t.report(
        &FakeScorer::default(),
        &ReportOptions {
            data_dir: Some(dir.path()),
            runner: None,
        },
    );
    let s = &report.rows[0].status;
    assert!(
        s.starts_with("not run:") && s.contains("3 lines") && s.contains("2 lines"),
        "{s}"
    );
}

#[test]
fn invalid_tables_are_rejected_with_the_reason() {
    let base = |row: &str| format!("name = \"t\"\ntitle = \"t\"\n[[rows]]\n{row}\n");
    let cases = [
        (
            "kind = \"model\"\nsystem = \"s\"\ncheckpoint = \"c\"\ndataset = \"wmt99\"\nmetrics = [\"bleu\"]\npublished = \"none\"\nnote = \"n\"\nsource = \"s\"",
            "unknown data set 'wmt99'",
        ),
        (
            "kind = \"model\"\nsystem = \"s\"\ncheckpoint = \"c\"\ndataset = \"cnndm\"\nmetrics = [\"bleu\"]\npublished = \"none\"\nsource = \"s\"",
            "needs a note",
        ),
        (
            "kind = \"model\"\nsystem = \"s\"\ncheckpoint = \"c\"\ndataset = \"cnndm\"\nmetrics = [\"bleu\"]\npublished = \"unknown\"\nnote = \"n\"\nsource = \"s\"",
            "must be a table of scores or \"none\"",
        ),
        (
            "kind = \"model\"\nsystem = \"s\"\ncheckpoint = \"c\"\ndataset = \"cnndm\"\nmetrics = [\"rouge1\"]\npublished = { rouge2 = 20.0 }\nsource = \"s\"",
            "'rouge2', which is not in metrics",
        ),
        (
            "kind = \"model\"\nsystem = \"s\"\ncheckpoint = \"c\"\ndataset = \"cnndm\"\nmetrics = [\"bleu\"]\ntokenize = \"moses\"\npublished = { bleu = 20.0 }\nsource = \"s\"",
            "unknown tokenizer 'moses'",
        ),
        (
            "kind = \"model\"\nsystem = \"s\"\ncheckpoint = \"c\"\ndataset = \"cnndm\"\nmetrics = [\"meteor\"]\npublished = \"none\"\nnote = \"n\"\nsource = \"s\"",
            "meteor",
        ),
        (
            "kind = \"model\"\nsystem = \"s\"\ncheckpoint = \"c\"\ndataset = \"cnndm\"\nmetrics = [\"bleu\"]\npublished = { bleu = 20.0 }\nsource = \"s\"\nnum_beams = 4",
            "num_beams",
        ),
        (
            "kind = \"outputs\"\nsystem = \"s\"\nhyp = \"h\"\nref = \"r\"\nmetrics = [\"bleu\"]\npublished = { bleu = 120.0 }\nsource = \"s\"",
            "not a score in 0..100",
        ),
        ("kind = \"other\"\nsystem = \"s\"", "other"),
    ];
    for (row, want) in cases {
        let msg = parse_table(&base(row)).unwrap_err().to_string();
        assert!(msg.contains(want), "want {want:?} in: {msg}");
    }
}

fn sample_report() -> encdec_eval::tables::Report {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("h.txt"), "a b c\n").unwrap();
    fs::write(dir.path().join("r.txt"), "a b d\n").unwrap();
    let t = parse_table(
        r#"
name = "fmt"
title = "Format | test"
notes = "Some notes."

[[rows]]
kind = "outputs"
system = "System A"
dataset = "toy"
hyp = "h.txt"
ref = "r.txt"
metrics = ["bleu", "chrf"]
published = { bleu = 30.0, chrf = 50.0 }
source = "paper"

[[rows]]
kind = "model"
system = "Model B"
checkpoint = "nobody/not-a-real-checkpoint"
dataset = "wmt14-en-de"
metrics = ["bleu"]
published = "none"
note = "nothing published"
source = "none"
"#,
    )
    .unwrap();
    let scorer = FakeScorer {
        bleu: 30.004,
        chrf: Some(49.5),
        ..Default::default()
    };
    t.report(
        &scorer,
        &ReportOptions {
            data_dir: Some(dir.path()),
            runner: None,
        },
    )
}

#[test]
fn report_formats_text_markdown_and_json() {
    let report = sample_report();
    assert_eq!(report.rows.len(), 3);
    assert_eq!(report.rows[0].status, "ok");
    assert!(
        report.rows[1].status.starts_with("differs: by -0.50"),
        "{}",
        report.rows[1].status
    );
    assert!(report.rows[2]
        .status
        .starts_with("not run: needs checkpoint nobody/not-a-real-checkpoint"));
    assert_eq!(report.counts(), (1, 1, 1));

    let text = report.to_text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Format | test (fmt)");
    assert!(
        lines[1].starts_with("system    data         metric  published  measured   diff  status"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("System A  toy          bleu        30.00     30.00  +0.00  ok"),
        "{text}"
    );
    assert!(
        lines[4].starts_with("System A  toy          chrf        50.00     49.50  -0.50  differs"),
        "{text}"
    );
    assert!(
        lines[5].starts_with("Model B   wmt14-en-de  bleu            -         -      -  not run"),
        "{text}"
    );
    assert!(text.contains("3 scores: 1 ok"), "{text}");

    let md = report.to_markdown();
    assert!(md.starts_with("## Format \\| test (`fmt`)\n\n| system | data | metric | published | measured | diff | status |\n|---|---|---|---:|---:|---:|---|\n"), "{md}");
    assert!(
        md.contains("| System A | toy | bleu | 30.00 | 30.00 | +0.00 | ok |"),
        "{md}"
    );
    assert!(
        md.contains("| Model B | wmt14-en-de | bleu | - | - | - | not run: "),
        "{md}"
    );
    assert!(md.trim_end().ends_with("Some notes."), "{md}");

    let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
    assert_eq!(json["table"], "fmt");
    assert_eq!(json["rows"][0]["metric"], "bleu");
    assert_eq!(json["rows"][0]["published"], 30.0);
    assert_eq!(json["rows"][0]["measured"], 30.004);
    assert_eq!(json["rows"][2]["measured"], serde_json::Value::Null);
    assert_eq!(json["rows"][2]["diff"], serde_json::Value::Null);
    assert!(json["rows"][2]["status"]
        .as_str()
        .unwrap()
        .starts_with("not run"));
}

#[test]
fn measured_rows_without_published_numbers_say_so() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("h.txt"), "x\n").unwrap();
    fs::write(dir.path().join("r.txt"), "x\n").unwrap();
    let t = parse_table(
        r#"
name = "n"
title = "n"
[[rows]]
kind = "outputs"
system = "s"
hyp = "h.txt"
ref = "r.txt"
metrics = ["rouge1", "rougeL"]
published = "none"
note = "no paper"
source = "none"
"#,
    )
    .unwrap();
    let scorer = FakeScorer {
        rouge: (50.0, 40.0, 45.0),
        ..Default::default()
    };
    let report = t.report(
        &scorer,
        &ReportOptions {
            data_dir: Some(dir.path()),
            runner: None,
        },
    );
    assert_eq!(report.rows.len(), 2);
    assert_eq!(report.rows[0].measured, Some(50.0));
    assert_eq!(report.rows[1].measured, Some(45.0));
    for r in &report.rows {
        assert_eq!(r.published, None);
        assert_eq!(r.status, "measured only: no published number (no paper)");
    }
    // rougeL (sentence level): no splitting, stemming on by default.
    assert_eq!(
        scorer.calls.borrow().as_slice(),
        &["rouge stem=true split=false lsum=false 1".to_string()]
    );
}
