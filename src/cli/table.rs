//! `encdec table NAME`: measured next to published.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use encdec_eval::tables::{self, ReportOptions, RougeOptions, Scorer};
use encdec_eval::{bleu, chrf, rouge};

#[derive(Args, Debug)]
pub struct TableArgs {
    /// Table name (see --list).
    #[arg(required_unless_present = "list")]
    name: Option<String>,
    /// List the tables.
    #[arg(long)]
    list: bool,
    /// Data directory (default: $ENCDEC_DATA, then ../shared/data).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    format: TableFormat,
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

pub fn run(args: TableArgs) -> Result<()> {
    if args.list {
        for name in tables::list_tables() {
            let t = tables::load_table(name)?;
            println!("{name:<16} {}", t.title);
        }
        return Ok(());
    }
    let name = args.name.unwrap_or_default();
    let table = tables::load_table(&name)?;
    let report = table.report(
        &Metrics,
        &ReportOptions {
            data_dir: args.data.as_deref(),
            runner: None,
        },
    );
    match args.format {
        TableFormat::Text => print!("{}", report.to_text()),
        TableFormat::Markdown => print!("{}", report.to_markdown()),
        TableFormat::Json => println!("{}", report.to_json()?),
    }
    Ok(())
}
