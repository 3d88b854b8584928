//! The `encdec` command line. Every error is one line on stderr and a non-zero exit.

mod cli;
mod hub;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "encdec",
    version,
    about = "Runtime and evaluation harness for transformer encoder-decoder models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate: one source per input line, one output per line (greedy, beam, sampling).
    Generate(cli::generate::GenerateArgs),
    /// Architecture, parameter count and weight memory of a checkpoint or catalogue shape.
    Info(cli::info::InfoArgs),
    /// Score hypotheses against references: BLEU, chrF (sacreBLEU), ROUGE (rouge-score).
    #[command(subcommand)]
    Score(cli::score::ScoreCommand),
    /// Print a published table with measured scores next to the published ones.
    Table(cli::table::TableArgs),
    /// Generate over a test set with its published settings, score, and write hyps.txt,
    /// scores.json and report.md (resumable; `--shard I/N` + `eval merge` to split a run).
    Eval(cli::eval::EvalArgs),
    /// Throughput and latency of fixed-length generation (workloads W1-W4 of DESIGN.md);
    /// with no arguments, a quick run on the t5-small shape with random weights.
    Bench(cli::bench::BenchArgs),
    /// Per-op time breakdown of one generation (GFLOP/s and GB/s vs peaks; --trace FILE.json).
    Profile(cli::profile::ProfileArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => cli::generate::run(args),
        Command::Info(args) => cli::info::run(args),
        Command::Score(cmd) => cli::score::run(cmd),
        Command::Table(args) => cli::table::run(args),
        Command::Eval(args) => cli::eval::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Profile(args) => cli::profile::run(args),
    };
    if let Err(e) = result {
        // `{:#}` joins the context chain on one line.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
