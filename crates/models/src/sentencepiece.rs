//! SentencePiece model files (`.model`, `.spm`), read and run without the C++ library.
//!
//! [`SpModel`] parses the `ModelProto` protobuf (pieces, trainer spec, normalizer and
//! denormalizer specs) with a minimal protobuf reader and reproduces what
//! `sentencepiece.SentencePieceProcessor` does, step for step:
//!
//! - normalisation ([`SpModel::normalize`]): the `precompiled_charsmap` double-array trie
//!   (longest-prefix rewrite rules), user-defined symbols left as they are, leading/trailing/
//!   repeated whitespace removed, `' '` escaped to `▁`, the dummy `▁` prefix;
//! - encoding ([`SpModel::encode`]): the unigram model's Viterbi search (sentencepiece's
//!   "optimized" encoder, with its float arithmetic and tie rules) or the BPE model's
//!   score-ordered merges (with unused-piece re-segmentation), then runs of unknown pieces
//!   merged and, with `byte_fallback`, unknown characters split into `<0xXX>` pieces;
//! - decoding ([`SpModel::decode_pieces`]): `DecodePieces`: control pieces dropped, `<unk>`
//!   written as the unknown surface, leading `▁` of the first pieces consumed, `▁` -> `' '`,
//!   byte pieces re-assembled, the denormalizer applied.
//!
//! This is what `MarianTokenizer` and `M2M100Tokenizer` of `transformers` run (they call
//! sentencepiece directly, there is no `tokenizer.json`).

use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};

/// A `.model` / `.spm` file that cannot be read or is not a SentencePiece model.
#[derive(Debug, thiserror::Error)]
#[error("{}: not a valid SentencePiece model: {reason}", path.display())]
pub struct SentencePieceError {
    pub path: PathBuf,
    pub reason: String,
}

/// `ModelProto.SentencePiece.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceKind {
    fn from_proto(v: u64) -> Option<Self> {
        Some(match v {
            1 => PieceKind::Normal,
            2 => PieceKind::Unknown,
            3 => PieceKind::Control,
            4 => PieceKind::UserDefined,
            5 => PieceKind::Unused,
            6 => PieceKind::Byte,
            _ => return None,
        })
    }
}

/// `TrainerSpec.model_type` (only the two that seq2seq checkpoints use are run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpModelType {
    Unigram,
    Bpe,
}

/// One vocabulary entry.
#[derive(Clone, Debug)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceKind,
}

/// `NormalizerSpec` (also used for the denormalizer).
#[derive(Clone, Debug)]
pub struct NormalizerSpec {
    pub name: String,
    pub precompiled_charsmap: Vec<u8>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    fn default() -> Self {
        NormalizerSpec {
            name: String::new(),
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

const SPACE_SYMBOL: &str = "\u{2581}";

// ---------------------------------------------------------------------------------------
// Minimal protobuf reader
// ---------------------------------------------------------------------------------------

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Value<'a> {
    Varint(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
    Other,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| format!("truncated varint at byte {}", self.pos))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint too long at byte {}", self.pos))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "field of {n} bytes at byte {} runs past the end ({} bytes)",
                    self.pos,
                    self.buf.len()
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next field, or None at the end.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 {
            return Err(format!("field number 0 at byte {}", self.pos));
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Other
            }
            2 => {
                let n = self.varint()?;
                let n = usize::try_from(n).map_err(|_| "length overflows".to_string())?;
                Value::Bytes(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            w => {
                return Err(format!(
                    "unsupported protobuf wire type {w} at byte {}",
                    self.pos
                ))
            }
        };
        Ok(Some((number, value)))
    }
}

fn utf8(b: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| format!("{what} is not valid UTF-8"))
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Varint(x) => Some(*x != 0),
        _ => None,
    }
}

fn as_i32(v: &Value) -> Option<i32> {
    match v {
        Value::Varint(x) => Some(*x as i64 as i32),
        _ => None,
    }
}

fn parse_piece(buf: &[u8]) -> Result<Piece, String> {
    let mut r = Reader::new(buf);
    let mut p = Piece {
        piece: String::new(),
        score: 0.0,
        kind: PieceKind::Normal,
    };
    while let Some((n, v)) = r.field()? {
        match (n, v) {
            (1, Value::Bytes(b)) => p.piece = utf8(b, "a piece")?,
            (2, Value::Fixed32(x)) => p.score = f32::from_bits(x),
            (3, Value::Varint(x)) => {
                p.kind =
                    PieceKind::from_proto(x).ok_or_else(|| format!("unknown piece type {x}"))?
            }
            (1..=3, _) => return Err("a piece field has the wrong wire type".into()),
            _ => {}
        }
    }
    Ok(p)
}

fn parse_normalizer(buf: &[u8]) -> Result<NormalizerSpec, String> {
    let mut r = Reader::new(buf);
    let mut s = NormalizerSpec::default();
    while let Some((n, v)) = r.field()? {
        match n {
            1 => {
                if let Value::Bytes(b) = v {
                    s.name = utf8(b, "normalizer name")?;
                }
            }
            2 => {
                if let Value::Bytes(b) = v {
                    s.precompiled_charsmap = b.to_vec();
                }
            }
            3 => s.add_dummy_prefix = as_bool(&v).unwrap_or(s.add_dummy_prefix),
            4 => s.remove_extra_whitespaces = as_bool(&v).unwrap_or(s.remove_extra_whitespaces),
            5 => s.escape_whitespaces = as_bool(&v).unwrap_or(s.escape_whitespaces),
            _ => {}
        }
    }
    Ok(s)
}

struct TrainerSpec {
    model_type: u64,
    treat_whitespace_as_suffix: bool,
    byte_fallback: bool,
    unk_surface: String,
    unk_id: i32,
}

fn parse_trainer(buf: &[u8]) -> Result<TrainerSpec, String> {
    let mut r = Reader::new(buf);
    let mut t = TrainerSpec {
        model_type: 1,
        treat_whitespace_as_suffix: false,
        byte_fallback: false,
        unk_surface: " \u{2047} ".to_string(),
        unk_id: 0,
    };
    while let Some((n, v)) = r.field()? {
        match n {
            3 => {
                if let Value::Varint(x) = v {
                    t.model_type = x;
                }
            }
            24 => t.treat_whitespace_as_suffix = as_bool(&v).unwrap_or(false),
            35 => t.byte_fallback = as_bool(&v).unwrap_or(false),
            40 => t.unk_id = as_i32(&v).unwrap_or(0),
            44 => {
                if let Value::Bytes(b) = v {
                    t.unk_surface = utf8(b, "unk_surface")?;
                }
            }
            _ => {}
        }
    }
    Ok(t)
}

// ---------------------------------------------------------------------------------------
// Normalizer: darts-clone double array of the precompiled charsmap
// ---------------------------------------------------------------------------------------

/// The rewrite rules of a `precompiled_charsmap`: a darts-clone double-array trie over the
/// UTF-8 of the source strings whose values point into a blob of NUL-terminated targets.
#[derive(Clone, Debug)]
struct CharsMap {
    units: Vec<u32>,
    normalized: Vec<u8>,
}

impl CharsMap {
    fn parse(blob: &[u8]) -> Result<Self, String> {
        if blob.len() <= 4 {
            return Err("precompiled_charsmap is too short".into());
        }
        let trie_size = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
        if trie_size >= blob.len() || trie_size & 3 != 0 || 4 + trie_size > blob.len() {
            return Err("precompiled_charsmap: trie size exceeds the blob".into());
        }
        let units = blob[4..4 + trie_size]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(CharsMap {
            units,
            normalized: blob[4 + trie_size..].to_vec(),
        })
    }

    /// darts-clone `commonPrefixSearch`: (value, length) of every key that is a prefix of
    /// `key`, shortest first; at most `max` are reported.
    fn common_prefix_search(&self, key: &[u8], max: usize, out: &mut Vec<(u32, usize)>) {
        out.clear();
        let units = &self.units;
        let offset = |u: u32| ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize;
        let Some(&first) = units.first() else { return };
        let mut node = offset(first);
        for (i, &b) in key.iter().enumerate() {
            node ^= b as usize;
            let Some(&unit) = units.get(node) else { return };
            if unit & ((1 << 31) | 0xff) != u32::from(b) {
                return;
            }
            node ^= offset(unit);
            if (unit >> 8) & 1 == 1 {
                if out.len() < max {
                    let Some(&leaf) = units.get(node) else { return };
                    out.push((leaf & ((1 << 31) - 1), i + 1));
                } else {
                    return;
                }
            }
        }
    }

    /// The NUL-terminated replacement string at `offset`.
    fn target(&self, offset: usize) -> &[u8] {
        let rest = self.normalized.get(offset..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }
}

/// Longest-match of user-defined symbols (sentencepiece's `PrefixMatcher`).
#[derive(Clone, Debug, Default)]
struct PrefixMatcher {
    symbols: HashMap<Vec<u8>, ()>,
    max_len: usize,
}

impl PrefixMatcher {
    fn new<'a>(symbols: impl Iterator<Item = &'a str>) -> Self {
        let mut m = PrefixMatcher::default();
        for s in symbols {
            m.max_len = m.max_len.max(s.len());
            m.symbols.insert(s.as_bytes().to_vec(), ());
        }
        m
    }

    /// (length, found): the longest user-defined symbol at the start of `w`, else one char.
    fn prefix_match(&self, w: &[u8]) -> (usize, bool) {
        if !self.symbols.is_empty() {
            let upto = self.max_len.min(w.len());
            for len in (1..=upto).rev() {
                if self.symbols.contains_key(&w[..len]) {
                    return (len, true);
                }
            }
        }
        (one_char_len(w).min(w.len()), false)
    }
}

/// sentencepiece's `OneCharLen`: the length of a UTF-8 sequence from its lead byte.
fn one_char_len(w: &[u8]) -> usize {
    const TBL: [usize; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    w.first().map(|&b| TBL[(b >> 4) as usize]).unwrap_or(1)
}

#[derive(Clone, Debug)]
struct Normalizer {
    spec: NormalizerSpec,
    charsmap: Option<CharsMap>,
    treat_whitespace_as_suffix: bool,
}

impl Normalizer {
    fn new(spec: NormalizerSpec, treat_whitespace_as_suffix: bool) -> Result<Self, String> {
        let charsmap = if spec.precompiled_charsmap.is_empty() {
            None
        } else {
            Some(CharsMap::parse(&spec.precompiled_charsmap)?)
        };
        Ok(Normalizer {
            spec,
            charsmap,
            treat_whitespace_as_suffix,
        })
    }

    /// `NormalizePrefix`: (normalized prefix, bytes consumed).
    fn prefix<'a>(
        &'a self,
        input: &'a [u8],
        matcher: Option<&PrefixMatcher>,
        scratch: &mut Vec<(u32, usize)>,
    ) -> (&'a [u8], usize) {
        if let Some(m) = matcher {
            let (len, found) = m.prefix_match(input);
            if found {
                return (&input[..len], len);
            }
        }
        if let Some(cm) = &self.charsmap {
            // kMaxTrieResultsSize = 32
            cm.common_prefix_search(input, 32, scratch);
            let mut longest: Option<(u32, usize)> = None;
            for &(value, len) in scratch.iter() {
                if longest.is_none_or(|(_, l)| len > l) {
                    longest = Some((value, len));
                }
            }
            if let Some((value, len)) = longest {
                return (cm.target(value as usize), len);
            }
        }
        // `input` is valid UTF-8 here (it comes from a &str), so one whole char.
        let len = one_char_len(input).min(input.len());
        (&input[..len], len)
    }

    fn normalize(&self, text: &str, matcher: Option<&PrefixMatcher>) -> String {
        let mut input = text.as_bytes();
        let mut scratch = Vec::new();
        if input.is_empty() {
            return String::new();
        }
        let spec = &self.spec;
        if spec.remove_extra_whitespaces {
            while !input.is_empty() {
                let (p, n) = self.prefix(input, matcher, &mut scratch);
                if p != b" " {
                    break;
                }
                input = &input[n..];
            }
        }
        if input.is_empty() {
            return String::new();
        }
        let mut out: Vec<u8> = Vec::with_capacity(input.len() * 3);
        let add_ws = |out: &mut Vec<u8>| {
            if spec.escape_whitespaces {
                out.extend_from_slice(SPACE_SYMBOL.as_bytes());
            } else {
                out.push(b' ');
            }
        };
        if !self.treat_whitespace_as_suffix && spec.add_dummy_prefix {
            add_ws(&mut out);
        }
        let mut is_prev_space = spec.remove_extra_whitespaces;
        while !input.is_empty() {
            let (p, n) = self.prefix(input, matcher, &mut scratch);
            let mut sp = p;
            while is_prev_space && sp.first() == Some(&b' ') {
                sp = &sp[1..];
            }
            if !sp.is_empty() {
                for &b in sp {
                    if spec.escape_whitespaces && b == b' ' {
                        out.extend_from_slice(SPACE_SYMBOL.as_bytes());
                    } else {
                        out.push(b);
                    }
                }
                is_prev_space = sp.last() == Some(&b' ');
            }
            input = &input[n..];
            if !spec.remove_extra_whitespaces {
                is_prev_space = false;
            }
        }
        if spec.remove_extra_whitespaces {
            let space: &[u8] = if spec.escape_whitespaces {
                SPACE_SYMBOL.as_bytes()
            } else {
                b" "
            };
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        if self.treat_whitespace_as_suffix && spec.add_dummy_prefix {
            add_ws(&mut out);
        }
        match String::from_utf8(out) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

/// A loaded SentencePiece model.
#[derive(Clone, Debug)]
pub struct SpModel {
    pieces: Vec<Piece>,
    /// NORMAL, USER_DEFINED and UNUSED pieces (what the model matches in text).
    piece_ids: HashMap<String, u32>,
    /// CONTROL, UNKNOWN and BYTE pieces.
    reserved_ids: HashMap<String, u32>,
    max_piece_len: usize,
    unk_id: u32,
    model_type: SpModelType,
    byte_fallback: bool,
    unk_surface: String,
    min_score: f32,
    max_score: f32,
    normalizer: Normalizer,
    denormalizer: Option<Normalizer>,
    matcher: PrefixMatcher,
}

impl SpModel {
    /// Reads a `.model` / `.spm` file.
    pub fn from_file(path: &Path) -> Result<Self, SentencePieceError> {
        let bytes = std::fs::read(path).map_err(|e| SentencePieceError {
            path: path.to_path_buf(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::from_bytes(&bytes).map_err(|reason| SentencePieceError {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses a serialized `ModelProto`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader::new(bytes);
        let mut pieces = Vec::new();
        let mut trainer = None;
        let mut normalizer = None;
        let mut denormalizer = None;
        while let Some((n, v)) = r.field()? {
            match (n, v) {
                (1, Value::Bytes(b)) => {
                    pieces.push(parse_piece(b).map_err(|e| format!("piece {}: {e}", pieces.len()))?)
                }
                (2, Value::Bytes(b)) => trainer = Some(parse_trainer(b)?),
                (3, Value::Bytes(b)) => normalizer = Some(parse_normalizer(b)?),
                (5, Value::Bytes(b)) => denormalizer = Some(parse_normalizer(b)?),
                (1..=5, _) => return Err(format!("field {n} has the wrong wire type")),
                _ => {}
            }
        }
        if pieces.is_empty() {
            return Err("no pieces".into());
        }
        let trainer = trainer.unwrap_or(TrainerSpec {
            model_type: 1,
            treat_whitespace_as_suffix: false,
            byte_fallback: false,
            unk_surface: " \u{2047} ".into(),
            unk_id: 0,
        });
        let model_type = match trainer.model_type {
            1 => SpModelType::Unigram,
            2 => SpModelType::Bpe,
            3 => return Err("model_type WORD is not supported (only UNIGRAM and BPE)".into()),
            4 => return Err("model_type CHAR is not supported (only UNIGRAM and BPE)".into()),
            t => return Err(format!("unknown model_type {t}")),
        };

        let mut piece_ids = HashMap::with_capacity(pieces.len());
        let mut reserved_ids = HashMap::new();
        let mut unk_id = None;
        let mut max_piece_len = 0;
        let mut min_score = f32::MAX;
        let mut max_score = f32::MIN_POSITIVE; // FLT_MIN, as sentencepiece initialises it
        for (i, p) in pieces.iter().enumerate() {
            if p.piece.is_empty() {
                return Err(format!("piece {i} is empty"));
            }
            let id = i as u32;
            let normal = matches!(
                p.kind,
                PieceKind::Normal | PieceKind::UserDefined | PieceKind::Unused
            );
            let map = if normal {
                &mut piece_ids
            } else {
                &mut reserved_ids
            };
            if map.insert(p.piece.clone(), id).is_some() {
                return Err(format!("piece {:?} is defined twice", p.piece));
            }
            if normal {
                max_piece_len = max_piece_len.max(p.piece.len());
            }
            if p.kind == PieceKind::Unknown {
                if unk_id.is_some() {
                    return Err("more than one unknown piece".into());
                }
                unk_id = Some(id);
            }
            if p.kind == PieceKind::Byte {
                if !trainer.byte_fallback {
                    return Err(format!(
                        "byte piece {} found although byte_fallback is false",
                        p.piece
                    ));
                }
                if piece_to_byte(&p.piece).is_none() {
                    return Err(format!("invalid byte piece {}", p.piece));
                }
            }
            if p.kind == PieceKind::Normal {
                min_score = min_score.min(p.score);
                max_score = max_score.max(p.score);
            }
        }
        let unk_id = unk_id.ok_or_else(|| "no unknown piece (<unk>)".to_string())?;
        if trainer.byte_fallback {
            for b in 0..=255u8 {
                if !reserved_ids.contains_key(&byte_piece(b)) {
                    return Err("byte_fallback is set but not all 256 byte pieces exist".into());
                }
            }
        }
        let matcher = PrefixMatcher::new(
            pieces
                .iter()
                .filter(|p| p.kind == PieceKind::UserDefined)
                .map(|p| p.piece.as_str()),
        );
        let normalizer = Normalizer::new(
            normalizer.unwrap_or_default(),
            trainer.treat_whitespace_as_suffix,
        )?;
        let denormalizer = match denormalizer {
            Some(spec) if !spec.precompiled_charsmap.is_empty() => {
                Some(Normalizer::new(spec, trainer.treat_whitespace_as_suffix)?)
            }
            _ => None,
        };
        Ok(SpModel {
            pieces,
            piece_ids,
            reserved_ids,
            max_piece_len,
            unk_id,
            model_type,
            byte_fallback: trainer.byte_fallback,
            unk_surface: trainer.unk_surface,
            min_score,
            max_score,
            normalizer,
            denormalizer,
            matcher,
        })
    }

    pub fn model_type(&self) -> SpModelType {
        self.model_type
    }

    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    pub fn normalizer_spec(&self) -> &NormalizerSpec {
        &self.normalizer.spec
    }

    /// `PieceToId`: reserved pieces first, then normal ones, else the unknown id.
    pub fn piece_to_id(&self, piece: &str) -> u32 {
        self.reserved_ids
            .get(piece)
            .or_else(|| self.piece_ids.get(piece))
            .copied()
            .unwrap_or(self.unk_id)
    }

    /// `IdToPiece` (None out of range).
    pub fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(|p| p.piece.as_str())
    }

    fn kind(&self, id: u32) -> PieceKind {
        self.pieces[id as usize].kind
    }

    /// The normalized form of `text` (`▁` for spaces, dummy prefix added).
    pub fn normalize(&self, text: &str) -> String {
        self.normalizer.normalize(text, Some(&self.matcher))
    }

    /// `encode(text, out_type=str)` and the ids: the pieces of `text`.
    pub fn encode(&self, text: &str) -> Vec<(String, u32)> {
        let normalized = self.normalize(text);
        if normalized.is_empty() {
            return Vec::new();
        }
        let raw = match self.model_type {
            SpModelType::Unigram => self.encode_unigram(&normalized),
            SpModelType::Bpe => self.encode_bpe(&normalized),
        };
        // PopulateSentencePieceText: byte fallback, runs of unknown pieces merged
        let mut out: Vec<(String, u32)> = Vec::with_capacity(raw.len());
        let mut prev_unk = false;
        for (w, id) in raw {
            let is_unk = self.kind(id) == PieceKind::Unknown;
            if is_unk && self.byte_fallback {
                for &b in w.as_bytes() {
                    let piece = byte_piece(b);
                    let bid = self.piece_to_id(&piece);
                    out.push((piece, bid));
                }
            } else if is_unk && prev_unk {
                if let Some(last) = out.last_mut() {
                    last.0.push_str(w);
                }
            } else {
                out.push((w.to_string(), id));
            }
            prev_unk = is_unk;
        }
        out
    }

    /// The ids of the pieces of every normal/user-defined/unused piece that starts `s`,
    /// shortest first, as (byte length, id).
    fn prefixes<'a>(&'a self, s: &'a str) -> impl Iterator<Item = (usize, u32)> + 'a {
        let limit = self.max_piece_len.min(s.len());
        s.char_indices()
            .map(|(i, c)| i + c.len_utf8())
            .take_while(move |&end| end <= limit)
            .filter_map(move |end| self.piece_ids.get(&s[..end]).map(|&id| (end, id)))
    }

    /// sentencepiece's `unigram::Model::EncodeOptimized`.
    fn encode_unigram<'a>(&self, normalized: &'a str) -> Vec<(&'a str, u32)> {
        #[derive(Clone, Copy)]
        struct Best {
            id: u32,
            score: f32,
            starts_at: Option<usize>,
        }
        let size = normalized.len();
        let unk_score = self.min_score - 10.0;
        let mut best = vec![
            Best {
                id: 0,
                score: 0.0,
                starts_at: None,
            };
            size + 1
        ];
        let bytes = normalized.as_bytes();
        let mut starts_at = 0;
        while starts_at < size {
            let here = best[starts_at].score;
            let mut has_single_node = false;
            let mblen = one_char_len(&bytes[starts_at..]).min(size - starts_at);
            for (length, id) in self.prefixes(&normalized[starts_at..]) {
                let p = &self.pieces[id as usize];
                if p.kind == PieceKind::Unused {
                    continue;
                }
                let score: f64 = if p.kind == PieceKind::UserDefined {
                    f64::from(length as f32 * self.max_score) - 0.1
                } else {
                    f64::from(p.score)
                };
                let candidate = (score + f64::from(here)) as f32;
                let target = &mut best[starts_at + length];
                if target.starts_at.is_none() || candidate > target.score {
                    *target = Best {
                        id,
                        score: candidate,
                        starts_at: Some(starts_at),
                    };
                }
                if length == mblen {
                    has_single_node = true;
                }
            }
            if !has_single_node {
                let candidate = unk_score + here;
                let target = &mut best[starts_at + mblen];
                if target.starts_at.is_none() || candidate > target.score {
                    *target = Best {
                        id: self.unk_id,
                        score: candidate,
                        starts_at: Some(starts_at),
                    };
                }
            }
            starts_at += mblen;
        }
        let mut results = Vec::new();
        let mut ends_at = size;
        while ends_at > 0 {
            let node = best[ends_at];
            let start = node.starts_at.unwrap_or(0);
            results.push((&normalized[start..ends_at], node.id));
            ends_at = start;
        }
        results.reverse();
        results
    }

    /// sentencepiece's `bpe::Model::Encode` (`SampleEncode` with alpha 0).
    fn encode_bpe<'a>(&self, normalized: &'a str) -> Vec<(&'a str, u32)> {
        #[derive(Clone, Copy)]
        struct Symbol {
            prev: Option<usize>,
            next: Option<usize>,
            freeze: bool,
            start: usize,
            len: usize,
        }
        struct Pair {
            score: f32,
            left: usize,
            right: usize,
            size: usize,
        }
        impl PartialEq for Pair {
            fn eq(&self, o: &Self) -> bool {
                self.cmp(o) == std::cmp::Ordering::Equal
            }
        }
        impl Eq for Pair {}
        impl PartialOrd for Pair {
            fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Pair {
            // max-heap: higher score first, then the leftmost pair (C++ float `<`, so
            // -0.0 == 0.0)
            fn cmp(&self, o: &Self) -> std::cmp::Ordering {
                self.score
                    .partial_cmp(&o.score)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(o.left.cmp(&self.left))
            }
        }

        let bytes = normalized.as_bytes();
        let mut symbols: Vec<Symbol> = Vec::with_capacity(bytes.len());
        let mut pos = 0;
        while pos < bytes.len() {
            let (len, freeze) = self.matcher.prefix_match(&bytes[pos..]);
            let index = symbols.len();
            symbols.push(Symbol {
                prev: index.checked_sub(1),
                next: if pos + len < bytes.len() {
                    Some(index + 1)
                } else {
                    None
                },
                freeze,
                start: pos,
                len,
            });
            pos += len;
        }
        if symbols.is_empty() {
            return Vec::new();
        }
        let mut agenda: BinaryHeap<Pair> = BinaryHeap::new();
        let mut rev_merge: HashMap<&'a str, (&'a str, &'a str)> = HashMap::new();
        let maybe_add = |symbols: &[Symbol],
                         agenda: &mut BinaryHeap<Pair>,
                         rev_merge: &mut HashMap<&'a str, (&'a str, &'a str)>,
                         left: Option<usize>,
                         right: Option<usize>| {
            let (Some(l), Some(r)) = (left, right) else {
                return;
            };
            let (sl, sr) = (symbols[l], symbols[r]);
            if sl.freeze || sr.freeze {
                return;
            }
            let piece = &normalized[sl.start..sl.start + sl.len + sr.len];
            let Some(&id) = self.piece_ids.get(piece) else {
                return;
            };
            let p = &self.pieces[id as usize];
            agenda.push(Pair {
                score: p.score,
                left: l,
                right: r,
                size: piece.len(),
            });
            if p.kind == PieceKind::Unused {
                rev_merge.insert(
                    piece,
                    (
                        &normalized[sl.start..sl.start + sl.len],
                        &normalized[sr.start..sr.start + sr.len],
                    ),
                );
            }
        };
        for i in 1..symbols.len() {
            maybe_add(&symbols, &mut agenda, &mut rev_merge, Some(i - 1), Some(i));
        }
        while let Some(top) = agenda.pop() {
            let (l, r) = (symbols[top.left], symbols[top.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != top.size {
                continue;
            }
            symbols[top.left].len += r.len;
            symbols[top.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(top.left);
            }
            symbols[top.right].len = 0;
            let prev = symbols[top.left].prev;
            let next = symbols[top.left].next;
            maybe_add(&symbols, &mut agenda, &mut rev_merge, prev, Some(top.left));
            maybe_add(&symbols, &mut agenda, &mut rev_merge, Some(top.left), next);
        }
        let mut out = Vec::new();
        let mut index = Some(0);
        while let Some(i) = index {
            let s = symbols[i];
            self.resegment(&normalized[s.start..s.start + s.len], &rev_merge, &mut out);
            index = s.next;
        }
        out
    }

    fn resegment<'a>(
        &self,
        w: &'a str,
        rev_merge: &HashMap<&'a str, (&'a str, &'a str)>,
        out: &mut Vec<(&'a str, u32)>,
    ) {
        let id = self.piece_to_id(w);
        if self.kind(id) != PieceKind::Unused {
            out.push((w, id));
            return;
        }
        match rev_merge.get(w) {
            None => out.push((w, id)),
            Some(&(a, b)) => {
                self.resegment(a, rev_merge, out);
                self.resegment(b, rev_merge, out);
            }
        }
    }

    /// `DecodePieces`: the text of a sequence of pieces.
    pub fn decode_pieces<S: AsRef<str>>(&self, pieces: &[S]) -> String {
        let spec = &self.normalizer.spec;
        let mut text = String::new();
        let mut is_bos_ws = true;
        let mut bos_ws_seen = false;
        let mut bytes: Vec<u8> = Vec::new();
        let flush_bytes = |bytes: &mut Vec<u8>, text: &mut String| {
            if bytes.is_empty() {
                return;
            }
            // each valid UTF-8 char as is, each invalid byte as U+FFFD
            let mut rest: &[u8] = bytes;
            while !rest.is_empty() {
                match std::str::from_utf8(rest) {
                    Ok(s) => {
                        text.push_str(s);
                        break;
                    }
                    Err(e) => {
                        let good = e.valid_up_to();
                        text.push_str(std::str::from_utf8(&rest[..good]).unwrap_or(""));
                        text.push('\u{fffd}');
                        rest = &rest[good + 1..];
                    }
                }
            }
            bytes.clear();
        };
        for piece in pieces {
            let piece = piece.as_ref();
            let id = self.piece_to_id(piece);
            let kind = self.kind(id);
            if kind == PieceKind::Byte {
                if let Some(b) = piece_to_byte(piece) {
                    bytes.push(b);
                }
                continue;
            }
            flush_bytes(&mut bytes, &mut text);
            if bos_ws_seen || !text.is_empty() {
                is_bos_ws = false;
            }
            let (decoded, seen) = match kind {
                PieceKind::Control => (String::new(), false),
                PieceKind::Unknown => {
                    if self.id_to_piece(id) == Some(piece) {
                        (self.unk_surface.clone(), false)
                    } else {
                        (piece.to_string(), false)
                    }
                }
                _ => {
                    let mut p = piece;
                    let mut has_bos_ws = false;
                    if is_bos_ws && (spec.add_dummy_prefix || spec.remove_extra_whitespaces) {
                        if let Some(rest) = p.strip_prefix(SPACE_SYMBOL) {
                            p = rest;
                            has_bos_ws = true;
                        }
                        if spec.remove_extra_whitespaces {
                            has_bos_ws = false;
                        }
                    }
                    (p.replace(SPACE_SYMBOL, " "), has_bos_ws)
                }
            };
            bos_ws_seen = seen;
            text.push_str(&decoded);
        }
        flush_bytes(&mut bytes, &mut text);
        match &self.denormalizer {
            Some(d) => d.normalize(&text, None),
            None => text,
        }
    }
}

fn byte_piece(b: u8) -> String {
    format!("<0x{b:02X}>")
}

fn piece_to_byte(p: &str) -> Option<u8> {
    let hex = p.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_and_truncation() {
        let mut r = Reader::new(&[0x96, 0x01]);
        assert_eq!(r.varint().unwrap(), 150);
        let mut r = Reader::new(&[0x96]);
        assert!(r.varint().is_err());
        assert!(SpModel::from_bytes(b"\x0a\xff\x01abc").is_err());
        assert!(SpModel::from_bytes(b"").is_err());
    }

    #[test]
    fn byte_pieces() {
        assert_eq!(byte_piece(0x0a), "<0x0A>");
        assert_eq!(piece_to_byte("<0x0A>"), Some(10));
        assert_eq!(piece_to_byte("<0x0A"), None);
    }
}
