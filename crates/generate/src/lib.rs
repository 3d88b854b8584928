//! encdec-generate: the decoding loop with Hugging Face `generate` semantics.
//!
//! Models implement [`Seq2SeqModel`]; the search strategies drive it one decoder
//! step at a time. The encoder runs once per source and the cross-attention K/V is
//! projected once there; decoder rows (beams, samples) read it through
//! `DecoderState::kv_index`, never through copies.

pub mod model;

pub use model::{DecoderState, EncoderOutput, ModelSpec, Seq2SeqModel};
