//! encdec-generate: the decoding loop with Hugging Face `generate` semantics.
//!
//! Models implement [`Seq2SeqModel`]; the search strategies drive it one decoder
//! step at a time. The encoder runs once per source and the cross-attention K/V is
//! projected once there; decoder rows (beams, samples) read it through
//! `DecoderState::kv_index`, never through copies.
//!
//! - [`config`]: [`GenerationConfig`] resolved from a checkpoint exactly as
//!   transformers 5 does, with CLI [`GenerationOverrides`] on top.
//! - [`processors`]: the logits processors, HF semantics and order.
//! - [`search`]: greedy, sampling and beam search ([`Generator`]).
//! - [`backend_search`]: greedy and beam search on the backend's candidates
//!   (the logits stay on the device; [`SearchStats`] says where steps ran).

pub mod backend_search;
pub mod config;
pub mod math;
pub mod model;
pub mod processors;
pub mod rng;
pub mod search;

pub use backend_search::SearchStats;
pub use config::{EarlyStopping, GenerationConfig, GenerationOverrides, SearchMode};
pub use model::{DecoderState, EncoderOutput, ModelSpec, RecordedSteps, Seq2SeqModel, Then};
pub use processors::{LogitsProcessor, LogitsProcessorList, RowContext, RowEdits};
pub use search::{plan_batches, Generator, Hypothesis, TraceEvent, TraceFn, TRACE_TOP};
