//! SentencePiece model files (being written).
