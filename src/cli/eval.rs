//! `encdec eval`: generate over a registered test set with the task's published
//! settings, score, and write `hyps.txt`, `run.json`, `scores.json` and `report.md`.
//!
//! - Resumable: hypotheses are appended to `hyps.txt` chunk by chunk and flushed; a
//!   re-run keeps the complete lines, drops a half-written last line, and continues
//!   with the next example. `run.json` records what the run is (model, data, limit,
//!   shard, generation settings); a re-run with other settings is refused unless
//!   `--restart`.
//! - Shardable: `--shard I/N` evaluates the I-th of N contiguous slices;
//!   `encdec eval merge DIR...` checks that the directories are the N shards of one
//!   run, joins them and scores the whole set.
//! - Task defaults: T5's `summarize: ` / `translate English to German: ` prefixes,
//!   `task_specific_params` of config.json when the checkpoint has them for the task,
//!   and the language codes of mBART-50 / NLLB / M2M100 from the data set's languages.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgMatches, Args, FromArgMatches, Subcommand};
use encdec_eval::datasets::{Dataset, Examples, Shard, Task};
use encdec_eval::tables::{self, Metric, ModelRow, Published, Row};
use encdec_eval::{bleu, chrf, rouge};
use encdec_models::tokenizer::Seq2SeqTokenizer;
use encdec_models::ModelConfig;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::generate::{resolve_settings, write_atomically, GenArgs, ModelArgs, Session};

const HYPS: &str = "hyps.txt";
const REFS: &str = "references.jsonl";
const RUN: &str = "run.json";
const SCORES: &str = "scores.json";
const REPORT: &str = "report.md";

/// `encdec eval ...` or `encdec eval merge ...`.
///
/// clap's derive cannot make the run flags (with the required `--model`) optional
/// next to a subcommand, so this type parses one or the other by hand.
#[derive(Debug)]
pub struct EvalArgs {
    command: Option<EvalCommand>,
    run: Option<RunArgs>,
}

impl FromArgMatches for EvalArgs {
    fn from_arg_matches(m: &ArgMatches) -> std::result::Result<Self, clap::Error> {
        if m.subcommand_name().is_some() {
            Ok(Self {
                command: Some(EvalCommand::from_arg_matches(m)?),
                run: None,
            })
        } else {
            Ok(Self {
                command: None,
                run: Some(RunArgs::from_arg_matches(m)?),
            })
        }
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> std::result::Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for EvalArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        EvalCommand::augment_subcommands(RunArgs::augment_args(cmd))
            .args_conflicts_with_subcommands(true)
            .subcommand_negates_reqs(true)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

#[derive(Subcommand, Debug)]
enum EvalCommand {
    /// Join the N shard directories of one `--shard I/N` run, check they belong
    /// together, and score the whole test set.
    Merge(MergeArgs),
}

#[derive(Args, Debug)]
struct MergeArgs {
    /// The shard output directories (their `--out`), in any order.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Where to write the joined hyps.txt, scores.json and report.md
    /// (default: runs/<model-name>-<dataset>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// BLEU tokenizer: 13a, intl, zh, char, none (default: zh for Chinese targets, else 13a).
    #[arg(long)]
    tokenize: Option<String>,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Registered test set (cnndm, wmt14-en-de, wmt14-en-fr, wmt17-en-zh, ...).
    #[arg(long)]
    dataset: String,
    /// Data directory (default: $ENCDEC_DATA, then ../shared/data).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Evaluate only the first N examples of the test set.
    #[arg(long)]
    limit: Option<usize>,
    /// Evaluate shard I of N (0-based, contiguous), e.g. 0/4; join with `encdec eval merge`.
    #[arg(long)]
    shard: Option<String>,
    /// Output directory (default: runs/<model-name>-<dataset>[-limit-N][-shard-I-of-N]).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Discard what --out holds from an earlier run and start over.
    #[arg(long)]
    restart: bool,
    /// Sources per generation batch; hyps.txt is appended every 4 batches.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Text put before every source (default: the task's T5 prefix for T5
    /// checkpoints; `--prefix ""` for none).
    #[arg(long)]
    prefix: Option<String>,
    /// Source language code (default: the data set's, in the checkpoint's convention).
    #[arg(long)]
    src_lang: Option<String>,
    /// Target language code (default: the data set's, in the checkpoint's convention).
    #[arg(long)]
    tgt_lang: Option<String>,
    /// BLEU tokenizer: 13a, intl, zh, char, none (default: zh for Chinese targets, else 13a).
    #[arg(long)]
    tokenize: Option<String>,
    #[command(flatten)]
    gen: GenArgs,
}

pub fn run(args: EvalArgs) -> Result<()> {
    match (args.command, args.run) {
        (Some(EvalCommand::Merge(m)), _) => merge(m),
        (None, Some(r)) => run_eval(r),
        (None, None) => bail!("eval: give --model and --dataset, or `merge DIR...`"),
    }
}

// ---------------------------------------------------------------------------------
// run.json

/// What a run is. Everything but the fields [`identity`] drops must match for a
/// re-run to continue it, or for shards to be merged.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunInfo {
    encdec_version: String,
    /// `--model` as given.
    model: String,
    /// The checkpoint directory it resolved to.
    model_dir: String,
    dataset: String,
    task: String,
    data: DataInfo,
    limit: Option<usize>,
    shard: Option<ShardInfo>,
    /// The examples of this run: `[start, end)` of the (limited) test set.
    examples: [usize; 2],
    dtype: String,
    prefix: Option<String>,
    src_lang: Option<String>,
    tgt_lang: Option<String>,
    /// The `task_specific_params` entry of config.json that was applied.
    task_params: Option<String>,
    /// Resolved generation settings (HF field names).
    generation: Value,
    /// Where each generation setting came from.
    #[serde(default)]
    generation_origins: BTreeMap<String, String>,
    /// How the task defaults were chosen.
    #[serde(default)]
    defaults: Vec<String>,
    device: String,
    threads: Option<usize>,
    batch_size: usize,
    #[serde(default)]
    progress: Progress,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct DataInfo {
    /// Examples in the (limited) test set, all shards together.
    examples: usize,
    /// Of the (limited) test set's sources and references.
    fingerprint: String,
    format: String,
    files: Vec<String>,
    /// The Hugging Face hub copy the files are (repository, file, revision, and what to
    /// know about its text), when they came from the hub or its cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hub: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
struct ShardInfo {
    index: usize,
    count: usize,
}

/// Generation totals over every invocation that contributed to hyps.txt.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Progress {
    generated_examples: usize,
    generated_tokens: u64,
    generation_seconds: f64,
    truncated_sources: usize,
}

/// The fields that say which outputs a run produces; `merge` also drops the shard.
fn identity(info: &RunInfo, for_merge: bool) -> Value {
    let mut v = serde_json::to_value(info).unwrap_or(Value::Null);
    if let Some(map) = v.as_object_mut() {
        for k in [
            "encdec_version",
            "model_dir",
            "generation_origins",
            "defaults",
            "device",
            "threads",
            "batch_size",
            "progress",
        ] {
            map.remove(k);
        }
        if for_merge {
            map.remove("shard");
            map.remove("examples");
        }
        if let Some(data) = map.get_mut("data").and_then(Value::as_object_mut) {
            data.remove("format");
            data.remove("files");
            data.remove("hub");
        }
    }
    v
}

/// `key: a vs b` for every leaf where `a` and `b` differ.
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                differences(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &p,
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{path}: {a} vs {b}")),
        _ => {}
    }
}

fn read_run_info(dir: &Path) -> Result<RunInfo> {
    let path = dir.join(RUN);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not an encdec run.json", path.display()))
}

fn write_json(path: &Path, v: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(v)?;
    text.push('\n');
    write_atomically(path, &text)
}

/// FNV-1a (64 bit) of the sources and references, to recognise the same data.
fn fingerprint(ex: &Examples) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (s, r) in ex.sources.iter().zip(&ex.references) {
        eat(s.as_bytes());
        eat(&[0]);
        eat(r.as_bytes());
        eat(&[1]);
    }
    format!("fnv1a64:{h:016x}:{}", ex.len())
}

// ---------------------------------------------------------------------------------
// Task defaults

/// Language codes per convention: (ISO 639-1, English name, mBART-50, NLLB-200, M2M-100).
const LANGS: &[LangCodes] = &[
    ("en", "English", "en_XX", "eng_Latn", "en"),
    ("de", "German", "de_DE", "deu_Latn", "de"),
    ("fr", "French", "fr_XX", "fra_Latn", "fr"),
    ("ro", "Romanian", "ro_RO", "ron_Latn", "ro"),
    ("zh", "Chinese", "zh_CN", "zho_Hans", "zh"),
];

type LangCodes = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

fn lang_entry(iso: &str) -> Option<&'static LangCodes> {
    LANGS.iter().find(|l| l.0 == iso)
}

pub(crate) struct Defaults {
    /// `task_specific_params` key to apply.
    pub(crate) task: Option<String>,
    pub(crate) prefix: Option<String>,
    pub(crate) src_lang: Option<String>,
    pub(crate) tgt_lang: Option<String>,
    pub(crate) notes: Vec<String>,
}

/// The flags [`task_defaults`] respects besides `--task`: given ones win over defaults.
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskFlags {
    pub(crate) prefix: Option<String>,
    pub(crate) src_lang: Option<String>,
    pub(crate) tgt_lang: Option<String>,
}

/// The `task_specific_params` keys of `dir/config.json`.
fn task_param_keys(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| {
            v.get("task_specific_params")
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
        })
        .unwrap_or_default()
}

fn is_t5(model_type: &str) -> bool {
    model_type == "t5"
}

fn is_t5_family(model_type: &str) -> bool {
    matches!(model_type, "t5" | "mt5" | "umt5" | "longt5")
}

/// Task prefix, task_specific_params and language codes for `ds`, unless given.
fn task_defaults(
    gen: &GenArgs,
    a: &TaskFlags,
    ds: &Dataset,
    dir: &Path,
    model_type: &str,
    tokenizer: &Seq2SeqTokenizer,
    rows: &[(String, ModelRow)],
) -> Defaults {
    let mut notes = Vec::new();
    let row_gen = rows.first().map(|(_, r)| &r.generation);

    // task_specific_params (T5's published settings live there).
    let wanted = match ds.task {
        Task::Summarization => "summarization".to_string(),
        Task::Translation => format!("translation_{}_to_{}", ds.src_lang, ds.tgt_lang),
    };
    let task = match gen.task.as_deref() {
        Some("none") => None,
        Some(t) => Some(t.to_string()),
        // T5's generation_config.json has no search settings; its published ones are
        // there. Other checkpoints' generation_config.json decides.
        None if is_t5_family(model_type) && task_param_keys(dir).contains(&wanted) => {
            notes.push(format!(
                "generation settings from task_specific_params.{wanted} of config.json, as the \
                 transformers pipelines apply them (flags override; --task none turns this off)"
            ));
            Some(wanted.clone())
        }
        None => None,
    };

    // Prefix: the flag, else a published row's, else the applied task's, else T5's.
    let prefix = match (&a.prefix, row_gen.and_then(|g| g.prefix.clone())) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(p)) => {
            notes.push(format!("prefix {p:?} from the published table row"));
            Some(p)
        }
        (None, None) if task.is_some() => None,
        (None, None) if is_t5(model_type) => {
            let p = match ds.task {
                Task::Summarization => Some("summarize: ".to_string()),
                Task::Translation => match (lang_entry(ds.src_lang), lang_entry(ds.tgt_lang)) {
                    (Some(s), Some(t)) => Some(format!("translate {} to {}: ", s.1, t.1)),
                    _ => None,
                },
            };
            if let Some(p) = &p {
                notes.push(format!("T5 task prefix {p:?}"));
            }
            p
        }
        (None, None) => None,
    };

    // Language codes of multilingual checkpoints.
    let (mut src_lang, mut tgt_lang) = (a.src_lang.clone(), a.tgt_lang.clone());
    if ds.task == Task::Translation && (src_lang.is_none() || tgt_lang.is_none()) {
        let from_row = row_gen.and_then(|g| Some((g.src_lang.clone()?, g.tgt_lang.clone()?)));
        let probed = || -> Option<(String, String, &'static str)> {
            if !matches!(
                model_type,
                "mbart" | "m2m_100" | "nllb" | "nllb-moe" | "nllb_moe"
            ) {
                return None;
            }
            let (s, t) = (lang_entry(ds.src_lang)?, lang_entry(ds.tgt_lang)?);
            let conventions = [
                ("NLLB-200 convention", s.3.to_string(), t.3.to_string()),
                ("mBART-50 convention", s.2.to_string(), t.2.to_string()),
                ("M2M-100 convention", s.4.to_string(), t.4.to_string()),
                (
                    "M2M-100 convention",
                    format!("__{}__", s.4),
                    format!("__{}__", t.4),
                ),
            ];
            conventions.into_iter().find_map(|(name, sc, tc)| {
                (tokenizer.lang_id(&sc).is_ok() && tokenizer.lang_id(&tc).is_ok())
                    .then_some((sc, tc, name))
            })
        };
        let chosen = match from_row {
            Some((s, t)) => Some((s, t, "from the published table row")),
            None => probed(),
        };
        match chosen {
            Some((s, t, from)) => {
                if src_lang.is_none() {
                    src_lang = Some(s);
                }
                if tgt_lang.is_none() {
                    tgt_lang = Some(t);
                }
                notes.push(format!(
                    "language codes {} -> {} ({from})",
                    src_lang.as_deref().unwrap_or("-"),
                    tgt_lang.as_deref().unwrap_or("-")
                ));
            }
            None if matches!(model_type, "mbart" | "m2m_100") => notes.push(format!(
                "warning: no language codes known for {}->{} in this tokenizer; pass --src-lang/--tgt-lang",
                ds.src_lang, ds.tgt_lang
            )),
            None => {}
        }
    }
    Defaults {
        task,
        prefix,
        src_lang,
        tgt_lang,
        notes,
    }
}

/// The short name of a model: the hub repo name, or the directory name.
fn model_name(spec: &str) -> String {
    let trimmed = spec.trim_end_matches('/');
    for comp in Path::new(trimmed).components().rev() {
        let c = comp.as_os_str().to_string_lossy();
        if let Some(repo) = c.strip_prefix("models--") {
            return repo.rsplit("--").next().unwrap_or(repo).to_string();
        }
    }
    Path::new(trimmed)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| trimmed.replace('/', "_"))
}

/// Published model rows (any table) for this checkpoint and data set, matched by
/// the repo name (`facebook/bart-large-cnn` matches `--model bart-large-cnn`, a
/// directory of that name, or its snapshot in the HF cache).
fn published_rows(model: &str, dataset: &str) -> Vec<(String, ModelRow)> {
    let name = model_name(model);
    let mut out = Vec::new();
    for t in tables::list_tables() {
        let Ok(table) = tables::load_table(t) else {
            continue;
        };
        for row in table.rows {
            if let Row::Model(r) = row {
                let hit = r.dataset == dataset
                    && r.checkpoint
                        .as_deref()
                        .is_some_and(|c| c == model || model_name(c) == name);
                if hit {
                    out.push((t.to_string(), r));
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// hyps.txt

/// The complete lines of `path` (those ending in `\n`). A half-written last line
/// is cut off the file, and reported.
fn read_complete_lines(path: &Path) -> Result<(Vec<String>, bool)> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
        Err(e) => return Err(anyhow!("{}: {e}", path.display())),
    };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let partial = complete < bytes.len();
    if partial {
        let f = OpenOptions::new().write(true).open(path).with_context(|| {
            format!(
                "{}: cannot open to cut its unfinished last line",
                path.display()
            )
        })?;
        f.set_len(complete as u64)
            .with_context(|| format!("{}: cannot cut its unfinished last line", path.display()))?;
    }
    let mut lines = Vec::new();
    if complete > 0 {
        for (i, raw) in bytes[..complete - 1].split(|&b| b == b'\n').enumerate() {
            let line = std::str::from_utf8(raw).map_err(|_| {
                anyhow!(
                    "{}: line {} is not valid UTF-8 (damaged file; use --restart to start over)",
                    path.display(),
                    i + 1
                )
            })?;
            lines.push(line.to_string());
        }
    }
    Ok((lines, partial))
}

/// One hypothesis as one line of hyps.txt.
fn one_line(text: &str, pegasus: bool) -> String {
    let text = if pegasus {
        text.replace("<n>", " ")
    } else {
        text.to_string()
    };
    text.replace(['\n', '\r'], " ").trim_end().to_string()
}

/// References as JSON strings, one per line (they may hold newlines).
fn write_references(dir: &Path, refs: &[String]) -> Result<()> {
    let mut text = String::new();
    for r in refs {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    write_atomically(&dir.join(REFS), &text)
}

fn read_references(dir: &Path, expected: usize) -> Result<Vec<String>> {
    let path = dir.join(REFS);
    if expected == 0 {
        return Ok(Vec::new());
    }
    let refs = encdec_eval::io::read_examples(&path)?;
    if refs.len() != expected {
        bail!(
            "{}: {} references, expected {expected}",
            path.display(),
            refs.len()
        );
    }
    Ok(refs)
}

// ---------------------------------------------------------------------------------
// Progress

/// An indicatif bar on a terminal; otherwise a plain line on stderr every 30 s.
pub(crate) struct ProgressLine {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
    start_done: usize,
    started: Instant,
    last_line: Instant,
}

impl ProgressLine {
    pub(crate) fn new(label: &str, done: usize, total: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] [{wide_bar}] {pos}/{len} {msg} ETA {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(label.to_string());
            bar.set_position(done as u64);
            bar.reset_eta();
            bar.enable_steady_tick(Duration::from_millis(500));
            bar
        });
        ProgressLine {
            bar,
            total,
            start_done: done,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    pub(crate) fn update(&mut self, done: usize, tokens: u64) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let ex_rate = (done - self.start_done) as f64 / secs;
        let tok_rate = tokens as f64 / secs;
        let msg = format!("({ex_rate:.2} ex/s, {tok_rate:.0} tok/s)");
        match &self.bar {
            Some(bar) => {
                bar.set_position(done as u64);
                bar.set_message(msg);
            }
            None => {
                if self.last_line.elapsed() >= Duration::from_secs(30) || done == self.total {
                    self.last_line = Instant::now();
                    let eta = if ex_rate > 0.0 {
                        format_secs((self.total - done) as f64 / ex_rate)
                    } else {
                        "?".into()
                    };
                    eprintln!(
                        "eval: {done}/{} examples {msg}, elapsed {}, ETA {eta}",
                        self.total,
                        format_secs(secs)
                    );
                }
            }
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn format_secs(s: f64) -> String {
    let s = s.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

// ---------------------------------------------------------------------------------
// Scoring

/// Fails early (before hours of generation) on an unknown `--tokenize`.
fn check_tokenize(tokenize: Option<&str>) -> Result<()> {
    if let Some(t) = tokenize {
        t.parse::<encdec_eval::bleu_tokenize::BleuTokenizer>()
            .with_context(|| format!("--tokenize {t}"))?;
    }
    Ok(())
}

fn default_tokenize(tgt_lang: &str) -> &'static str {
    if tgt_lang == "zh" {
        "zh"
    } else {
        "13a"
    }
}

fn bleu_score(hyps: &[String], refs: &[String], tokenize: &str) -> Result<bleu::BleuScore> {
    let cfg = bleu::BleuConfig {
        tokenizer: tokenize.parse()?,
        ..Default::default()
    };
    Ok(bleu::corpus_bleu(hyps, &[refs.to_vec()], &cfg)?)
}

fn rouge_result(
    hyps: &[String],
    refs: &[String],
    stem: bool,
    split: bool,
) -> Result<rouge::RougeResult> {
    let cfg = rouge::RougeConfig {
        types: rouge::parse_types("rouge1,rouge2,rougeL,rougeLsum")?,
        use_stemmer: stem,
        split_sentences: split,
        ..Default::default()
    };
    Ok(rouge::score_corpus(&cfg, hyps, refs)?)
}

/// Scores of one run: flat (`bleu`, `rouge1`, ...), detailed JSON per metric, and
/// the lines to print.
struct Scored {
    flat: BTreeMap<String, f64>,
    detail: serde_json::Map<String, Value>,
    text: Vec<String>,
}

/// The metrics of the task.
fn score_all(task: Task, hyps: &[String], refs: &[String], tokenize: &str) -> Result<Scored> {
    let mut flat = BTreeMap::new();
    let mut detail = serde_json::Map::new();
    let mut text = Vec::new();
    if hyps.is_empty() {
        return Ok(Scored { flat, detail, text });
    }
    match task {
        Task::Translation => {
            let b = bleu_score(hyps, refs, tokenize)?;
            let c = chrf::corpus_chrf(hyps, &[refs.to_vec()], &chrf::ChrfConfig::default())?;
            flat.insert("bleu".into(), b.score);
            flat.insert("chrf".into(), c.score);
            text.push(format!("{}  ({})", b.format_text(), b.signature));
            text.push(format!("{}  ({})", c.format_text(), c.signature));
            detail.insert("bleu".into(), serde_json::to_value(&b)?);
            detail.insert("chrf".into(), serde_json::to_value(&c)?);
        }
        Task::Summarization => {
            // rougeLsum over sentences (Punkt split), as the transformers
            // summarization examples score; the other types are unaffected by it.
            let r = rouge_result(hyps, refs, true, true)?;
            for t in &r.types {
                flat.insert(t.rouge_type.name(), t.mean.fmeasure * 100.0);
            }
            text.push(format!(
                "ROUGE-1/2/L/Lsum F = {:.2} / {:.2} / {:.2} / {:.2}  (rouge-score semantics, stemming, rougeLsum over Punkt sentences)",
                flat.get("rouge1").copied().unwrap_or(0.0),
                flat.get("rouge2").copied().unwrap_or(0.0),
                flat.get("rougeL").copied().unwrap_or(0.0),
                flat.get("rougeLsum").copied().unwrap_or(0.0),
            ));
            detail.insert("rouge".into(), r.to_json());
        }
    }
    Ok(Scored { flat, detail, text })
}

/// One metric of a published row, measured with that row's protocol.
fn measure_for_row(
    row: &ModelRow,
    metric: Metric,
    hyps: &[String],
    refs: &[String],
    flat: &BTreeMap<String, f64>,
    tokenize: &str,
) -> Result<f64> {
    match metric {
        Metric::Bleu => {
            let t = row.tokenize.as_deref().unwrap_or("13a");
            match flat.get("bleu") {
                Some(v) if t == tokenize => Ok(*v),
                _ => Ok(bleu_score(hyps, refs, t)?.score),
            }
        }
        Metric::Chrf => flat.get("chrf").copied().ok_or_else(|| anyhow!("no chrF")),
        m => {
            let name = m.name();
            if row.stem && row.split_sentences {
                flat.get(name).copied().ok_or_else(|| anyhow!("no {name}"))
            } else {
                let r = rouge_result(hyps, refs, row.stem, row.split_sentences)?;
                r.get(name)
                    .map(|t| t.mean.fmeasure * 100.0)
                    .ok_or_else(|| anyhow!("no {name}"))
            }
        }
    }
}

/// One metric of a published row: (metric, published, measured with the row's protocol).
type Compared = (Metric, Option<f64>, Option<f64>);

/// Scores `hyps` and writes scores.json and report.md into `dir`; returns the
/// lines to print.
fn score_and_report(
    dir: &Path,
    info: &RunInfo,
    hyps: &[String],
    refs: &[String],
    tokenize: Option<&str>,
) -> Result<Vec<String>> {
    let ds = Dataset::get(&info.dataset)?;
    let tokenize = tokenize
        .unwrap_or(default_tokenize(ds.tgt_lang))
        .to_string();
    let Scored { flat, detail, text } = score_all(ds.task, hyps, refs, &tokenize)?;
    let p = &info.progress;
    let tokens_per_s = if p.generation_seconds > 0.0 {
        p.generated_tokens as f64 / p.generation_seconds
    } else {
        0.0
    };
    let full = info.limit.is_none() && info.shard.is_none();
    let mut scores = json!({
        "model": info.model,
        "dataset": info.dataset,
        "task": info.task,
        "n": hyps.len(),
        "test_set_examples": info.data.examples,
        "complete_test_set": full,
        "limit": info.limit,
        "shard": info.shard.map(|s| format!("{}/{}", s.index, s.count)),
        "scores": flat,
        "elapsed_s": p.generation_seconds,
        "generated_tokens": p.generated_tokens,
        "tokens_per_s": tokens_per_s,
        "examples_per_s": if p.generation_seconds > 0.0 { p.generated_examples as f64 / p.generation_seconds } else { 0.0 },
        "truncated_sources": p.truncated_sources,
        "prefix": info.prefix,
        "src_lang": info.src_lang,
        "tgt_lang": info.tgt_lang,
        "generation": info.generation,
        "encdec_version": env!("CARGO_PKG_VERSION"),
    });
    if let Some(map) = scores.as_object_mut() {
        map.extend(detail);
        if ds.task == Task::Translation {
            map.insert("bleu_tokenize".into(), json!(tokenize));
        }
    }
    write_json(&dir.join(SCORES), &scores)?;

    // report.md
    let rows = published_rows(&info.model, &info.dataset);
    let compared: Vec<Vec<Compared>> = rows
        .iter()
        .map(|(_, row)| {
            row.metrics
                .iter()
                .map(|&m| {
                    let measured = if flat.is_empty() {
                        None
                    } else {
                        measure_for_row(row, m, hyps, refs, &flat, &tokenize).ok()
                    };
                    (m, row.published.get(m), measured)
                })
                .collect()
        })
        .collect();
    let mut md = format!(
        "# encdec eval: {} on {}\n\n",
        model_name(&info.model),
        info.dataset
    );
    md.push_str("| | |\n|---|---|\n");
    let mut kv =
        |k: &str, v: String| md.push_str(&format!("| {k} | {} |\n", v.replace('|', "\\|")));
    if info.model == info.model_dir {
        kv("model", format!("`{}`", info.model));
    } else {
        kv("model", format!("`{}` ({})", info.model, info.model_dir));
    }
    kv("dataset", format!("{} — {}", ds.name, ds.description));
    let mut examples = format!("{} of the {} in the test set", hyps.len(), ds.lines);
    if let Some(l) = info.limit {
        examples.push_str(&format!("; --limit {l}"));
    }
    if let Some(s) = info.shard {
        examples.push_str(&format!(
            "; shard {}/{}: examples {}..{}",
            s.index, s.count, info.examples[0], info.examples[1]
        ));
    }
    kv("examples", examples);
    let mut data = info.data.files.join(", ");
    if let Some(hub) = &info.data.hub {
        data.push_str(&format!(" (Hugging Face hub: {hub})"));
    }
    kv("data", data);
    kv(
        "device / dtype",
        format!("{} / {}", info.device, info.dtype),
    );
    if let Some(p) = &info.prefix {
        kv("prefix", format!("`{p:?}`"));
    }
    if info.src_lang.is_some() || info.tgt_lang.is_some() {
        kv(
            "languages",
            format!(
                "{} → {}",
                info.src_lang.as_deref().unwrap_or("-"),
                info.tgt_lang.as_deref().unwrap_or("-")
            ),
        );
    }
    kv("generation", generation_summary(&info.generation));
    kv(
        "speed",
        format!(
            "{} tokens in {:.2} s of generation: {:.1} tokens/s{}",
            p.generated_tokens,
            p.generation_seconds,
            tokens_per_s,
            if p.truncated_sources > 0 {
                format!(
                    "; {} sources truncated to the encoder's length",
                    p.truncated_sources
                )
            } else {
                String::new()
            }
        ),
    );
    md.push_str("\n## Scores\n\n");
    if flat.is_empty() {
        md.push_str("No examples: nothing scored.\n");
    } else {
        md.push_str("| metric | score |\n|---|---:|\n");
        for (k, v) in &flat {
            md.push_str(&format!("| {k} | {v:.2} |\n"));
        }
        md.push('\n');
        for line in &text {
            md.push_str(&format!("    {line}\n"));
        }
    }
    md.push_str("\n## Published\n\n");
    if rows.is_empty() {
        md.push_str(&format!(
            "No row of `eval/tables` lists {} on {}.\n",
            model_name(&info.model),
            info.dataset
        ));
    }
    for ((table, row), cmp) in rows.iter().zip(&compared) {
        md.push_str(&format!(
            "`encdec table {table}`, row \"{}\" (source: {}{}).\n\n",
            row.system,
            row.source,
            if row.verified { "" } else { ", unverified" }
        ));
        if !full {
            md.push_str(&format!(
                "Not comparable: this run has {} of the {} examples.\n\n",
                hyps.len(),
                ds.lines
            ));
        }
        md.push_str("| metric | published | measured | diff |\n|---|---:|---:|---:|\n");
        for &(m, published, measured) in cmp {
            let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.2}"));
            let diff = match (measured, published) {
                (Some(a), Some(b)) => format!("{:+.2}", a - b),
                _ => "-".into(),
            };
            md.push_str(&format!(
                "| {m} | {} | {} | {diff} |\n",
                f(published),
                f(measured)
            ));
        }
        md.push('\n');
        if let Published::None(_) = row.published {
            md.push_str("No published number for this checkpoint and test set. ");
        }
        if let Some(why) = &row.differs_because {
            md.push_str(&format!("Expected differences: {why}. "));
        }
        if !row.note.is_empty() {
            md.push_str(&row.note.split_whitespace().collect::<Vec<_>>().join(" "));
        }
        md.push('\n');
    }
    md.push_str("\n## Generation settings\n\n");
    if !info.defaults.is_empty() {
        for d in &info.defaults {
            md.push_str(&format!("- {d}\n"));
        }
        md.push('\n');
    }
    md.push_str("```\n");
    if let Some(map) = info.generation.as_object() {
        for (k, v) in map {
            match info.generation_origins.get(k) {
                Some(o) => md.push_str(&format!("{k} = {v}  ({o})\n")),
                None => md.push_str(&format!("{k} = {v}\n")),
            }
        }
    }
    md.push_str("```\n");
    write_atomically(&dir.join(REPORT), &md)?;

    let mut lines = vec![format!(
        "{} on {} ({} examples{}):",
        model_name(&info.model),
        info.dataset,
        hyps.len(),
        if full { "" } else { ", partial" }
    )];
    lines.extend(text.into_iter().map(|t| format!("  {t}")));
    for ((table, row), cmp) in rows.iter().zip(&compared) {
        let published: Vec<String> = cmp
            .iter()
            .filter_map(|&(m, p, measured)| {
                let p = p?;
                Some(match measured {
                    Some(x) if full => format!("{m} {p:.2} (measured {x:.2}, {:+.2})", x - p),
                    _ => format!("{m} {p:.2}"),
                })
            })
            .collect();
        if !published.is_empty() {
            lines.push(format!(
                "  published ({table}: {}): {}{}",
                row.system,
                published.join(", "),
                if full {
                    ""
                } else {
                    " (not comparable: partial run)"
                }
            ));
        }
    }
    Ok(lines)
}

fn generation_summary(g: &Value) -> String {
    let get = |k: &str| g.get(k).filter(|v| !v.is_null());
    let mut parts = Vec::new();
    if let Some(m) = get("mode").and_then(Value::as_str) {
        parts.push(m.replace('_', " "));
    }
    if let Some(b) = get("num_beams").and_then(Value::as_u64).filter(|&b| b > 1) {
        parts.push(format!("{b} beams"));
        if let Some(lp) = get("length_penalty") {
            parts.push(format!("length penalty {lp}"));
        }
        if let Some(es) = get("early_stopping") {
            parts.push(format!("early stopping {es}"));
        }
    }
    let min = get("min_length").and_then(Value::as_u64).unwrap_or(0);
    if let Some(max) = get("max_length").and_then(Value::as_u64) {
        parts.push(format!("length {min}..{max} (HF max_length/min_length)"));
    }
    if let Some(n) = get("no_repeat_ngram_size")
        .and_then(Value::as_u64)
        .filter(|&n| n > 0)
    {
        parts.push(format!("no-repeat {n}-grams"));
    }
    if let Some(r) = get("repetition_penalty")
        .and_then(Value::as_f64)
        .filter(|&r| r != 1.0)
    {
        parts.push(format!("repetition penalty {r}"));
    }
    parts.join(", ")
}

// ---------------------------------------------------------------------------------
// encdec eval

fn default_out(model: &str, dataset: &str, limit: Option<usize>, shard: Option<Shard>) -> PathBuf {
    let mut name = format!("{}-{dataset}", model_name(model));
    if let Some(l) = limit {
        name.push_str(&format!("-limit-{l}"));
    }
    if let Some(s) = shard {
        name.push_str(&format!("-shard-{}-of-{}", s.index, s.count));
    }
    Path::new("runs").join(name)
}

/// Token ids of each source (None for a blank one), truncated to the encoder's
/// length like `Session::encode_lines` but counting the cuts instead of warning
/// about each one.
fn encode_quiet(
    session: &Session,
    lines: &[String],
    first: usize,
) -> Result<(Vec<Option<Vec<u32>>>, usize)> {
    let max = session.loaded.model.spec().max_source_positions;
    let mut cut_count = 0;
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            out.push(None);
            continue;
        }
        let text = match &session.prefix {
            Some(p) => format!("{p}{line}"),
            None => line.clone(),
        };
        let at = || format!("example {}", first + i + 1);
        let ids = match max {
            Some(max) => {
                let (ids, cut) = session
                    .tokenizer
                    .encode_truncated(&text, max)
                    .with_context(at)?;
                cut_count += cut as usize;
                ids
            }
            None => session.tokenizer.encode(&text).with_context(at)?,
        };
        out.push(Some(ids));
    }
    Ok((out, cut_count))
}

/// How a checkpoint generates over a data set: the task defaults (see
/// [`task_defaults`]) on top of the flags, and the resolved generation settings.
pub(crate) struct TaskSettings {
    pub(crate) model_type: String,
    pub(crate) defaults: Defaults,
    /// The generation flags with the chosen `--task`.
    pub(crate) gen: GenArgs,
    pub(crate) config: encdec_generate::GenerationConfig,
    pub(crate) prefix: Option<String>,
}

/// [`TaskSettings`] of the checkpoint in `dir` on `ds`; `rows` are the published
/// table rows whose prefix or language codes apply.
pub(crate) fn task_settings(
    dir: &Path,
    ds: &Dataset,
    gen: &GenArgs,
    flags: &TaskFlags,
    rows: &[(String, ModelRow)],
) -> Result<TaskSettings> {
    let model_cfg = ModelConfig::from_dir(dir)?;
    let model_type = model_cfg.model_type().to_string();
    let defaults = {
        let tokenizer = Seq2SeqTokenizer::from_dir(dir, &model_type)?;
        task_defaults(gen, flags, ds, dir, &model_type, &tokenizer, rows)
    };
    let mut gen = gen.clone();
    gen.task = defaults.task.clone();
    let (_, _, config, prefix) = resolve_settings(
        dir,
        &gen,
        defaults.prefix.as_deref(),
        defaults.src_lang.as_deref(),
        defaults.tgt_lang.as_deref(),
    )?;
    Ok(TaskSettings {
        model_type,
        defaults,
        gen,
        config,
        prefix,
    })
}

fn run_eval(a: RunArgs) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if a.limit == Some(0) {
        bail!("--limit must be at least 1");
    }
    check_tokenize(a.tokenize.as_deref())?;
    let shard = a
        .shard
        .as_deref()
        .map(|s| s.parse::<Shard>().map_err(|e| anyhow!("--shard {s}: {e}")))
        .transpose()?;
    let ds = Dataset::get(&a.dataset)?;
    let located = ds.locate_or(a.data.as_deref(), Some(&crate::hub::HubData))?;
    let mut examples = ds.read(&located)?;
    if let Some(l) = a.limit {
        examples = examples.limit(l);
    }
    let total = examples.len();
    let data = DataInfo {
        examples: total,
        fingerprint: fingerprint(&examples),
        format: located.format.to_string(),
        files: located
            .files
            .iter()
            .map(|p| {
                p.canonicalize()
                    .unwrap_or_else(|_| p.clone())
                    .display()
                    .to_string()
            })
            .collect(),
        hub: located.hub.map(|h| h.provenance()),
    };
    let range = match shard {
        Some(s) => s.range(total)?,
        None => 0..total,
    };
    let examples = examples.slice(range.clone());

    let dir = crate::hub::resolve_model(&a.model.model)?;
    let rows = published_rows(&a.model.model, ds.name);
    let flags = TaskFlags {
        prefix: a.prefix.clone(),
        src_lang: a.src_lang.clone(),
        tgt_lang: a.tgt_lang.clone(),
    };
    let TaskSettings {
        model_type,
        defaults,
        gen,
        config,
        prefix,
    } = task_settings(&dir, ds, &a.gen, &flags, &rows)?;
    let mut generation = config.to_json();
    if let Some(map) = generation.as_object_mut() {
        map.remove("source");
    }
    let origins: BTreeMap<String, String> = generation
        .as_object()
        .map(|m| {
            m.keys()
                .filter(|k| k.as_str() != "mode" && k.as_str() != "task_prefix")
                .map(|k| (k.clone(), config.origin(k)))
                .collect()
        })
        .unwrap_or_default();
    let mut info = RunInfo {
        encdec_version: env!("CARGO_PKG_VERSION").to_string(),
        model: a.model.model.clone(),
        model_dir: dir.display().to_string(),
        dataset: ds.name.to_string(),
        task: match ds.task {
            Task::Summarization => "summarization",
            Task::Translation => "translation",
        }
        .to_string(),
        data,
        limit: a.limit,
        shard: shard.map(|s| ShardInfo {
            index: s.index,
            count: s.count,
        }),
        examples: [range.start, range.end],
        dtype: a.model.dtype.clone(),
        prefix: prefix.clone(),
        src_lang: defaults.src_lang.clone(),
        tgt_lang: defaults.tgt_lang.clone(),
        task_params: defaults.task.clone(),
        generation,
        generation_origins: origins,
        defaults: defaults.notes.clone(),
        device: a.model.device.clone(),
        threads: a.model.threads,
        batch_size: a.batch_size,
        progress: Progress::default(),
    };

    let out = a
        .out
        .clone()
        .unwrap_or_else(|| default_out(&a.model.model, ds.name, a.limit, shard));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let hyps_path = out.join(HYPS);
    if a.restart {
        for f in [HYPS, RUN, SCORES, REPORT, REFS] {
            let p = out.join(f);
            if p.exists() {
                std::fs::remove_file(&p)
                    .with_context(|| format!("cannot remove {}", p.display()))?;
            }
        }
    }
    if out.join(RUN).exists() {
        let old = read_run_info(&out).map_err(|e| anyhow!("{e:#}; use --restart to start over"))?;
        let mut diffs = Vec::new();
        differences(
            &identity(&old, false),
            &identity(&info, false),
            "",
            &mut diffs,
        );
        if !diffs.is_empty() {
            bail!(
                "{} holds a run with other settings (earlier vs now: {}): refusing to mix outputs; \
                 use --restart to discard it, or --out DIR for a separate run",
                out.display(),
                diffs.join("; ")
            );
        }
        info.progress = old.progress;
    } else if hyps_path.exists() {
        bail!(
            "{} exists but {} does not: not an encdec eval directory I can continue; \
             use --restart to overwrite it, or --out DIR",
            hyps_path.display(),
            out.join(RUN).display()
        );
    }
    for note in &defaults.notes {
        if let Some(w) = note.strip_prefix("warning: ") {
            eprintln!("warning: {w}");
        }
    }
    for w in config.warnings() {
        eprintln!("warning: {w}");
    }
    write_json(&out.join(RUN), &info)?;
    write_references(&out, &examples.references)?;

    let (mut hyps, had_partial) = read_complete_lines(&hyps_path)?;
    if !hyps_path.exists() {
        // An empty shard still leaves its (empty) hyps.txt for merge.
        File::create(&hyps_path)
            .with_context(|| format!("cannot create {}", hyps_path.display()))?;
    }
    if had_partial {
        eprintln!(
            "eval: {}: dropped an unfinished last line (interrupted write); it is generated again",
            hyps_path.display()
        );
    }
    let n = examples.len();
    if hyps.len() > n {
        bail!(
            "{}: {} lines but this run has {n} examples (damaged file; use --restart)",
            hyps_path.display(),
            hyps.len()
        );
    }
    if !hyps.is_empty() && hyps.len() < n {
        eprintln!(
            "eval: resuming {}: {} of {n} examples already done",
            out.display(),
            hyps.len()
        );
    }

    if hyps.len() < n {
        let model = ModelArgs {
            model: dir.display().to_string(),
            ..a.model.clone()
        };
        let session = Session::open(
            &model,
            &gen,
            prefix.as_deref(),
            defaults.src_lang.as_deref(),
            defaults.tgt_lang.as_deref(),
        )?;
        let pegasus = model_type == "pegasus" && ds.task == Task::Summarization;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&hyps_path)
            .with_context(|| format!("cannot open {}", hyps_path.display()))?;
        let label = format!("{} {}", model_name(&a.model.model), ds.name);
        let mut progress = ProgressLine::new(&label, hyps.len(), n);
        let chunk = 4 * a.batch_size;
        let mut session_tokens = 0u64;
        let run_start = Instant::now();
        let mut result = Ok(());
        while hyps.len() < n {
            let start = hyps.len();
            let end = (start + chunk).min(n);
            let step = generate_chunk(
                &session,
                &examples.sources[start..end],
                range.start + start,
                a.batch_size,
                pegasus,
                &mut file,
                &hyps_path,
            );
            let (lines, tokens, cut) = match step {
                Ok(x) => x,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            hyps.extend(lines);
            session_tokens += tokens;
            info.progress.generated_examples += end - start;
            info.progress.generated_tokens += tokens;
            info.progress.truncated_sources += cut;
            progress.update(hyps.len(), session_tokens);
            // Totals for scores.json; the hypotheses are already safe on disk.
            let mut saved = info.clone();
            saved.progress.generation_seconds += run_start.elapsed().as_secs_f64();
            write_json(&out.join(RUN), &saved)?;
        }
        progress.finish();
        info.progress.generation_seconds += run_start.elapsed().as_secs_f64();
        write_json(&out.join(RUN), &info)?;
        result?;
        if info.progress.truncated_sources > 0 {
            eprintln!(
                "warning: {} sources were longer than the encoder accepts and were truncated (as transformers does with truncation=True)",
                info.progress.truncated_sources
            );
        }
    }

    let lines = score_and_report(
        &out,
        &info,
        &hyps,
        &examples.references,
        a.tokenize.as_deref(),
    )?;
    for l in lines {
        println!("{l}");
    }
    eprintln!("eval: wrote {}/{{{HYPS},{SCORES},{REPORT}}}", out.display());
    Ok(())
}

/// Generates one chunk and appends it to hyps.txt (flushed and synced):
/// `(lines, generated tokens, truncated sources)`.
fn generate_chunk(
    session: &Session,
    sources: &[String],
    first: usize,
    batch_size: usize,
    pegasus: bool,
    file: &mut File,
    path: &Path,
) -> Result<(Vec<String>, u64, usize)> {
    let (lines, tokens, cut) = generate_lines(session, sources, first, batch_size, pegasus)?;
    let mut text = String::new();
    for line in &lines {
        text.push_str(line);
        text.push('\n');
    }
    file.write_all(text.as_bytes())
        .and_then(|_| file.flush())
        .and_then(|_| file.sync_data())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok((lines, tokens, cut))
}

/// The best hypothesis of each source as one line (`sources[i]` is example
/// `first + i`): `(lines, generated tokens, truncated sources)`.
pub(crate) fn generate_lines(
    session: &Session,
    sources: &[String],
    first: usize,
    batch_size: usize,
    pegasus: bool,
) -> Result<(Vec<String>, u64, usize)> {
    let (encoded, cut) = encode_quiet(session, sources, first)?;
    let generated = session.generate(&encoded, batch_size, false)?;
    let mut lines = Vec::with_capacity(sources.len());
    let mut tokens = 0u64;
    for hs in &generated {
        let line = match hs.first() {
            Some(h) => {
                tokens += h.ids.len() as u64;
                one_line(&session.decode(&h.ids)?, pegasus)
            }
            None => String::new(),
        };
        lines.push(line);
    }
    Ok((lines, tokens, cut))
}

// ---------------------------------------------------------------------------------
// encdec eval merge

fn merge(m: MergeArgs) -> Result<()> {
    check_tokenize(m.tokenize.as_deref())?;
    struct Part {
        dir: PathBuf,
        info: RunInfo,
        shard: ShardInfo,
    }
    let mut parts: Vec<Part> = Vec::new();
    for dir in &m.dirs {
        if !dir.join(RUN).is_file() {
            bail!(
                "{}: no {RUN}: not the output directory of an `encdec eval --shard I/N` run",
                dir.display()
            );
        }
        let info = read_run_info(dir)?;
        let Some(shard) = info.shard else {
            bail!(
                "{}: not a shard (it was run without --shard); merge takes the N directories of one --shard I/N run",
                dir.display()
            );
        };
        parts.push(Part {
            dir: dir.clone(),
            info,
            shard,
        });
    }
    let (first_dir, first_shard) = (parts[0].dir.clone(), parts[0].shard);
    let first_info = parts[0].info.clone();
    let base = identity(&first_info, true);
    for p in &parts[1..] {
        let mut diffs = Vec::new();
        differences(&base, &identity(&p.info, true), "", &mut diffs);
        if !diffs.is_empty() {
            bail!(
                "{} and {} are shards of different runs ({}): refusing to merge",
                first_dir.display(),
                p.dir.display(),
                diffs.join("; ")
            );
        }
        if p.shard.count != first_shard.count {
            bail!(
                "{} is shard {}/{} but {} is shard {}/{}: different shard counts",
                first_dir.display(),
                first_shard.index,
                first_shard.count,
                p.dir.display(),
                p.shard.index,
                p.shard.count
            );
        }
    }
    let count = first_shard.count;
    parts.sort_by_key(|p| p.shard.index);
    for w in parts.windows(2) {
        if w[0].shard.index == w[1].shard.index {
            bail!(
                "shard {}/{count} given twice: {} and {}",
                w[0].shard.index,
                w[0].dir.display(),
                w[1].dir.display()
            );
        }
    }
    let have: Vec<usize> = parts.iter().map(|p| p.shard.index).collect();
    let missing: Vec<String> = (0..count)
        .filter(|i| !have.contains(i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing shard{} {} of {count} (have {}): run `encdec eval ... --shard I/{count}` for {} first",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", "),
            have.iter().map(|i| format!("{i}/{count}")).collect::<Vec<_>>().join(", "),
            if missing.len() > 1 { "them" } else { "it" }
        );
    }
    let total = first_info.data.examples;
    let mut hyps = Vec::with_capacity(total);
    let mut refs = Vec::with_capacity(total);
    let mut progress = Progress::default();
    for p in &parts {
        let want = shard_range_of(total, p.shard)?;
        if p.info.examples != [want.start, want.end] {
            bail!(
                "{}: run.json says examples {}..{} but shard {}/{count} of {total} is {}..{}",
                p.dir.display(),
                p.info.examples[0],
                p.info.examples[1],
                p.shard.index,
                want.start,
                want.end
            );
        }
        let (lines, partial) = read_lines_readonly(&p.dir.join(HYPS))?;
        let n = want.len();
        if lines.len() != n || partial {
            bail!(
                "{}: {HYPS} has {} of {n} hypotheses: shard {}/{count} is unfinished (re-run its \
                 `encdec eval --shard {}/{count}` to complete it)",
                p.dir.display(),
                lines.len(),
                p.shard.index,
                p.shard.index
            );
        }
        hyps.extend(lines);
        refs.extend(read_references(&p.dir, n)?);
        progress.generated_examples += p.info.progress.generated_examples;
        progress.generated_tokens += p.info.progress.generated_tokens;
        progress.generation_seconds += p.info.progress.generation_seconds;
        progress.truncated_sources += p.info.progress.truncated_sources;
    }

    let mut info = first_info;
    info.shard = None;
    info.examples = [0, total];
    info.progress = progress;
    let out = m
        .out
        .clone()
        .unwrap_or_else(|| default_out(&info.model, &info.dataset, info.limit, None));
    for p in &parts {
        if same_dir(&p.dir, &out) {
            bail!(
                "--out {} is one of the shard directories; give another directory",
                out.display()
            );
        }
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    if out.join(RUN).exists() {
        let old = read_run_info(&out)?;
        let mut diffs = Vec::new();
        differences(
            &identity(&old, false),
            &identity(&info, false),
            "",
            &mut diffs,
        );
        if !diffs.is_empty() {
            bail!(
                "{} holds another run ({}); give another --out",
                out.display(),
                diffs.join("; ")
            );
        }
    }
    let mut text = String::new();
    for h in &hyps {
        text.push_str(h);
        text.push('\n');
    }
    write_atomically(&out.join(HYPS), &text)?;
    write_references(&out, &refs)?;
    write_json(&out.join(RUN), &info)?;
    let lines = score_and_report(&out, &info, &hyps, &refs, m.tokenize.as_deref())?;
    for l in lines {
        println!("{l}");
    }
    eprintln!(
        "eval merge: joined {count} shards into {}/{{{HYPS},{SCORES},{REPORT}}}",
        out.display()
    );
    Ok(())
}

fn shard_range_of(total: usize, s: ShardInfo) -> Result<std::ops::Range<usize>> {
    Ok(encdec_eval::datasets::shard_range(total, s.index, s.count)?)
}

/// Complete lines of a file without modifying it: `(lines, has a partial last line)`.
fn read_lines_readonly(path: &Path) -> Result<(Vec<String>, bool)> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut lines = Vec::new();
    if complete > 0 {
        for (i, raw) in bytes[..complete - 1].split(|&b| b == b'\n').enumerate() {
            lines.push(
                std::str::from_utf8(raw)
                    .map_err(|_| anyhow!("{}: line {} is not valid UTF-8", path.display(), i + 1))?
                    .to_string(),
            );
        }
    }
    Ok((lines, complete < bytes.len()))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names() {
        assert_eq!(model_name("facebook/bart-large-cnn"), "bart-large-cnn");
        assert_eq!(model_name("tests/fixtures/t5/"), "t5");
        assert_eq!(
            model_name(
                "/h/.cache/huggingface/hub/models--google--pegasus-cnn_dailymail/snapshots/abc"
            ),
            "pegasus-cnn_dailymail"
        );
    }

    #[test]
    fn published_rows_match_by_repo_name() {
        assert!(!published_rows("facebook/bart-large-cnn", "cnndm").is_empty());
        assert!(!published_rows("/models/bart-large-cnn", "cnndm").is_empty());
        assert!(published_rows("facebook/bart-large-cnn", "wmt14-en-de").is_empty());
    }

    #[test]
    fn differences_name_the_fields() {
        let mut d = Vec::new();
        differences(
            &json!({"a": 1, "g": {"num_beams": 4}}),
            &json!({"a": 1, "g": {"num_beams": 1}}),
            "",
            &mut d,
        );
        assert_eq!(d, vec!["g.num_beams: 4 vs 1".to_string()]);
    }

    #[test]
    fn partial_last_line_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.txt");
        std::fs::write(&p, "a\nb\nhalf").unwrap();
        let (lines, partial) = read_complete_lines(&p).unwrap();
        assert_eq!(lines, vec!["a", "b"]);
        assert!(partial);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a\nb\n");
    }
}
