//! `encdec bench` and `encdec profile` end to end: the JSON schema, `--compare`
//! catching a planted regression, the Chrome trace, the SVG plot, and the
//! no-argument default finishing.
//!
//! The shapes are tiny custom workloads on the t5-small catalogue shape with
//! random weights, so every test but the no-argument one runs in seconds.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn encdec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_encdec"))
        .args(args)
        .output()
        .expect("run encdec")
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "encdec failed: {stderr}");
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

/// A tiny custom workload on the t5-small shape.
const TINY: &[&str] = &[
    "bench",
    "--arch",
    "t5-small",
    "--random-weights",
    "--batch",
    "2",
    "--src-len",
    "8",
    "--new-tokens",
    "4",
    "--threads",
    "2",
    "--warmup",
    "0",
    "--runs",
    "3",
];

fn tiny(extra: &[&str]) -> Output {
    let mut a: Vec<&str> = TINY.to_vec();
    a.extend_from_slice(extra);
    encdec(&a)
}

fn num(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k} is not a number in {v}"))
}

#[test]
fn json_schema() {
    let out = ok(&tiny(&["--format", "json"]));
    let v: Value = serde_json::from_str(&out).expect("bench --format json is JSON");
    assert_eq!(v["model"], "t5-small (random weights)");
    assert_eq!(v["device"], "cpu");
    assert_eq!(v["dtype"], "f32");
    assert_eq!(v["threads"], 2);
    assert_eq!(v["engine"], "encdec");
    let m = &v["machine"];
    assert!(m["cpu"].as_str().is_some_and(|s| !s.is_empty()), "{m}");
    assert!(m["cores"].as_u64().is_some_and(|c| c >= 1), "{m}");
    assert!(m["isa"].as_str().is_some(), "{m}");
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 1);
    let r = &results[0];
    assert_eq!(r["workload"], "custom");
    assert_eq!(r["batch"], 2);
    assert_eq!(r["src_len"], 8);
    assert_eq!(r["new_tokens"], 4);
    assert_eq!(r["num_beams"], 1);
    let runs: Vec<f64> = r["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|x| x.as_f64().expect("run seconds"))
        .collect();
    assert_eq!(runs.len(), 3);
    let median = num(r, "median_s");
    let mut sorted = runs.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(median, sorted[1]);
    let tps = num(r, "tokens_per_s");
    assert!(
        (tps - 8.0 / median).abs() < 1e-6 * tps,
        "tokens/s = 2 x 4 / median"
    );
    for k in [
        "encoder_s",
        "ttft_s",
        "step_p50_ms",
        "step_p90_ms",
        "step_p99_ms",
        "peak_rss_mb",
    ] {
        assert!(num(r, k) > 0.0, "{k} in {r}");
    }
    assert!(num(r, "step_p50_ms") <= num(r, "step_p90_ms"));
    assert!(num(r, "step_p90_ms") <= num(r, "step_p99_ms"));
    assert!(num(r, "ttft_s") >= num(r, "encoder_s"));
    assert!(num(r, "encoder_s") < median);
    assert_eq!(r["steps_per_run"], 4);
}

#[test]
fn compare_catches_a_planted_regression() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.json");
    ok(&tiny(&["--save", saved.to_str().unwrap()]));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let scaled = |factor: f64, path: &Path| {
        let mut r = report.clone();
        for res in r["results"].as_array_mut().unwrap() {
            let t = res["tokens_per_s"].as_f64().unwrap();
            res["tokens_per_s"] = serde_json::json!(t * factor);
        }
        std::fs::write(path, serde_json::to_string(&r).unwrap()).unwrap();
    };

    // The saved run was 25% faster: this run is 20% slower than it.
    let faster = dir.path().join("faster.json");
    scaled(1.25, &faster);
    // Replayed from the saved report, so machine noise cannot hide the planted gap.
    let out = tiny(&[
        "--report",
        saved.to_str().unwrap(),
        "--compare",
        faster.to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "a 20% regression must fail --compare"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("regressed") && err.contains("custom"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one error line: {err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("REGRESSION"), "{stdout}");

    // The saved run was 25% slower: no regression.
    let slower = dir.path().join("slower.json");
    scaled(0.75, &slower);
    let out = ok(&tiny(&[
        "--report",
        saved.to_str().unwrap(),
        "--compare",
        slower.to_str().unwrap(),
        "--format",
        "json",
    ]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["compare"]["workloads"][0]["status"], "ok");
}

#[test]
fn profile_writes_a_chrome_trace_with_one_event_per_op() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.json");
    let out = ok(&encdec(&[
        "profile",
        "--arch",
        "t5-small",
        "--random-weights",
        "--batch",
        "2",
        "--src-len",
        "8",
        "--new-tokens",
        "3",
        "--threads",
        "2",
        "--warmup",
        "0",
        "--mem-bw",
        "10",
        "--clock-ghz",
        "2",
        "--trace",
        trace.to_str().unwrap(),
        "--format",
        "json",
    ]));
    let report: Value = serde_json::from_str(&out).expect("profile --format json is JSON");
    let calls = report["calls"].as_u64().expect("calls");
    let rows = report["rows"].as_array().expect("rows");
    assert_eq!(
        rows.iter()
            .map(|r| r["calls"].as_u64().unwrap())
            .sum::<u64>(),
        calls
    );
    // sorted by cost
    let times: Vec<f64> = rows
        .iter()
        .map(|r| r["time_ms"].as_f64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let has = |op: &str, role: &str| rows.iter().any(|r| r["op"] == op && r["role"] == role);
    for role in ["qkv_proj", "attn_out", "ffn_up", "ffn_down", "lm_head"] {
        assert!(has("linear", role), "no linear {role} in {rows:?}");
    }
    assert!(has("attention", "self") && has("attention", "cross"));
    let share: f64 = rows.iter().map(|r| r["share"].as_f64().unwrap()).sum();
    assert!((share - 1.0).abs() < 1e-6);
    // t5-small: 6 decoder layers x 2 attentions x 3 steps + 6 encoder self-attentions
    let att: u64 = rows
        .iter()
        .filter(|r| r["op"] == "attention")
        .map(|r| r["calls"].as_u64().unwrap())
        .sum();
    assert_eq!(att, 6 + 6 * 2 * 3);
    assert!(report["peaks"]["gflops"].as_f64().unwrap() > 0.0);
    assert_eq!(
        report["op_clock"], "host",
        "the CPU backend has no device timer"
    );

    let t: Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).expect("the trace is JSON");
    let events = t["traceEvents"].as_array().expect("traceEvents");
    let ops: Vec<&Value> = events.iter().filter(|e| e["cat"] == "op").collect();
    assert_eq!(ops.len() as u64, calls, "one trace event per op call");
    let mut last = 0.0;
    for e in events.iter().filter(|e| e["ph"] == "X") {
        for k in ["name", "cat", "ph", "ts", "dur", "pid", "tid", "args"] {
            assert!(!e[k].is_null(), "event without {k}: {e}");
        }
        assert!(e["ts"].as_f64().unwrap() >= 0.0 && e["dur"].as_f64().unwrap() >= 0.0);
    }
    for e in &ops {
        let ts = e["ts"].as_f64().unwrap();
        assert!(ts >= last, "op events in time order");
        last = ts;
        assert!(e["args"]["op"].is_string() && e["args"]["flops"].is_u64());
    }
    assert!(events.iter().any(|e| e["cat"] == "step" && e["ph"] == "X"));
}

#[test]
fn plot_is_an_svg_naming_the_engines() {
    let dir = tempfile::tempdir().unwrap();
    let peers = dir.path().join("peers.json");
    let svg = dir.path().join("plot.svg");
    let result = |tps: f64| {
        serde_json::json!({"workload": "custom", "batch": 2, "src_len": 8, "new_tokens": 4,
            "num_beams": 1, "tokens_per_s": tps, "median_s": 8.0 / tps, "runs": [8.0 / tps]})
    };
    let list = serde_json::json!([
        {"engine": "transformers", "dtype": "float32", "results": [result(50.0)]},
        {"engine": "ctranslate2", "dtype": "float32", "results": [result(120.0)]},
        {"engine": "ctranslate2", "dtype": "int8", "results": [result(200.0)]},
    ]);
    std::fs::write(&peers, list.to_string()).unwrap();
    let out = ok(&tiny(&[
        "--compare-peers",
        peers.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]));
    assert!(
        out.contains("ctranslate2 int8") && out.contains("ratio"),
        "{out}"
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.trim_start().starts_with("<svg"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert!(text.trim_end().ends_with("</svg>"));
    assert!(text.contains("xmlns=\"http://www.w3.org/2000/svg\""));
    for engine in [
        "encdec f32",
        "transformers float32",
        "ctranslate2 float32",
        "ctranslate2 int8",
    ] {
        assert!(text.contains(engine), "the plot names {engine}");
    }
    // well-formed enough: every opened element is closed
    let opens = text.matches('<').count();
    assert_eq!(opens, text.matches('>').count());
    for tag in ["svg", "text"] {
        let open =
            text.matches(&format!("<{tag} ")).count() + text.matches(&format!("<{tag}>")).count();
        assert_eq!(
            open,
            text.matches(&format!("</{tag}>")).count(),
            "<{tag}> balanced"
        );
    }
    // one bar per engine and workload (plus the background and legend boxes)
    assert!(text.matches("<rect").count() >= 4);

    // the same chart as a PNG, replayed from the saved peers
    let png_path = dir.path().join("plot.png");
    ok(&tiny(&[
        "--compare-peers",
        peers.to_str().unwrap(),
        "--plot",
        png_path.to_str().unwrap(),
    ]));
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (800, 480));
    // four engines in four colours: the palette's first four appear
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(3).collect();
    for rgb in [
        [0x1f, 0x77, 0xb4],
        [0xff, 0x7f, 0x0e],
        [0x2c, 0xa0, 0x2c],
        [0xd6, 0x27, 0x28],
    ] {
        assert!(pixels.iter().any(|p| *p == rgb), "no bar of colour {rgb:?}");
    }
}

#[test]
fn bad_input_is_one_line() {
    for (args, needle) in [
        (vec!["bench", "--workload", "W9"], "W9"),
        (vec!["bench", "--arch", "no-such-model"], "no-such-model"),
        (
            vec![
                "bench",
                "--arch",
                "t5-small",
                "--compare",
                "/nonexistent/saved.json",
            ],
            "/nonexistent/saved.json",
        ),
        (vec!["bench", "--arch", "t5-small", "--runs", "0"], "--runs"),
        (vec!["bench", "--batch", "0"], "--batch"),
        (vec!["profile", "--workload", "W1,W2"], "one workload"),
    ] {
        let out = encdec(&args);
        assert!(!out.status.success(), "{args:?} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// `encdec bench` with no arguments: the quick default (t5-small shape, random
/// weights, W1-W4) finishes. Its wall time is measured, not asserted
/// (docs/bench.md records it).
#[test]
fn no_arguments_finishes() {
    let out = ok(&encdec(&["bench"]));
    for w in ["W1", "W2", "W3", "W4"] {
        assert!(out.contains(w), "{out}");
    }
    assert!(out.contains("t5-small (random weights)"));
    assert!(out.contains("quick default"), "{out}");
}
