//! Data set registry and loaders: real WMT files under ../shared/data (skipped with a
//! message when absent), SGML parsing as sacreBLEU does it, CNN/DailyMail line files and
//! JSONL from temporary directories, and the error paths (unknown name, missing files,
//! mismatched counts, bad UTF-8, empty files).

use std::fs;
use std::path::{Path, PathBuf};

use encdec_eval::datasets::{
    load_jsonl, load_parallel_text, load_wmt_sgml, parse_sgml, read_text_lines, shard_range,
    unescape_entities, Dataset, Examples, Format, Shard, Task,
};
use encdec_eval::EvalError;

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

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap();
    }
    fs::write(path, text).unwrap();
}

fn numbered(prefix: &str, n: usize) -> String {
    (0..n).map(|i| format!("{prefix} {i}\n")).collect()
}

// ------------------------------------------------------------------ registry

#[test]
fn registry_has_the_required_sets_with_their_sizes() {
    let expect = [
        ("cnndm", "en", "en", 11490),
        ("wmt14-en-de", "en", "de", 3003),
        ("wmt14-en-fr", "en", "fr", 3003),
        ("wmt16-en-ro", "en", "ro", 1999),
        ("wmt17-en-zh", "en", "zh", 2001),
        ("wmt19-en-de", "en", "de", 1997),
        ("wmt19-de-en", "de", "en", 2000),
        ("wmt20-en-de", "en", "de", 1418),
        ("wmt20-en-zh", "en", "zh", 1418),
        ("wmt22-en-de", "en", "de", 2037),
        ("wmt22-de-en", "de", "en", 1984),
        ("wmt22-en-zh", "en", "zh", 2037),
        ("wmt22-zh-en", "zh", "en", 1875),
    ];
    for (name, src, tgt, lines) in expect {
        let d = Dataset::get(name).unwrap();
        assert_eq!(
            (d.src_lang, d.tgt_lang, d.lines),
            (src, tgt, lines),
            "{name}"
        );
    }
    assert_eq!(Dataset::get("cnndm").unwrap().task, Task::Summarization);
    assert_eq!(Dataset::get("wmt19-de-en").unwrap().task, Task::Translation);
    // The filtered 2,737-line newstest2014 en-de is accepted as another version.
    assert!(Dataset::get("wmt14-en-de")
        .unwrap()
        .alt_lines
        .contains(&2737));
    let names = Dataset::names();
    let mut dedup = names.clone();
    dedup.sort_unstable();
    dedup.dedup();
    assert_eq!(dedup.len(), names.len(), "duplicate names: {names:?}");
}

#[test]
fn unknown_dataset_lists_valid_names() {
    let err = Dataset::load("wmt99-xx-yy", None).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EvalError::Unknown { .. }), "{msg}");
    for name in ["wmt99-xx-yy", "cnndm", "wmt14-en-de", "wmt22-zh-en"] {
        assert!(msg.contains(name), "{msg}");
    }
}

// ------------------------------------------------------------------ real WMT data

#[test]
fn real_wmt_sets_load_from_shared_data() {
    let data = need_shared!("real_wmt_sets_load_from_shared_data");
    for d in Dataset::all() {
        if d.task != Task::Translation || d.name == "wmt16-en-ro" {
            continue;
        }
        let located = d.locate(Some(&data)).unwrap();
        assert_eq!(located.format, Format::WmtText, "{}", d.name);
        let ex = d.read(&located).unwrap();
        assert_eq!(ex.len(), d.lines, "{}", d.name);
        assert_eq!(ex.references.len(), d.lines, "{}", d.name);
        assert!(ex.ids.is_none());
        assert!(
            !ex.sources[0].is_empty() && !ex.references[0].is_empty(),
            "{}",
            d.name
        );
        assert!(ex.sources.iter().all(|s| s == s.trim_end()), "{}", d.name);
    }
    let ex = Dataset::load("wmt14-en-de", Some(&data)).unwrap();
    assert_eq!(ex.sources[0], "Gutach: Increased safety for pedestrians");
    assert_eq!(
        ex.references[0],
        "Gutach: Noch mehr Sicherheit für Fußgänger"
    );
    let zh = Dataset::load("wmt17-en-zh", Some(&data)).unwrap();
    assert_eq!(zh.references[0], "28岁厨师被发现死于旧金山一家商场");
    let g = Dataset::load("wmt22-zh-en", Some(&data)).unwrap();
    assert_eq!(g.sources[0], "是否有途径处罚他");
    let files = Dataset::get("wmt22-en-de")
        .unwrap()
        .locate(Some(&data))
        .unwrap()
        .files;
    assert!(
        files[0].ends_with("generaltest2022/generaltest2022.en-de.en"),
        "{files:?}"
    );
    assert!(
        files[1].ends_with("generaltest2022/generaltest2022.en-de.ref.A.de"),
        "{files:?}"
    );
}

#[test]
fn real_wmt_limit_and_shards_partition_the_set() {
    let data = need_shared!("real_wmt_limit_and_shards_partition_the_set");
    let full = Dataset::load("wmt20-en-de", Some(&data)).unwrap();
    let n = full.len();
    let mut joined = Examples::default();
    for i in 0..7 {
        let s = full.clone().shard(i, 7).unwrap();
        assert!(s.len() == n / 7 || s.len() == n / 7 + 1);
        joined.sources.extend(s.sources);
        joined.references.extend(s.references);
    }
    assert_eq!(joined.sources, full.sources);
    assert_eq!(joined.references, full.references);
    let first = full.clone().limit(10);
    assert_eq!(first.len(), 10);
    assert_eq!(first.sources[..], full.sources[..10]);
}

// ------------------------------------------------------------------ missing files

#[test]
fn missing_wmt_files_are_named_with_how_to_get_them() {
    let dir = tempfile::tempdir().unwrap();
    let err = Dataset::load("wmt16-en-ro", Some(dir.path())).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EvalError::DataNotFound { .. }), "{msg}");
    let root = dir.path().display().to_string();
    for want in [
        format!("{root}/wmt/newstest2016.en-ro.en + {root}/wmt/newstest2016.en-ro.ro"),
        format!("{root}/newstest2016.en-ro.en"),
        format!(
            "{root}/wmt/newstest2016-enro-src.en.sgm + {root}/wmt/newstest2016-enro-ref.ro.sgm"
        ),
        "sacrebleu -t wmt16 -l en-ro --echo src > DIR/wmt/newstest2016.en-ro.en".to_string(),
        "--echo ref > DIR/wmt/newstest2016.en-ro.ro".to_string(),
        "not available offline".to_string(),
        "ENCDEC_DATA".to_string(),
    ] {
        assert!(msg.contains(&want), "missing {want:?} in: {msg}");
    }
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn missing_wmt22_files_point_at_the_wmt22_repository() {
    let dir = tempfile::tempdir().unwrap();
    let msg = Dataset::load("wmt22-en-de", Some(dir.path()))
        .unwrap_err()
        .to_string();
    let root = dir.path().display().to_string();
    for want in [
        format!("{root}/wmt/generaltest2022/generaltest2022.en-de.en + {root}/wmt/generaltest2022/generaltest2022.en-de.ref.A.de"),
        format!("{root}/generaltest2022/generaltest2022.en-de.src.en"),
        "sacrebleu -t wmt22 -l en-de --echo src".to_string(),
        "txt/sources/generaltest2022.en-de.src.en and txt/references/generaltest2022.en-de.ref.A.de".to_string(),
        "wmt-conference/wmt22-news-systems".to_string(),
    ] {
        assert!(msg.contains(&want), "missing {want:?} in: {msg}");
    }
}

#[test]
fn missing_data_directory_is_said() {
    let err =
        Dataset::load("wmt14-en-fr", Some(Path::new("/nonexistent/encdec-data"))).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("/nonexistent/encdec-data (directory does not exist)"),
        "{msg}"
    );
    assert!(msg.contains("sacrebleu -t wmt14/full -l en-fr"), "{msg}");
}

#[test]
fn missing_cnndm_names_every_form() {
    let dir = tempfile::tempdir().unwrap();
    let msg = Dataset::load("cnndm", Some(dir.path()))
        .unwrap_err()
        .to_string();
    let root = dir.path().display().to_string();
    for want in [
        format!("{root}/cnndm/test.source + {root}/cnndm/test.target"),
        format!("{root}/cnndm/test.jsonl"),
        format!("{root}/cnndm/3.0.0/test-*.parquet"),
        format!("{root}/cnn_dailymail/test.jsonl"),
        "abisee/cnn_dailymail".to_string(),
        "not available offline".to_string(),
    ] {
        assert!(msg.contains(&want), "missing {want:?} in: {msg}");
    }
}

#[cfg(not(feature = "parquet"))]
#[test]
fn parquet_without_the_feature_says_how_to_enable_it() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("cnndm/3.0.0/test-00000-of-00001.parquet"),
        "PAR1",
    );
    let msg = Dataset::load("cnndm", Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("--features parquet"), "{msg}");
}

// ------------------------------------------------------------------ lookup order

#[test]
fn text_is_preferred_to_sgml_and_sgml_is_used_alone() {
    let dir = tempfile::tempdir().unwrap();
    let n = 1418;
    let seg = |lang: &str| -> String {
        let mut s =
            format!("<srcset setid=\"newstest2020\" srclang=\"{lang}\">\n<doc docid=\"d1\">\n");
        for i in 0..n {
            s.push_str(&format!("<seg id=\"{}\">{lang} sgml {i}</seg>\n", i + 1));
        }
        s.push_str("</doc>\n</srcset>\n");
        s
    };
    write(
        &dir.path().join("wmt/newstest2020-enzh-src.en.sgm"),
        &seg("en"),
    );
    write(
        &dir.path().join("wmt/newstest2020-enzh-ref.zh.sgm"),
        &seg("zh"),
    );
    let ex = Dataset::load("wmt20-en-zh", Some(dir.path())).unwrap();
    assert_eq!(ex.sources[5], "en sgml 5");
    assert_eq!(ex.references[5], "zh sgml 5");
    assert_eq!(ex.ids.as_ref().unwrap()[5], "d1:6");

    write(
        &dir.path().join("newstest2020.en-zh.en"),
        &numbered("text en", n),
    );
    write(
        &dir.path().join("newstest2020.en-zh.zh"),
        &numbered("text zh", n),
    );
    // wmt/ comes before the top level, and within a directory text comes before SGML:
    // the SGML pair under wmt/ still wins over the text pair at the top.
    let located = Dataset::get("wmt20-en-zh")
        .unwrap()
        .locate(Some(dir.path()))
        .unwrap();
    assert_eq!(located.format, Format::WmtSgml);
    write(
        &dir.path().join("wmt/newstest2020.en-zh.en"),
        &numbered("wmt text en", n),
    );
    write(
        &dir.path().join("wmt/newstest2020.en-zh.zh"),
        &numbered("wmt text zh", n),
    );
    let ex = Dataset::load("wmt20-en-zh", Some(dir.path())).unwrap();
    assert_eq!(ex.sources[0], "wmt text en 0");
    assert!(ex.ids.is_none());
}

#[test]
fn encdec_data_env_is_a_data_root() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("wmt/newstest2019.de-en.de"),
        &numbered("de", 2000),
    );
    write(
        &dir.path().join("wmt/newstest2019.de-en.en"),
        &numbered("en", 2000),
    );
    // Only this test touches ENCDEC_DATA in this test binary.
    std::env::set_var("ENCDEC_DATA", dir.path());
    let loaded = Dataset::load("wmt19-de-en", None);
    std::env::remove_var("ENCDEC_DATA");
    let ex = loaded.unwrap();
    assert_eq!(ex.sources[1999], "de 1999");
    assert_eq!(ex.references[0], "en 0");
}

// ------------------------------------------------------------------ counts and bad input

#[test]
fn mismatched_source_and_reference_counts_name_both() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("a.en");
    let r = dir.path().join("a.de");
    write(&s, "one\ntwo\nthree\n");
    write(&r, "eins\nzwei\n");
    let err = load_parallel_text(&s, &r).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            EvalError::SourceRefMismatch {
                src_count: 3,
                ref_count: 2,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("a.en: 3 lines") && msg.contains("a.de: 2 lines"),
        "{msg}"
    );

    // Through the registry, with the registry's file names.
    write(
        &dir.path().join("wmt/newstest2017.en-zh.en"),
        &numbered("en", 2001),
    );
    write(
        &dir.path().join("wmt/newstest2017.en-zh.zh"),
        &numbered("zh", 2000),
    );
    let msg = Dataset::load("wmt17-en-zh", Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("2001 lines") && msg.contains("2000 lines"),
        "{msg}"
    );
}

#[test]
fn wrong_example_count_for_the_registry_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("wmt/newstest2014.en-de.en"),
        &numbered("en", 100),
    );
    write(
        &dir.path().join("wmt/newstest2014.en-de.de"),
        &numbered("de", 100),
    );
    let err = Dataset::load("wmt14-en-de", Some(dir.path())).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, EvalError::UnexpectedCount { found: 100, .. }),
        "{msg}"
    );
    assert!(msg.contains("expected 3003 or 2737"), "{msg}");
    // The 2,737-line filtered version is accepted.
    write(
        &dir.path().join("wmt/newstest2014.en-de.en"),
        &numbered("en", 2737),
    );
    write(
        &dir.path().join("wmt/newstest2014.en-de.de"),
        &numbered("de", 2737),
    );
    assert_eq!(
        Dataset::load("wmt14-en-de", Some(dir.path()))
            .unwrap()
            .len(),
        2737
    );
}

#[test]
fn invalid_utf8_empty_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.txt");
    fs::write(&bad, b"ok\nstill ok\n\xff\xfe broken\n").unwrap();
    let msg = read_text_lines(&bad).unwrap_err().to_string();
    assert!(msg.contains("bad.txt") && msg.contains("line 3"), "{msg}");
    let empty = dir.path().join("empty.txt");
    fs::write(&empty, b"").unwrap();
    let msg = read_text_lines(&empty).unwrap_err().to_string();
    assert!(msg.contains("empty.txt") && msg.contains("empty"), "{msg}");
    let msg = read_text_lines(dir.path().join("nope.txt"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("nope.txt"), "{msg}");
}

#[test]
fn text_lines_follow_sacrebleu_reading() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.txt");
    // Trailing whitespace (incl. \r and U+3000) goes, a lone \r inside a line stays,
    // a final newline does not add a line, an empty line stays.
    fs::write(&p, "a b  \r\nc\rd\n\n  e\u{3000}\n").unwrap();
    assert_eq!(read_text_lines(&p).unwrap(), vec!["a b", "c\rd", "", "  e"]);
}

// ------------------------------------------------------------------ SGML

const SGML: &str = "<refset setid=\"newstest2014\" srclang=\"any\" trglang=\"de\">\n\
<doc sysid=\"ref\" docid=\"1012-bbc\" genre=\"news\" origlang=\"en\">\n\
<p>\n\
<seg id=\"1\">  Hello \t  world  </seg>\n\
<seg id=\"2\">A &amp; B &quot;q&quot;</seg>\n\
<seg id=3>x</seg> tail\n \
<seg id=\"4\">indented</seg>\n\
<seg id=\"5\">no close\n\
<seg id=\"6\">a</seg>b</seg>c\n\
</p>\n\
</doc>\n\
<doc docid=\"d2\" sysid=\"ref\">\n\
<seg id=\"1\">\u{a0}nbsp\u{3000}ideo </seg>\n\
<seg id=\"2\"></seg>\n\
</doc>\n\
</refset>\n";

#[test]
fn sgml_is_parsed_as_sacrebleu_does() {
    // Expected values from sacreBLEU's own code on the same text:
    // _clean(re.sub(r"<seg.*?>(.*)</seg>.*?", r"\1", line)) for lines starting "<seg ".
    let segs = parse_sgml(SGML);
    let texts: Vec<&str> = segs.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(
        texts,
        vec![
            "Hello world",
            "A &amp; B &quot;q&quot;",
            "x tail",
            "<seg id=\"5\">no close",
            "a</seg>bc",
            "nbsp ideo",
            "",
        ]
    );
    let ids: Vec<String> = segs.iter().map(|s| s.full_id().unwrap()).collect();
    assert_eq!(
        ids,
        vec![
            "1012-bbc:1",
            "1012-bbc:2",
            "1012-bbc:3",
            "1012-bbc:5",
            "1012-bbc:6",
            "d2:1",
            "d2:2"
        ]
    );
    assert_eq!(
        unescape_entities("A &amp; B &quot;q&quot; &#228;&#x4e2d; &bogus; & x"),
        "A & B \"q\" ä中 &bogus; & x"
    );
}

#[test]
fn sgml_pair_loads_and_checks_counts() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("s.sgm");
    let reference = dir.path().join("r.sgm");
    write(&src, "<srcset>\n<doc docid=\"a\">\n<seg id=\"1\">Hi</seg>\n<seg id=\"2\">There</seg>\n</doc>\n</srcset>\n");
    write(&reference, "<refset>\n<doc docid=\"a\">\n<seg id=\"1\">Hallo</seg>\n<seg id=\"2\">Da</seg>\n</doc>\n</refset>\n");
    let ex = load_wmt_sgml(&src, &reference).unwrap();
    assert_eq!(ex.sources, vec!["Hi", "There"]);
    assert_eq!(ex.references, vec!["Hallo", "Da"]);
    assert_eq!(ex.ids.unwrap(), vec!["a:1", "a:2"]);
    write(
        &reference,
        "<refset>\n<doc docid=\"a\">\n<seg id=\"1\">Hallo</seg>\n</doc>\n</refset>\n",
    );
    let msg = load_wmt_sgml(&src, &reference).unwrap_err().to_string();
    assert!(msg.contains("2 lines") && msg.contains("1 lines"), "{msg}");
    write(&reference, "just text\n");
    let msg = load_wmt_sgml(&src, &reference).unwrap_err().to_string();
    assert!(msg.contains("not a WMT SGML file"), "{msg}");
}

// ------------------------------------------------------------------ CNN/DailyMail

#[test]
fn cnndm_source_target_files() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("cnndm/test.source"),
        &numbered("article", 11490),
    );
    write(
        &dir.path().join("cnndm/test.target"),
        &numbered("summary", 11490),
    );
    let located = Dataset::get("cnndm")
        .unwrap()
        .locate(Some(dir.path()))
        .unwrap();
    assert_eq!(located.format, Format::SourceTarget);
    let ex = Dataset::load("cnndm", Some(dir.path())).unwrap();
    assert_eq!(ex.len(), 11490);
    assert_eq!(ex.sources[11489], "article 11489");
    assert_eq!(ex.references[0], "summary 0");
    let shard = ex.shard(3, 4).unwrap();
    assert_eq!(shard.len(), 11490 - 11490 * 3 / 4);
    assert_eq!(shard.sources[0], format!("article {}", 11490 * 3 / 4));
}

#[test]
fn cnndm_jsonl_with_hf_fields_and_ids() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..11490 {
        let obj = serde_json::json!({
            "article": format!("(CNN) Article {i}."),
            "highlights": format!("First point {i} .\nSecond point ."),
            "id": format!("{i:040x}"),
        });
        text.push_str(&obj.to_string());
        text.push('\n');
    }
    write(&dir.path().join("cnndm/test.jsonl"), &text);
    let located = Dataset::get("cnndm")
        .unwrap()
        .locate(Some(dir.path()))
        .unwrap();
    assert_eq!(located.format, Format::Jsonl);
    let ex = Dataset::load("cnndm", Some(dir.path())).unwrap();
    assert_eq!(ex.len(), 11490);
    assert_eq!(ex.sources[7], "(CNN) Article 7.");
    assert_eq!(ex.references[7], "First point 7 .\nSecond point .");
    assert_eq!(ex.ids.as_ref().unwrap()[7], format!("{:040x}", 7));
}

#[test]
fn jsonl_document_summary_and_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.jsonl");
    write(&p, "{\"document\": \"d1\", \"summary\": \"s1\"}\n\n{\"document\": \"d2\", \"summary\": \"s2\", \"id\": 5}\n");
    let ex = load_jsonl(&p).unwrap();
    assert_eq!(ex.sources, vec!["d1", "d2"]);
    assert_eq!(ex.references, vec!["s1", "s2"]);
    assert_eq!(ex.ids, None, "ids only when every line has one");

    write(
        &p,
        "{\"article\": \"a\", \"highlights\": \"h\"}\n{\"article\": \"a\"}\n",
    );
    let msg = load_jsonl(&p).unwrap_err().to_string();
    assert!(
        msg.contains("x.jsonl: line 2") && msg.contains("article/highlights"),
        "{msg}"
    );
    write(
        &p,
        "{\"article\": \"a\", \"highlights\": \"h\"}\nnot json\n",
    );
    let msg = load_jsonl(&p).unwrap_err().to_string();
    assert!(
        msg.contains("line 2") && msg.contains("not valid JSON"),
        "{msg}"
    );
    write(&p, "{\"article\": 3, \"highlights\": \"h\"}\n");
    let msg = load_jsonl(&p).unwrap_err().to_string();
    assert!(msg.contains("'article' is not a string"), "{msg}");
}

#[cfg(feature = "parquet")]
#[test]
fn cnndm_parquet_shards() {
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let shard_dir = dir.path().join("cnndm/3.0.0");
    fs::create_dir_all(&shard_dir).unwrap();
    let schema = Arc::new(
        parse_message_type(
            "message schema { REQUIRED BYTE_ARRAY article (UTF8); \
             REQUIRED BYTE_ARRAY highlights (UTF8); REQUIRED BYTE_ARRAY id (UTF8); }",
        )
        .unwrap(),
    );
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    // Two shards, 5745 rows each, read back in file-name order.
    for (shard, range) in [(0, 0..5745), (1, 5745..11490)] {
        let path = shard_dir.join(format!("test-0000{shard}-of-00002.parquet"));
        let file = fs::File::create(&path).unwrap();
        let mut writer = SerializedFileWriter::new(file, schema.clone(), props.clone()).unwrap();
        let mut rg = writer.next_row_group().unwrap();
        for col in ["article", "highlights", "id"] {
            let values: Vec<ByteArray> = range
                .clone()
                .map(|i| ByteArray::from(format!("{col} {i}").as_str()))
                .collect();
            let mut w = rg.next_column().unwrap().unwrap();
            w.typed::<ByteArrayType>()
                .write_batch(&values, None, None)
                .unwrap();
            w.close().unwrap();
        }
        rg.close().unwrap();
        writer.close().unwrap();
    }
    let located = Dataset::get("cnndm")
        .unwrap()
        .locate(Some(dir.path()))
        .unwrap();
    assert_eq!(located.format, Format::Parquet);
    assert_eq!(located.files.len(), 2);
    let ex = Dataset::load("cnndm", Some(dir.path())).unwrap();
    assert_eq!(ex.len(), 11490);
    assert_eq!(ex.sources[5745], "article 5745");
    assert_eq!(ex.references[11489], "highlights 11489");
    assert_eq!(ex.ids.unwrap()[0], "id 0");
}

// ------------------------------------------------------------------ shards

#[test]
fn shard_ranges_and_specs() {
    for len in [0usize, 1, 5, 11490] {
        for n in 1..=9 {
            let mut next = 0;
            for i in 0..n {
                let r = shard_range(len, i, n).unwrap();
                assert_eq!(r.start, next);
                assert_eq!(r, (i * len / n)..((i + 1) * len / n));
                next = r.end;
            }
            assert_eq!(next, len);
        }
    }
    assert!(shard_range(10, 4, 4).is_err());
    assert!(shard_range(10, 0, 0).is_err());
    let s: Shard = "2/8".parse().unwrap();
    assert_eq!((s.index, s.count), (2, 8));
    assert_eq!(s.to_string(), "2/8");
    assert_eq!(s.range(16).unwrap(), 4..6);
    for bad in ["8/8", "1/0", "a/2", "3", "-1/4", ""] {
        let msg = bad.parse::<Shard>().unwrap_err().to_string();
        assert!(msg.contains("I/N"), "{bad}: {msg}");
    }
    let ex = Examples::new(
        vec!["a".into(), "b".into(), "c".into()],
        vec!["x".into(), "y".into(), "z".into()],
        Some(vec!["1".into(), "2".into(), "3".into()]),
    )
    .unwrap();
    assert_eq!(ex.clone().limit(10).len(), 3);
    let last = ex.clone().shard(1, 2).unwrap();
    assert_eq!(last.sources, vec!["b", "c"]);
    assert_eq!(last.ids.unwrap(), vec!["2", "3"]);
    assert!(ex.shard(2, 2).is_err());
    assert!(Examples::new(vec!["a".into()], vec![], None).is_err());
}
