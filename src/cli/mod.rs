//! One module per subcommand.

pub mod attention_map;
pub mod bench;
pub mod eval;
pub mod generate;
pub mod info;
pub mod plot;
pub mod profile;
pub mod score;
pub mod table;

/// Output format shared by the subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}
