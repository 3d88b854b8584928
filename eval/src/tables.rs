//! Published benchmark tables (`eval/tables/*.toml`) and the report that puts measured
//! scores next to them (`encdec table NAME`).
//!
//! A table has rows of two kinds:
//! - [`ModelRow`]: a checkpoint, a registered data set and generation settings; it is
//!   measured by generating over the data set, which this module leaves to a
//!   [`ModelRunner`] the caller passes in (the CLI runs `encdec eval`'s pipeline).
//!   Without a runner, or when the checkpoint is not available, the row is reported as
//!   `not run: ...` with the reason. A row the runner measured on fewer examples than
//!   the data set has (`encdec table --limit N`) is reported as `partial: ...`, with
//!   no difference to the published number.
//! - [`OutputsRow`]: existing hypothesis and reference files (relative to the data
//!   directory), scored directly.
//!
//! Scoring goes through the [`Scorer`] trait so that this module does not depend on the
//! metric modules' APIs. No row ever gets a number it did not measure: a row that cannot
//! run says why, with no measured value.
//!
//! The table files are embedded in the library with `include_str!`, so `encdec table`
//! works from any working directory.
//!
//! File format (TOML):
//! ```toml
//! name = "cnndm-rouge"
//! title = "..."
//! notes = "..."          # shown under the table
//! tolerance = 0.005      # |measured - published| <= tolerance counts as "ok" (default 0.005)
//!
//! [[rows]]
//! kind = "model"         # or "outputs"
//! system = "BART-large (bart-large-cnn)"
//! checkpoint = "facebook/bart-large-cnn"   # model rows; absent = no checkpoint identified
//! dataset = "cnndm"                        # a datasets::Dataset name (required for model rows)
//! metrics = ["rouge1", "rouge2", "rougeLsum"]   # bleu, chrf, rouge1, rouge2, rougeL, rougeLsum
//! published = { rouge1 = 44.16, rouge2 = 21.28, rougeLsum = 40.90 }   # or "none" (then `note` says why)
//! source = "Lewis et al. 2020, Table 3"
//! verified = true        # false: the published number's source is still to be verified
//! note = "..."
//! tokenize = "13a"       # BLEU tokenizer: 13a, intl, zh, char, none
//! stem = true            # ROUGE: Porter stemming (default true)
//! split_sentences = false  # ROUGE-Lsum: split into sentences first (default false)
//! tolerance = 0.05       # per-row override
//! differs_because = "..."  # why measured may legitimately differ from published
//! [rows.generation]      # model rows: num_beams, length_penalty, max_length, min_length,
//! num_beams = 4          # max_new_tokens, min_new_tokens, no_repeat_ngram_size,
//!                        # early_stopping, prefix, src_lang, tgt_lang
//! # outputs rows instead: hyp = "path", ref = "path" (relative to the data directory),
//! # and optionally reference_impl = { metric = value } + reference_impl_source: what the
//! # reference implementation (sacreBLEU / rouge-score) gives on the same files.
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::datasets::{self, Dataset, Examples};
use crate::error::{EvalError, Result};

/// The embedded table files: (name, TOML text).
const TABLES: &[(&str, &str)] = &[
    ("cnndm-rouge", include_str!("../tables/cnndm-rouge.toml")),
    ("cnndm-simcls", include_str!("../tables/cnndm-simcls.toml")),
    ("wmt-bleu", include_str!("../tables/wmt-bleu.toml")),
    (
        "wmt22-systems",
        include_str!("../tables/wmt22-systems.toml"),
    ),
];

/// Valid values of a row's `tokenize` (sacreBLEU's BLEU tokenizers).
pub const TOKENIZERS: &[&str] = &["13a", "intl", "zh", "char", "none"];

const DEFAULT_TOLERANCE: f64 = 0.005;

/// Names of the embedded tables, sorted.
pub fn list_tables() -> Vec<&'static str> {
    let mut names: Vec<&str> = TABLES.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    names
}

/// The raw TOML of an embedded table.
pub fn table_source(name: &str) -> Result<&'static str> {
    TABLES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .ok_or_else(|| EvalError::Unknown {
            what: "table",
            name: name.to_string(),
            valid: list_tables().join(", "),
        })
}

/// Parses and validates an embedded table; an unknown name is an error listing the
/// valid ones.
pub fn load_table(name: &str) -> Result<Table> {
    let text = table_source(name)?;
    let table =
        parse_table(text).map_err(|e| EvalError::Invalid(format!("table '{name}': {e}")))?;
    if table.name != name {
        return Err(EvalError::Invalid(format!(
            "table file '{name}' declares name = '{}'",
            table.name
        )));
    }
    Ok(table)
}

/// Parses and validates a table file from disk (for tables that are not embedded,
/// `encdec table ./my-table.toml`). Errors name the file: a missing or unreadable file,
/// TOML syntax or a wrong field with its line and column, an unknown metric or data set
/// with the valid names.
pub fn load_table_file(path: impl AsRef<Path>) -> Result<Table> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| {
        let source = match source.kind() {
            std::io::ErrorKind::NotFound => std::io::Error::new(
                source.kind(),
                format!(
                    "no such table file (built-in tables: {})",
                    list_tables().join(", ")
                ),
            ),
            _ => source,
        };
        EvalError::Io {
            path: path.to_path_buf(),
            source,
        }
    })?;
    parse_table(&text).map_err(|e| EvalError::Invalid(format!("{}: {e}", path.display())))
}

/// Parses and validates table TOML. A TOML error is one line: line and column, then
/// the parser's message.
pub fn parse_table(text: &str) -> Result<Table> {
    let table: Table = toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
                format!(" at line {line}, column {column}")
            })
            .unwrap_or_default();
        let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
        EvalError::Invalid(format!("invalid table TOML{at}: {message}"))
    })?;
    table.validate()?;
    Ok(table)
}

/// A metric a table row reports. Values are in percent (0-100), F-measure for ROUGE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Metric {
    #[serde(rename = "bleu")]
    Bleu,
    #[serde(rename = "chrf")]
    Chrf,
    #[serde(rename = "rouge1")]
    Rouge1,
    #[serde(rename = "rouge2")]
    Rouge2,
    #[serde(rename = "rougeL")]
    RougeL,
    #[serde(rename = "rougeLsum")]
    RougeLsum,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::Bleu,
        Metric::Chrf,
        Metric::Rouge1,
        Metric::Rouge2,
        Metric::RougeL,
        Metric::RougeLsum,
    ];

    /// The name used in table files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Bleu => "bleu",
            Metric::Chrf => "chrf",
            Metric::Rouge1 => "rouge1",
            Metric::Rouge2 => "rouge2",
            Metric::RougeL => "rougeL",
            Metric::RougeLsum => "rougeLsum",
        }
    }

    pub fn from_name(name: &str) -> Result<Metric> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| EvalError::Unknown {
                what: "metric",
                name: name.to_string(),
                valid: Metric::ALL.map(Metric::name).join(", "),
            })
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Published scores of a row: metric name -> value, or the string `"none"` when nothing
/// trustworthy is published for this checkpoint and data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Published {
    Scores(BTreeMap<String, f64>),
    None(String),
}

impl Published {
    /// The published value of `metric`, if any.
    pub fn get(&self, metric: Metric) -> Option<f64> {
        match self {
            Published::Scores(map) => map.get(metric.name()).copied(),
            Published::None(_) => None,
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Published::None(_))
    }
}

/// Generation settings of a model row (what `encdec generate` flags of the same names
/// set). Absent fields: the checkpoint's generation_config.json / config.json decide.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generation {
    pub num_beams: Option<u32>,
    pub length_penalty: Option<f64>,
    pub max_length: Option<u32>,
    pub min_length: Option<u32>,
    pub max_new_tokens: Option<u32>,
    pub min_new_tokens: Option<u32>,
    pub no_repeat_ngram_size: Option<u32>,
    pub early_stopping: Option<bool>,
    /// Text prepended to every source (T5's `summarize: `, Marian's `>>cmn_Hans<< `).
    pub prefix: Option<String>,
    /// Source / target language codes (mBART-50, NLLB-200, M2M-100).
    pub src_lang: Option<String>,
    pub tgt_lang: Option<String>,
}

impl Generation {
    /// The settings as `encdec generate` / `encdec eval` flags, in a fixed order.
    pub fn to_flags(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut push = |flag: &str, value: Option<String>| {
            if let Some(v) = value {
                out.push(flag.to_string());
                out.push(v);
            }
        };
        push("--prefix", self.prefix.clone());
        push("--src-lang", self.src_lang.clone());
        push("--tgt-lang", self.tgt_lang.clone());
        push("--num-beams", self.num_beams.map(|v| v.to_string()));
        push(
            "--length-penalty",
            self.length_penalty.map(|v| v.to_string()),
        );
        push("--max-length", self.max_length.map(|v| v.to_string()));
        push("--min-length", self.min_length.map(|v| v.to_string()));
        push(
            "--max-new-tokens",
            self.max_new_tokens.map(|v| v.to_string()),
        );
        push(
            "--min-new-tokens",
            self.min_new_tokens.map(|v| v.to_string()),
        );
        push(
            "--no-repeat-ngram-size",
            self.no_repeat_ngram_size.map(|v| v.to_string()),
        );
        if self.early_stopping == Some(true) {
            out.push("--early-stopping".to_string());
        }
        out
    }

    /// A short human-readable summary ("beams 4, lp 2, len 56..142, no-repeat 3").
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.prefix {
            parts.push(format!("prefix {p:?}"));
        }
        if let (Some(s), Some(t)) = (&self.src_lang, &self.tgt_lang) {
            parts.push(format!("{s}->{t}"));
        }
        if let Some(b) = self.num_beams {
            parts.push(format!("beams {b}"));
        }
        if let Some(lp) = self.length_penalty {
            parts.push(format!("length penalty {lp}"));
        }
        match (self.min_length, self.max_length) {
            (Some(a), Some(b)) => parts.push(format!("length {a}..{b}")),
            (None, Some(b)) => parts.push(format!("max length {b}")),
            (Some(a), None) => parts.push(format!("min length {a}")),
            (None, None) => {}
        }
        if let Some(n) = self.no_repeat_ngram_size {
            parts.push(format!("no-repeat {n}-grams"));
        }
        if parts.is_empty() {
            "checkpoint defaults".to_string()
        } else {
            parts.join(", ")
        }
    }
}

fn yes() -> bool {
    true
}

/// A row measured by generating with a checkpoint over a registered data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRow {
    pub system: String,
    /// Hugging Face hub id (or local directory); `None` when no checkpoint is identified.
    pub checkpoint: Option<String>,
    /// A [`Dataset`] name.
    pub dataset: String,
    #[serde(default)]
    pub generation: Generation,
    pub metrics: Vec<Metric>,
    pub published: Published,
    pub source: String,
    #[serde(default = "yes")]
    pub verified: bool,
    #[serde(default)]
    pub note: String,
    /// BLEU tokenizer (default 13a).
    pub tokenize: Option<String>,
    #[serde(default = "yes")]
    pub stem: bool,
    #[serde(default)]
    pub split_sentences: bool,
    pub tolerance: Option<f64>,
    pub differs_because: Option<String>,
}

/// A row measured by scoring existing hypothesis files against references.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputsRow {
    pub system: String,
    /// Descriptive data set name (need not be registered).
    pub dataset: Option<String>,
    /// Language pair, e.g. "en-de".
    pub pair: Option<String>,
    /// Hypothesis file, relative to the data directory (or absolute).
    pub hyp: String,
    /// Reference file, relative to the data directory (or absolute).
    #[serde(rename = "ref")]
    pub reference: String,
    pub metrics: Vec<Metric>,
    pub published: Published,
    pub source: String,
    #[serde(default = "yes")]
    pub verified: bool,
    #[serde(default)]
    pub note: String,
    pub tokenize: Option<String>,
    #[serde(default = "yes")]
    pub stem: bool,
    #[serde(default)]
    pub split_sentences: bool,
    pub tolerance: Option<f64>,
    pub differs_because: Option<String>,
    /// What the reference implementation (sacreBLEU / rouge-score) gives on these files.
    pub reference_impl: Option<BTreeMap<String, f64>>,
    pub reference_impl_source: Option<String>,
}

impl OutputsRow {
    /// The hypothesis and reference files, each resolved against the data directories
    /// (see [`datasets::data_roots`]); an error names every path tried.
    pub fn resolve(&self, data_dir: Option<&Path>) -> Result<(PathBuf, PathBuf)> {
        Ok((
            resolve_data_file(&self.hyp, data_dir)?,
            resolve_data_file(&self.reference, data_dir)?,
        ))
    }
}

/// One table row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Row {
    Model(ModelRow),
    Outputs(OutputsRow),
}

/// Fields both row kinds have.
struct Common<'a> {
    system: &'a str,
    dataset: String,
    metrics: &'a [Metric],
    published: &'a Published,
    source: &'a str,
    verified: bool,
    note: &'a str,
    tokenize: &'a str,
    stem: bool,
    split_sentences: bool,
    tolerance: Option<f64>,
    differs_because: Option<&'a str>,
    reference_impl: Option<&'a BTreeMap<String, f64>>,
    reference_impl_source: Option<&'a str>,
}

impl Row {
    pub fn system(&self) -> &str {
        match self {
            Row::Model(r) => &r.system,
            Row::Outputs(r) => &r.system,
        }
    }

    pub fn metrics(&self) -> &[Metric] {
        match self {
            Row::Model(r) => &r.metrics,
            Row::Outputs(r) => &r.metrics,
        }
    }

    pub fn published(&self) -> &Published {
        match self {
            Row::Model(r) => &r.published,
            Row::Outputs(r) => &r.published,
        }
    }

    fn common(&self) -> Common<'_> {
        match self {
            Row::Model(r) => Common {
                system: &r.system,
                dataset: r.dataset.clone(),
                metrics: &r.metrics,
                published: &r.published,
                source: &r.source,
                verified: r.verified,
                note: &r.note,
                tokenize: r.tokenize.as_deref().unwrap_or("13a"),
                stem: r.stem,
                split_sentences: r.split_sentences,
                tolerance: r.tolerance,
                differs_because: r.differs_because.as_deref(),
                reference_impl: None,
                reference_impl_source: None,
            },
            Row::Outputs(r) => Common {
                system: &r.system,
                dataset: r
                    .dataset
                    .clone()
                    .or_else(|| r.pair.clone())
                    .unwrap_or_default(),
                metrics: &r.metrics,
                published: &r.published,
                source: &r.source,
                verified: r.verified,
                note: &r.note,
                tokenize: r.tokenize.as_deref().unwrap_or("13a"),
                stem: r.stem,
                split_sentences: r.split_sentences,
                tolerance: r.tolerance,
                differs_because: r.differs_because.as_deref(),
                reference_impl: r.reference_impl.as_ref(),
                reference_impl_source: r.reference_impl_source.as_deref(),
            },
        }
    }
}

/// A published table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub name: String,
    pub title: String,
    #[serde(default)]
    pub notes: String,
    /// Default |measured - published| that still counts as "ok".
    pub tolerance: Option<f64>,
    pub rows: Vec<Row>,
}

fn check_scores(
    what: &str,
    at: &str,
    map: &BTreeMap<String, f64>,
    metrics: &[Metric],
) -> Result<()> {
    for (key, value) in map {
        let metric =
            Metric::from_name(key).map_err(|e| EvalError::Invalid(format!("{at}: {what}: {e}")))?;
        if !metrics.contains(&metric) {
            return Err(EvalError::Invalid(format!(
                "{at}: {what} has '{key}', which is not in metrics"
            )));
        }
        if !value.is_finite() || *value < 0.0 || *value > 100.0 {
            return Err(EvalError::Invalid(format!(
                "{at}: {what}.{key} = {value} is not a score in 0..100"
            )));
        }
    }
    Ok(())
}

impl Table {
    /// Checks what serde cannot: metric names, published = "none" only with a note,
    /// known tokenizers and data set names, sensible tolerances.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(EvalError::Invalid("table has an empty name".into()));
        }
        if self.rows.is_empty() {
            return Err(EvalError::Invalid(format!(
                "table '{}' has no rows",
                self.name
            )));
        }
        if let Some(t) = self.tolerance {
            if !(t.is_finite() && t > 0.0) {
                return Err(EvalError::Invalid(format!(
                    "table '{}': tolerance must be > 0",
                    self.name
                )));
            }
        }
        for (i, row) in self.rows.iter().enumerate() {
            let c = row.common();
            let at = format!("row {} ({})", i + 1, c.system);
            if c.system.trim().is_empty() {
                return Err(EvalError::Invalid(format!("{at}: empty system name")));
            }
            if c.metrics.is_empty() {
                return Err(EvalError::Invalid(format!("{at}: no metrics")));
            }
            if c.source.trim().is_empty() {
                return Err(EvalError::Invalid(format!("{at}: empty source")));
            }
            match c.published {
                Published::Scores(map) => {
                    if map.is_empty() {
                        return Err(EvalError::Invalid(format!(
                            "{at}: published is empty (write published = \"none\" and a note)"
                        )));
                    }
                    check_scores("published", &at, map, c.metrics)?;
                }
                Published::None(s) => {
                    if s != "none" {
                        return Err(EvalError::Invalid(format!(
                            "{at}: published must be a table of scores or \"none\", not {s:?}"
                        )));
                    }
                    if c.note.trim().is_empty() {
                        return Err(EvalError::Invalid(format!(
                            "{at}: published = \"none\" needs a note saying what is published instead"
                        )));
                    }
                }
            }
            if let Some(map) = c.reference_impl {
                check_scores("reference_impl", &at, map, c.metrics)?;
            }
            if !TOKENIZERS.contains(&c.tokenize) {
                return Err(EvalError::Unknown {
                    what: "tokenizer",
                    name: c.tokenize.to_string(),
                    valid: TOKENIZERS.join(", "),
                });
            }
            if let Some(t) = c.tolerance {
                if !(t.is_finite() && t > 0.0) {
                    return Err(EvalError::Invalid(format!("{at}: tolerance must be > 0")));
                }
            }
            match row {
                Row::Model(r) => {
                    Dataset::get(&r.dataset)
                        .map_err(|e| EvalError::Invalid(format!("{at}: {e}")))?;
                    if r.checkpoint.is_none() && r.note.trim().is_empty() {
                        return Err(EvalError::Invalid(format!(
                            "{at}: a row without a checkpoint needs a note saying why"
                        )));
                    }
                }
                Row::Outputs(r) => {
                    if r.hyp.trim().is_empty() || r.reference.trim().is_empty() {
                        return Err(EvalError::Invalid(format!(
                            "{at}: hyp and ref must name files"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs or collects every row and builds the report. Never fails as a whole: a row
    /// that cannot run is reported as `not run: <why>`, with no measured value.
    pub fn report(&self, scorer: &dyn Scorer, options: &ReportOptions<'_>) -> Report {
        let mut rows = Vec::new();
        for row in &self.rows {
            rows.extend(self.report_row(row, scorer, options));
        }
        Report {
            table: self.name.clone(),
            title: self.title.clone(),
            notes: self.notes.trim().to_string(),
            rows,
        }
    }

    fn report_row(
        &self,
        row: &Row,
        scorer: &dyn Scorer,
        options: &ReportOptions<'_>,
    ) -> Vec<ReportRow> {
        let c = row.common();
        let measured: std::result::Result<Scores, String> = match row {
            Row::Outputs(r) => score_outputs(r, &c, scorer, options.data_dir),
            Row::Model(r) => run_model(&self.name, r, &c, scorer, options),
        };
        let tolerance = c.tolerance.or(self.tolerance).unwrap_or(DEFAULT_TOLERANCE);
        c.metrics
            .iter()
            .map(|&metric| {
                let published = c.published.get(metric);
                let (value, status) = match &measured {
                    Err(why) => (None, format!("not run: {why}")),
                    Ok(scores) => match scores.values.get(&metric) {
                        None => (None, "not run: the scorer returned no value".to_string()),
                        Some(Err(why)) => (None, format!("not run: {why}")),
                        Some(Ok(m)) => match scores.partial {
                            Some((n, total)) => (
                                Some(*m),
                                format!(
                                    "partial: measured on the first {n} of {total} examples \
                                     (--limit {n}), not comparable with the published number"
                                ),
                            ),
                            None => (Some(*m), compare(&c, metric, published, *m, tolerance)),
                        },
                    },
                };
                let mut status = status;
                if !c.verified {
                    status.push_str(&format!(" [published number unverified: {}]", c.source));
                }
                let partial = matches!(&measured, Ok(s) if s.partial.is_some());
                ReportRow {
                    system: c.system.to_string(),
                    dataset: c.dataset.clone(),
                    metric,
                    published,
                    measured: value,
                    diff: match (value, published) {
                        (Some(m), Some(p)) if !partial => Some(m - p),
                        _ => None,
                    },
                    examples: value.and(measured.as_ref().ok().map(|s| s.examples)),
                    status,
                    source: c.source.to_string(),
                }
            })
            .collect()
    }
}

fn compare(
    c: &Common<'_>,
    metric: Metric,
    published: Option<f64>,
    measured: f64,
    tolerance: f64,
) -> String {
    let Some(p) = published else {
        let why = if c.note.is_empty() {
            "none published"
        } else {
            c.note
        };
        return format!("measured only: no published number ({why})");
    };
    // A hair of slack for binary floating point (e.g. 40.90 parsed as 40.8999...).
    if (measured - p).abs() <= tolerance + 1e-9 {
        return "ok".to_string();
    }
    let mut why = c
        .differs_because
        .map(str::to_string)
        .unwrap_or_else(|| format!("by {:+.2} (tolerance {tolerance})", measured - p));
    if let Some(r) = c.reference_impl.and_then(|m| m.get(metric.name())) {
        let src = c
            .reference_impl_source
            .unwrap_or("the reference implementation");
        if (measured - r).abs() <= tolerance + 1e-9 {
            why.push_str(&format!("; matches {src}: {r:.2}"));
        } else {
            why.push_str(&format!(
                "; ALSO differs from {src}: {r:.2} (by {:+.2})",
                measured - r
            ));
        }
    }
    format!("differs: {why}")
}

fn read_pair(
    hyp: &Path,
    reference: &Path,
) -> std::result::Result<(Vec<String>, Vec<String>), String> {
    let h = datasets::read_text_lines(hyp).map_err(|e| e.to_string())?;
    let r = datasets::read_text_lines(reference).map_err(|e| e.to_string())?;
    if h.len() != r.len() {
        return Err(format!(
            "{}: {} lines, but {}: {} lines",
            hyp.display(),
            h.len(),
            reference.display(),
            r.len()
        ));
    }
    Ok((h, r))
}

/// Per metric: the measured value, or why it could not be measured; and the number of
/// examples scored.
struct Scores {
    values: BTreeMap<Metric, std::result::Result<f64, String>>,
    examples: usize,
    /// `(scored, in the data set)` when a model row was measured on fewer examples
    /// than its data set has (`--limit`).
    partial: Option<(usize, usize)>,
}

fn score_outputs(
    r: &OutputsRow,
    c: &Common<'_>,
    scorer: &dyn Scorer,
    data_dir: Option<&Path>,
) -> std::result::Result<Scores, String> {
    let (hyp, reference) = r.resolve(data_dir).map_err(|e| format!("no data: {e}"))?;
    let (h, rf) = read_pair(&hyp, &reference)?;
    score_all(c, scorer, &h, &rf)
}

fn run_model(
    table: &str,
    r: &ModelRow,
    c: &Common<'_>,
    scorer: &dyn Scorer,
    options: &ReportOptions<'_>,
) -> std::result::Result<Scores, String> {
    let Some(checkpoint) = r.checkpoint.as_deref() else {
        return Err(format!("no checkpoint: {}", r.note));
    };
    let Some(runner) = options.runner else {
        let what = format!(
            "generation over {} (`encdec eval --model {checkpoint} --dataset {}`)",
            r.dataset, r.dataset
        );
        return Err(match find_local_checkpoint(checkpoint) {
            Some(dir) => format!("needs {what}; checkpoint found at {}", dir.display()),
            None => format!(
                "needs checkpoint {checkpoint} (not in the local Hugging Face cache) and {what}"
            ),
        });
    };
    if let Some(why) = runner.precheck(table, r) {
        return Err(why);
    }
    let dataset = Dataset::get(&r.dataset).map_err(|e| e.to_string())?;
    let examples = runner
        .examples(dataset, options.data_dir)
        .map_err(|e| format!("no data: {e}"))?;
    if examples.is_empty() {
        return Err(format!(
            "no data: the runner gave no examples of {}",
            r.dataset
        ));
    }
    let hyps = match runner.run(table, r, &examples).map_err(|e| e.to_string())? {
        RunOutcome::Hypotheses(h) => h,
        RunOutcome::NotRun(why) => return Err(why),
    };
    if hyps.len() != examples.len() {
        return Err(format!(
            "the runner gave {} hypotheses for {} examples",
            hyps.len(),
            examples.len()
        ));
    }
    let n = examples.len();
    let mut scores = score_all(c, scorer, &hyps, &examples.references)?;
    if n < dataset.lines && !dataset.alt_lines.contains(&n) {
        scores.partial = Some((n, dataset.lines));
    }
    Ok(scores)
}

fn score_all(
    c: &Common<'_>,
    scorer: &dyn Scorer,
    hyp: &[String],
    refs: &[String],
) -> std::result::Result<Scores, String> {
    let mut out = BTreeMap::new();
    let checked = |name: &str, v: Result<f64>| -> std::result::Result<f64, String> {
        match v {
            Ok(x) if x.is_finite() => Ok(x),
            Ok(x) => Err(format!("{name} is not a finite number ({x})")),
            Err(e) => Err(format!("{name} failed: {e}")),
        }
    };
    if c.metrics.contains(&Metric::Bleu) {
        out.insert(
            Metric::Bleu,
            checked("BLEU", scorer.bleu(hyp, refs, c.tokenize)),
        );
    }
    if c.metrics.contains(&Metric::Chrf) {
        out.insert(Metric::Chrf, checked("chrF", scorer.chrf(hyp, refs)));
    }
    // One ROUGE call per ROUGE-L flavour asked for (rouge1/rouge2 come with the first);
    // rows with only rouge1/rouge2 make one sentence-level call.
    let has = |m: Metric| c.metrics.contains(&m);
    let mut passes: Vec<(Metric, bool)> = Vec::new();
    if has(Metric::RougeL) {
        passes.push((Metric::RougeL, false));
    }
    if has(Metric::RougeLsum) {
        passes.push((Metric::RougeLsum, true));
    }
    if passes.is_empty() && (has(Metric::Rouge1) || has(Metric::Rouge2)) {
        passes.push((Metric::RougeL, false));
    }
    for (i, (l_metric, summary_level)) in passes.into_iter().enumerate() {
        let opts = RougeOptions {
            stem: c.stem,
            split_sentences: c.split_sentences && summary_level,
            summary_level,
        };
        let result = scorer.rouge(hyp, refs, &opts);
        let part = |f: fn(&(f64, f64, f64)) -> f64, name: &str| {
            checked(
                name,
                result
                    .as_ref()
                    .map(f)
                    .map_err(|e| EvalError::Invalid(e.to_string())),
            )
        };
        if i == 0 {
            out.insert(Metric::Rouge1, part(|t| t.0, "ROUGE-1"));
            out.insert(Metric::Rouge2, part(|t| t.1, "ROUGE-2"));
        }
        out.insert(l_metric, part(|t| t.2, l_metric.name()));
    }
    Ok(Scores {
        values: out,
        examples: hyp.len(),
        partial: None,
    })
}

/// Resolves a data file named in a table: absolute paths as they are; relative ones
/// against each data directory in turn (see [`datasets::data_roots`]).
pub fn resolve_data_file(name: &str, data_dir: Option<&Path>) -> Result<PathBuf> {
    let p = Path::new(name);
    if p.is_absolute() {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(EvalError::Io {
                path: p.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
            })
        };
    }
    let roots = datasets::data_roots(data_dir);
    let tried: Vec<PathBuf> = roots.iter().map(|r| r.join(p)).collect();
    if let Some(found) = tried.iter().find(|t| t.is_file()) {
        return Ok(found.clone());
    }
    Err(EvalError::Invalid(format!(
        "file not found: tried {} (pass --data DIR or set {}=DIR)",
        tried
            .iter()
            .map(|t| t.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        datasets::DATA_ENV
    )))
}

/// The local directory of a checkpoint, if it is available without downloading: `id`
/// itself when it is a directory with a config.json, else its snapshot in the Hugging
/// Face hub cache (`$HF_HUB_CACHE`, `$HF_HOME/hub`, `$XDG_CACHE_HOME/huggingface/hub`,
/// `~/.cache/huggingface/hub`), preferring the snapshot `refs/main` points at.
pub fn find_local_checkpoint(id: &str) -> Option<PathBuf> {
    let direct = Path::new(id);
    if direct.join("config.json").is_file() {
        return Some(direct.to_path_buf());
    }
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut caches = Vec::new();
    if let Some(p) = env("HF_HUB_CACHE") {
        caches.push(p);
    }
    if let Some(p) = env("HF_HOME") {
        caches.push(p.join("hub"));
    }
    if let Some(p) = env("XDG_CACHE_HOME") {
        caches.push(p.join("huggingface").join("hub"));
    }
    if let Some(p) = env("HOME") {
        caches.push(p.join(".cache").join("huggingface").join("hub"));
    }
    let folder = format!("models--{}", id.replace('/', "--"));
    for cache in caches {
        let repo = cache.join(&folder);
        let snapshots = repo.join("snapshots");
        if let Ok(main) = std::fs::read_to_string(repo.join("refs").join("main")) {
            let snap = snapshots.join(main.trim());
            if snap.join("config.json").is_file() {
                return Some(snap);
            }
        }
        if let Ok(entries) = std::fs::read_dir(&snapshots) {
            let mut dirs: Vec<PathBuf> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.join("config.json").is_file())
                .collect();
            dirs.sort();
            if let Some(d) = dirs.pop() {
                return Some(d);
            }
        }
    }
    None
}

/// ROUGE settings a row asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RougeOptions {
    /// Porter stemming (rouge-score's `use_stemmer`).
    pub stem: bool,
    /// Split hypotheses and references into sentences (newline-joined) before scoring
    /// (only ever set together with `summary_level`).
    pub split_sentences: bool,
    /// The third value returned is rougeLsum (summary-level) when true, rougeL otherwise.
    pub summary_level: bool,
}

/// Scores for the report. Values in percent (0-100). The CLI implements this over the
/// crate's metric modules; tests use a fake.
pub trait Scorer {
    /// sacreBLEU corpus BLEU with one reference per hypothesis and the given tokenizer
    /// (13a, intl, zh, char, none), default smoothing (exp).
    fn bleu(&self, hyp: &[String], refs: &[String], tokenize: &str) -> Result<f64>;

    /// rouge-score F-measures, mean over examples: (rouge1, rouge2, rougeL) where the
    /// third is rougeLsum when `opts.summary_level`.
    fn rouge(
        &self,
        hyp: &[String],
        refs: &[String],
        opts: &RougeOptions,
    ) -> Result<(f64, f64, f64)>;

    /// sacreBLEU chrF (chrF2: char order 6, word order 0). Rows asking for chrF are
    /// reported as not run when the scorer does not provide it.
    fn chrf(&self, hyp: &[String], refs: &[String]) -> Result<f64> {
        let _ = (hyp, refs);
        Err(EvalError::Invalid(
            "this scorer does not compute chrF".into(),
        ))
    }
}

/// What a [`ModelRunner`] did with a model row.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// One hypothesis per example, in order.
    Hypotheses(Vec<String>),
    /// The row could not run; the reason goes into the report as `not run: <reason>`.
    NotRun(String),
}

/// Generates (or fetches the finished outputs of) a model row over its data set.
pub trait ModelRunner {
    /// `table` is the table name, `examples` the loaded data set (what
    /// [`ModelRunner::examples`] gave).
    fn run(&self, table: &str, row: &ModelRow, examples: &Examples) -> Result<RunOutcome>;

    /// Checked before the row's data is loaded: `Some(reason)` reports the row as
    /// `not run: <reason>` without touching the data (e.g. the checkpoint is not
    /// available locally). The default lets every row run.
    fn precheck(&self, table: &str, row: &ModelRow) -> Option<String> {
        let _ = (table, row);
        None
    }

    /// The examples a model row is measured on. The default reads the data directories
    /// ([`Dataset::load_from`]); a runner may look further (the CLI: the Hugging Face
    /// cache) or take only the first N (`--limit`). A row measured on fewer examples
    /// than the data set has is reported as partial, with no difference to the
    /// published number.
    fn examples(&self, dataset: &Dataset, data_dir: Option<&Path>) -> Result<Examples> {
        dataset.load_from(data_dir)
    }
}

/// Options of [`Table::report`].
#[derive(Default, Clone, Copy)]
pub struct ReportOptions<'a> {
    /// `--data DIR` (else `$ENCDEC_DATA`, then `../shared/data`).
    pub data_dir: Option<&'a Path>,
    /// Runs model rows; without one they are reported as not run.
    pub runner: Option<&'a dyn ModelRunner>,
}

/// One line of a report: one metric of one row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportRow {
    pub system: String,
    pub dataset: String,
    pub metric: Metric,
    pub published: Option<f64>,
    pub measured: Option<f64>,
    /// measured - published (none for a partial measurement).
    pub diff: Option<f64>,
    /// How many examples the measured value is over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub examples: Option<usize>,
    /// "ok", "differs: <why>", "not run: <why>", "measured only: <why>" or
    /// "partial: <how many examples>".
    pub status: String,
    /// Where the published number comes from.
    pub source: String,
}

impl ReportRow {
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }

    pub fn is_not_run(&self) -> bool {
        self.status.starts_with("not run")
    }

    /// Measured on fewer examples than the data set has (`--limit`).
    pub fn is_partial(&self) -> bool {
        self.status.starts_with("partial")
    }
}

/// Measured next to published for every row and metric of a table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub table: String,
    pub title: String,
    pub notes: String,
    pub rows: Vec<ReportRow>,
}

fn num(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into())
}

fn signed(v: Option<f64>) -> String {
    v.map(|x| format!("{x:+.2}")).unwrap_or_else(|| "-".into())
}

impl Report {
    /// (ok, not run, the rest: differing or without a published number).
    pub fn counts(&self) -> (usize, usize, usize) {
        let ok = self.rows.iter().filter(|r| r.is_ok()).count();
        let not_run = self.rows.iter().filter(|r| r.is_not_run()).count();
        (ok, not_run, self.rows.len() - ok - not_run)
    }

    fn cells(&self) -> (Vec<&'static str>, Vec<Vec<String>>) {
        let header = vec![
            "system",
            "data",
            "metric",
            "published",
            "measured",
            "diff",
            "status",
        ];
        let rows = self
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.system.clone(),
                    r.dataset.clone(),
                    r.metric.to_string(),
                    num(r.published),
                    num(r.measured),
                    signed(r.diff),
                    r.status.clone(),
                ]
            })
            .collect();
        (header, rows)
    }

    fn summary_line(&self) -> String {
        let (ok, not_run, _) = self.counts();
        let differs = self
            .rows
            .iter()
            .filter(|r| r.status.starts_with("differs"))
            .count();
        let partial = self.rows.iter().filter(|r| r.is_partial()).count();
        let measured_only = self.rows.len() - ok - not_run - differs - partial;
        let mut line = format!(
            "{} scores: {ok} ok, {differs} differ, {measured_only} measured without a published number, {not_run} not run",
            self.rows.len()
        );
        if partial > 0 {
            let sizes: std::collections::BTreeSet<usize> = self
                .rows
                .iter()
                .filter(|r| r.is_partial())
                .filter_map(|r| r.examples)
                .collect();
            let sizes: Vec<String> = sizes.iter().map(usize::to_string).collect();
            line.push_str(&format!(
                ", {partial} partial (on the first {} examples only: NOT the table's numbers)",
                sizes.join("/")
            ));
        }
        line
    }

    /// A GitHub-flavoured Markdown table with the title, notes and a summary line.
    pub fn to_markdown(&self) -> String {
        let esc = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let (header, rows) = self.cells();
        let mut out = format!("## {} (`{}`)\n\n", esc(&self.title), self.table);
        out.push_str(&format!("| {} |\n", header.join(" | ")));
        let align: Vec<&str> = header
            .iter()
            .map(|h| match *h {
                "published" | "measured" | "diff" => "---:",
                _ => "---",
            })
            .collect();
        out.push_str(&format!("|{}|\n", align.join("|")));
        for r in rows {
            let cells: Vec<String> = r.iter().map(|c| esc(c)).collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        out.push('\n');
        out.push_str(&self.summary_line());
        out.push('\n');
        if !self.notes.is_empty() {
            out.push('\n');
            out.push_str(&self.notes.split_whitespace().collect::<Vec<_>>().join(" "));
            out.push('\n');
        }
        out
    }

    /// An aligned plain-text table for a terminal.
    pub fn to_text(&self) -> String {
        let (header, rows) = self.cells();
        let n = header.len();
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for r in &rows {
            for (i, c) in r.iter().enumerate().take(n - 1) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let numeric = |i: usize| (3..=5).contains(&i);
        let line = |cells: Vec<String>| -> String {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i + 1 == n {
                    s.push_str(c);
                } else {
                    let pad = widths[i].saturating_sub(c.chars().count());
                    if numeric(i) {
                        s.push_str(&" ".repeat(pad));
                        s.push_str(c);
                    } else {
                        s.push_str(c);
                        s.push_str(&" ".repeat(pad));
                    }
                    s.push_str("  ");
                }
            }
            s.trim_end().to_string()
        };
        let mut out = format!("{} ({})\n", self.title, self.table);
        out.push_str(&line(header.iter().map(|h| h.to_string()).collect()));
        out.push('\n');
        let rule: usize = widths.iter().take(n - 1).map(|w| w + 2).sum::<usize>() + 6;
        out.push_str(&"-".repeat(rule));
        out.push('\n');
        for r in rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        out.push_str(&self.summary_line());
        out.push('\n');
        out
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| EvalError::Invalid(format!("report to JSON: {e}")))
    }
}
