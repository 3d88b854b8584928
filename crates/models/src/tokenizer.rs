//! Tokenizers of seq2seq checkpoints (being written).
