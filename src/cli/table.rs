//! `encdec table NAME|FILE.toml`: measured next to published.
//!
//! Outputs rows are scored from their files. Model rows generate with `encdec eval`'s
//! pipeline (task prefix, the checkpoint's generation defaults, language codes; the
//! row's `[rows.generation]` as flags) when the checkpoint is a local directory or in
//! the Hugging Face cache; `--download` fetches missing ones. `--limit N` scores the
//! first N examples only, and the report marks those rows partial.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use encdec_eval::datasets::{Dataset, Examples, Task};
use encdec_eval::tables::{
    self, Generation, ModelRow, ModelRunner, ReportOptions, RougeOptions, Row, RunOutcome, Scorer,
    Table,
};
use encdec_eval::{bleu, chrf, rouge, EvalError};

use super::eval::{generate_lines, task_settings, ProgressLine, TaskFlags};
use super::generate::{make_backend, parse_dtype, write_atomically, GenArgs, ModelArgs, Session};
use crate::hub;

#[derive(Args, Debug)]
pub struct TableArgs {
    /// A built-in table (see --list), or the path of a table TOML file (the format of
    /// eval/tables/*.toml).
    #[arg(required_unless_present = "list")]
    name: Option<String>,
    /// List the built-in tables.
    #[arg(long)]
    list: bool,
    /// Data directory (default: $ENCDEC_DATA, then ../shared/data, then for
    /// CNN/DailyMail the Hugging Face cache or hub).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    format: TableFormat,
    /// Only the rows whose system name contains this text (case-insensitive;
    /// repeat for several).
    #[arg(long)]
    system: Vec<String>,
    /// Score model rows on the first N examples of their data set only (a smoke run:
    /// those rows are reported as partial, with no difference to the published number).
    #[arg(long)]
    limit: Option<usize>,
    /// Do not generate: report model rows as not run, score only outputs rows.
    #[arg(long)]
    no_run: bool,
    /// Download checkpoints that are neither a local directory nor in the Hugging Face
    /// cache (tables list checkpoints of up to 11B parameters).
    #[arg(long)]
    download: bool,
    /// cpu, or cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Weight dtype: f32, f16, bf16 or int8.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Sources per generation batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Write each model row's hypotheses into DIR as `<system>.<dataset>.hyps.txt`
    /// (one per line) with its references as `<system>.<dataset>.refs.jsonl`.
    #[arg(long)]
    save_outputs: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TableFormat {
    Text,
    Markdown,
    Json,
}

/// The eval crate's metrics behind the table's scoring interface.
struct Metrics;

impl Scorer for Metrics {
    fn bleu(&self, hyp: &[String], refs: &[String], tokenize: &str) -> encdec_eval::Result<f64> {
        let cfg = bleu::BleuConfig {
            tokenizer: tokenize.parse()?,
            ..Default::default()
        };
        Ok(bleu::corpus_bleu(hyp, &[refs.to_vec()], &cfg)?.score)
    }

    fn rouge(
        &self,
        hyp: &[String],
        refs: &[String],
        opts: &RougeOptions,
    ) -> encdec_eval::Result<(f64, f64, f64)> {
        let third = if opts.summary_level {
            "rougeLsum"
        } else {
            "rougeL"
        };
        let cfg = rouge::RougeConfig {
            types: rouge::parse_types(&format!("rouge1,rouge2,{third}"))?,
            use_stemmer: opts.stem,
            split_sentences: opts.split_sentences,
            ..Default::default()
        };
        let r = rouge::score_corpus(&cfg, hyp, refs)?;
        let f = |name: &str| {
            r.get(name)
                .map(|t| t.mean.fmeasure * 100.0)
                .ok_or_else(|| encdec_eval::EvalError::Invalid(format!("{name} missing")))
        };
        Ok((f("rouge1")?, f("rouge2")?, f(third)?))
    }

    fn chrf(&self, hyp: &[String], refs: &[String]) -> encdec_eval::Result<f64> {
        Ok(chrf::corpus_chrf(hyp, &[refs.to_vec()], &chrf::ChrfConfig::default())?.score)
    }
}

/// Generates model rows with `encdec eval`'s pipeline.
struct GenerateRunner<'a> {
    args: &'a TableArgs,
    /// The table as the user named it (for the commands in messages).
    table_arg: &'a str,
    /// The directory of a table file: relative checkpoint paths are tried there too.
    table_dir: Option<PathBuf>,
    /// Data sets already loaded (several rows share one).
    loaded: RefCell<BTreeMap<&'static str, Examples>>,
    /// `data set: hub copy` for each data set read from a Hugging Face hub copy,
    /// so the report says where its references came from.
    hub_copies: RefCell<Vec<String>>,
}

/// A row's `[rows.generation]` as `encdec generate` flags.
fn gen_args(g: &Generation) -> GenArgs {
    let n = |v: Option<u32>| v.map(|v| v as usize);
    GenArgs {
        num_beams: n(g.num_beams),
        max_new_tokens: n(g.max_new_tokens),
        min_new_tokens: n(g.min_new_tokens),
        max_length: n(g.max_length),
        min_length: n(g.min_length),
        length_penalty: g.length_penalty,
        no_repeat_ngram_size: n(g.no_repeat_ngram_size),
        early_stopping: g.early_stopping.map(|b| b.to_string()),
        ..Default::default()
    }
}

/// A file-name-safe form of `s`: lower-case ASCII letters, digits, `.`, `_` and `-`.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_') {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

impl GenerateRunner<'_> {
    /// The checkpoint directory, if it is available without downloading.
    fn local_checkpoint(&self, id: &str) -> Option<PathBuf> {
        let path = Path::new(id);
        if path.is_dir() {
            return Some(path.to_path_buf());
        }
        if let Some(dir) = &self.table_dir {
            let beside = dir.join(path);
            if path.is_relative() && beside.is_dir() {
                return Some(beside);
            }
        }
        if hub::looks_like_repo_id(id) {
            return hub::cached_snapshot(&hub::cache_dir(), id);
        }
        None
    }

    /// Why checkpoint `id` cannot be had, naming the command that fetches it.
    fn missing_reason(&self, id: &str) -> String {
        if hub::looks_like_repo_id(id) {
            format!(
                "checkpoint {id} is not available locally (not a directory, not in the Hugging \
                 Face cache {}); fetch it with `encdec table {} --download` or `huggingface-cli \
                 download {id}`",
                hub::cache_dir().display(),
                self.table_arg
            )
        } else {
            format!("checkpoint directory {id} does not exist")
        }
    }

    fn generate(&self, table: &str, row: &ModelRow, examples: &Examples) -> Result<RunOutcome> {
        let Some(id) = row.checkpoint.as_deref() else {
            return Ok(RunOutcome::NotRun(format!("no checkpoint: {}", row.note)));
        };
        let dir = match self.local_checkpoint(id) {
            Some(dir) => dir,
            None if self.args.download && hub::looks_like_repo_id(id) => {
                eprintln!("table: downloading {id} from the Hugging Face hub");
                hub::resolve_model(id)?
            }
            None => return Ok(RunOutcome::NotRun(self.missing_reason(id))),
        };
        let ds = Dataset::get(&row.dataset)?;
        let rows = [(table.to_string(), row.clone())];
        let settings = task_settings(
            &dir,
            ds,
            &gen_args(&row.generation),
            &TaskFlags::default(),
            &rows,
        )?;
        for w in settings.config.warnings() {
            eprintln!("warning: {}: {w}", row.system);
        }
        let model = ModelArgs {
            model: dir.display().to_string(),
            device: self.args.device.clone(),
            dtype: self.args.dtype.clone(),
            threads: self.args.threads,
        };
        let session = Session::open(
            &model,
            &settings.gen,
            settings.prefix.as_deref(),
            settings.defaults.src_lang.as_deref(),
            settings.defaults.tgt_lang.as_deref(),
        )
        .with_context(|| format!("{id} ({})", dir.display()))?;
        let pegasus = settings.model_type == "pegasus" && ds.task == Task::Summarization;

        let n = examples.len();
        let label = format!("{} {}", row.system, ds.name);
        let mut progress = ProgressLine::new(&label, 0, n);
        let batch = self.args.batch_size;
        let mut hyps = Vec::with_capacity(n);
        let (mut tokens, mut cut) = (0u64, 0usize);
        while hyps.len() < n {
            let start = hyps.len();
            let end = (start + 4 * batch).min(n);
            let step = generate_lines(
                &session,
                &examples.sources[start..end],
                start,
                batch,
                pegasus,
            );
            let (lines, t, c) = match step {
                Ok(x) => x,
                Err(e) => {
                    progress.finish();
                    return Err(e);
                }
            };
            hyps.extend(lines);
            tokens += t;
            cut += c;
            progress.update(hyps.len(), tokens);
        }
        progress.finish();
        if cut > 0 {
            eprintln!(
                "warning: {label}: {cut} sources were longer than the encoder accepts and were truncated"
            );
        }
        if let Some(out) = &self.args.save_outputs {
            save_outputs(out, row, &hyps, &examples.references)?;
        }
        Ok(RunOutcome::Hypotheses(hyps))
    }
}

fn save_outputs(dir: &Path, row: &ModelRow, hyps: &[String], refs: &[String]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stem = format!("{}.{}", slug(&row.system), row.dataset);
    let mut text = String::new();
    for h in hyps {
        text.push_str(h);
        text.push('\n');
    }
    write_atomically(&dir.join(format!("{stem}.hyps.txt")), &text)?;
    let mut text = String::new();
    for r in refs {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    write_atomically(&dir.join(format!("{stem}.refs.jsonl")), &text)
}

impl ModelRunner for GenerateRunner<'_> {
    fn run(
        &self,
        table: &str,
        row: &ModelRow,
        examples: &Examples,
    ) -> encdec_eval::Result<RunOutcome> {
        self.generate(table, row, examples)
            .map_err(|e| EvalError::Invalid(format!("{e:#}")))
    }

    fn precheck(&self, _table: &str, row: &ModelRow) -> Option<String> {
        let id = row.checkpoint.as_deref()?;
        if self.local_checkpoint(id).is_some()
            || (self.args.download && hub::looks_like_repo_id(id))
        {
            return None;
        }
        Some(self.missing_reason(id))
    }

    fn examples(
        &self,
        dataset: &Dataset,
        data_dir: Option<&Path>,
    ) -> encdec_eval::Result<Examples> {
        if let Some(ex) = self.loaded.borrow().get(dataset.name) {
            return Ok(ex.clone());
        }
        let located = dataset.locate_or(data_dir, Some(&hub::HubData))?;
        if let Some(h) = &located.hub {
            self.hub_copies
                .borrow_mut()
                .push(format!("{}: {}", dataset.name, h.provenance()));
        }
        let mut examples = dataset.read(&located)?;
        if let Some(l) = self.args.limit {
            examples = examples.limit(l);
        }
        self.loaded
            .borrow_mut()
            .insert(dataset.name, examples.clone());
        Ok(examples)
    }
}

/// A built-in table by name, or a table file by path: `(table, its directory)`.
fn open_table(arg: &str) -> Result<(Table, Option<PathBuf>)> {
    let path = Path::new(arg);
    let looks_like_path = arg.ends_with(".toml") || arg.contains(['/', '\\']) || path.is_file();
    if looks_like_path {
        // One line: the eval error already says what its source says.
        let table = tables::load_table_file(path).map_err(|e| anyhow!("{e}"))?;
        let dir = path
            .parent()
            .map(|d| {
                if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                }
            })
            .map(Path::to_path_buf);
        return Ok((table, dir));
    }
    match tables::load_table(arg) {
        Ok(t) => Ok((t, None)),
        Err(e @ EvalError::Unknown { .. }) => {
            Err(anyhow!("{e}; or give the path of a table .toml file"))
        }
        Err(e) => Err(e.into()),
    }
}

pub fn run(args: TableArgs) -> Result<()> {
    if args.list {
        for name in tables::list_tables() {
            let t = tables::load_table(name)?;
            println!("{name:<16} {}", t.title);
        }
        return Ok(());
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if args.limit == Some(0) {
        bail!("--limit must be at least 1");
    }
    let name = args.name.clone().unwrap_or_default();
    let (mut table, table_dir) = open_table(&name)?;
    if !args.system.is_empty() {
        let wanted: Vec<String> = args.system.iter().map(|s| s.to_lowercase()).collect();
        let all: Vec<String> = table.rows.iter().map(|r| r.system().to_string()).collect();
        table.rows.retain(|r: &Row| {
            let system = r.system().to_lowercase();
            wanted.iter().any(|w| system.contains(w.as_str()))
        });
        if table.rows.is_empty() {
            bail!(
                "--system {}: no row of table '{}' matches (systems: {})",
                args.system.join(", "),
                table.name,
                all.join("; ")
            );
        }
    }
    let runner = if args.no_run {
        None
    } else {
        parse_dtype(&args.dtype)?;
        // A bad --device or --threads is one error, not one per row.
        make_backend(&args.device, args.threads)?;
        Some(GenerateRunner {
            args: &args,
            table_arg: &name,
            table_dir,
            loaded: RefCell::new(BTreeMap::new()),
            hub_copies: RefCell::new(Vec::new()),
        })
    };
    let mut report = table.report(
        &Metrics,
        &ReportOptions {
            data_dir: args.data.as_deref(),
            runner: runner.as_ref().map(|r| r as &dyn ModelRunner),
        },
    );
    let hub_line = runner.as_ref().and_then(|r| {
        let copies = r.hub_copies.borrow();
        (!copies.is_empty()).then(|| {
            format!(
                "Data read from Hugging Face hub copies: {}.",
                copies.join("; ")
            )
        })
    });
    if let Some(line) = &hub_line {
        let sep = if report.notes.is_empty() { "" } else { " " };
        report.notes = format!("{}{sep}{line}", report.notes);
    }
    match args.format {
        TableFormat::Text => {
            print!("{}", report.to_text());
            if let Some(line) = &hub_line {
                println!("{line}");
            }
        }
        TableFormat::Markdown => print!("{}", report.to_markdown()),
        TableFormat::Json => println!("{}", report.to_json()?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_file_names() {
        assert_eq!(
            slug("BART-large (bart-large-cnn)"),
            "bart-large-bart-large-cnn"
        );
        assert_eq!(slug("T5 fixture / v1.1"), "t5-fixture-v1.1");
    }

    #[test]
    fn row_settings_become_flags() {
        let g = Generation {
            num_beams: Some(4),
            max_length: Some(142),
            early_stopping: Some(true),
            ..Default::default()
        };
        let a = gen_args(&g);
        assert_eq!(a.num_beams, Some(4));
        assert_eq!(a.max_length, Some(142));
        assert_eq!(a.early_stopping.as_deref(), Some("true"));
        assert_eq!(a.min_length, None);
    }
}
