//! `encdec score bleu|chrf|rouge`: sacreBLEU and rouge-score semantics, no Python.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use encdec_eval::{bleu, bleu_tokenize::BleuTokenizer, chrf, io, rouge};

use super::Format;

#[derive(Subcommand, Debug)]
pub enum ScoreCommand {
    /// Corpus BLEU as sacreBLEU computes it.
    Bleu(BleuArgs),
    /// chrF / chrF++ as sacreBLEU computes them.
    Chrf(ChrfArgs),
    /// ROUGE as Google's rouge-score computes it (stemming on by default).
    Rouge(RougeArgs),
}

#[derive(Args, Debug)]
pub struct Files {
    /// Hypotheses, one per line (`.jsonl`: one JSON string per line).
    #[arg(long)]
    hyp: PathBuf,
    /// References, parallel to the hypotheses; repeat for several reference sets.
    #[arg(long = "ref", required = true)]
    refs: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Args, Debug)]
pub struct BleuArgs {
    #[command(flatten)]
    files: Files,
    /// Tokenizer: 13a, intl, zh, char, none.
    #[arg(long, default_value = "13a")]
    tokenize: String,
    #[arg(long)]
    lowercase: bool,
    /// Smoothing: exp, floor, add-k, none.
    #[arg(long, default_value = "exp")]
    smooth: String,
    /// Value for floor (default 0.1) or add-k (default 1).
    #[arg(long)]
    smooth_value: Option<f64>,
}

#[derive(Args, Debug)]
pub struct ChrfArgs {
    #[command(flatten)]
    files: Files,
    /// Word n-gram order: 0 for chrF, 2 for chrF++.
    #[arg(long, default_value_t = 0)]
    word_order: usize,
    #[arg(long, default_value_t = 6)]
    char_order: usize,
    #[arg(long)]
    lowercase: bool,
}

#[derive(Args, Debug)]
pub struct RougeArgs {
    #[command(flatten)]
    files: Files,
    /// Comma-separated: rouge1, rouge2, rougeL, rougeLsum (and rougeN).
    #[arg(long, default_value = "rouge1,rouge2,rougeL,rougeLsum")]
    types: String,
    /// Turn off Porter stemming.
    #[arg(long)]
    no_stem: bool,
    /// Split texts into sentences (NLTK Punkt) before rougeLsum, as the transformers
    /// summarization examples do.
    #[arg(long)]
    split_sentences: bool,
    /// Bootstrap resamples for 95% confidence intervals (rouge-score's BootstrapAggregator).
    #[arg(long)]
    bootstrap: Option<usize>,
    /// Tokenizer: default (rouge-score's, ASCII) or unicode (word boundaries, any script).
    #[arg(long, default_value = "default")]
    tokenizer: String,
}

/// Hypotheses and each reference set, with line counts checked against each other.
fn read_files(files: &Files) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let hyps = io::read_examples(&files.hyp)?;
    let mut refs = Vec::new();
    for path in &files.refs {
        let r = io::read_examples(path)?;
        check_counts(&files.hyp, hyps.len(), path, r.len())?;
        refs.push(r);
    }
    Ok((hyps, refs))
}

fn check_counts(hyp: &Path, nh: usize, reference: &Path, nr: usize) -> Result<()> {
    if nh != nr {
        bail!(
            "{} has {nh} lines but {} has {nr}",
            hyp.display(),
            reference.display()
        );
    }
    Ok(())
}

pub fn run(cmd: ScoreCommand) -> Result<()> {
    match cmd {
        ScoreCommand::Bleu(a) => {
            let (hyps, refs) = read_files(&a.files)?;
            let cfg = bleu::BleuConfig {
                tokenizer: a.tokenize.parse::<BleuTokenizer>()?,
                lowercase: a.lowercase,
                smooth: bleu::Smooth::from_name(&a.smooth, a.smooth_value)?,
                effective_order: false,
            };
            let score = bleu::corpus_bleu(&hyps, &refs, &cfg)?;
            match a.files.format {
                Format::Text => println!("{}", score.format_text()),
                Format::Json => println!("{}", serde_json::to_string(&score)?),
            }
        }
        ScoreCommand::Chrf(a) => {
            let (hyps, refs) = read_files(&a.files)?;
            let cfg = chrf::ChrfConfig {
                char_order: a.char_order,
                word_order: a.word_order,
                lowercase: a.lowercase,
                ..Default::default()
            };
            let score = chrf::corpus_chrf(&hyps, &refs, &cfg)?;
            match a.files.format {
                Format::Text => println!("{}", score.format_text()),
                Format::Json => println!("{}", serde_json::to_string(&score)?),
            }
        }
        ScoreCommand::Rouge(a) => {
            if a.files.refs.len() != 1 {
                bail!(
                    "rouge takes exactly one --ref (rouge-score scores against a single reference)"
                );
            }
            let (hyps, mut refs) = read_files(&a.files)?;
            let refs = refs.remove(0);
            let cfg = rouge::RougeConfig {
                types: rouge::parse_types(&a.types)?,
                use_stemmer: !a.no_stem,
                split_sentences: a.split_sentences,
                tokenizer: rouge::RougeTokenizer::parse(&a.tokenizer)?,
                bootstrap: match a.bootstrap {
                    Some(0) => bail!("--bootstrap must be at least 1"),
                    Some(n) => Some(rouge::BootstrapConfig {
                        n_samples: n,
                        ..Default::default()
                    }),
                    None => None,
                },
            };
            let result = rouge::score_corpus(&cfg, &hyps, &refs)
                .with_context(|| format!("scoring {}", a.files.hyp.display()))?;
            match a.files.format {
                Format::Text => print!("{}", result.to_text()),
                Format::Json => println!("{}", serde_json::to_string(&result.to_json())?),
            }
        }
    }
    Ok(())
}
