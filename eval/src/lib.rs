//! encdec-eval: metrics that reproduce the reference implementations digit for digit
//! (ROUGE as Google's `rouge-score`, BLEU and chrF as `sacrebleu`), data sets and
//! published benchmark tables.

pub mod bleu;
pub mod bleu_tokenize;
pub mod chrf;
pub mod datasets;
pub mod error;
pub mod io;
pub mod porter;
pub mod rouge;
pub mod sentence_split;
pub mod tables;

pub use error::{EvalError, Result};
