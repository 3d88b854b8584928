//! ROUGE with the semantics of Google's `rouge-score` package (0.1.2):
//! `rouge_scorer.RougeScorer(types, use_stemmer)` per example and
//! `scoring.BootstrapAggregator` for confidence intervals.
//!
//! * Tokenizer ([`RougeTokenizer::Default`]): lowercase (Python `str.lower`), every
//!   character outside `[a-z0-9]` becomes a separator, tokens longer than 3 characters
//!   are Porter-stemmed (NLTK's stemmer, [`crate::porter`]) when stemming is on.
//!   Text in other scripts therefore yields no tokens (CJK scores 0, as in
//!   rouge-score). [`RougeTokenizer::Unicode`] is our extension for such text.
//! * rougeN: clipped n-gram overlap; precision over the hypothesis' n-grams, recall
//!   over the reference's; F = 2PR/(P+R).
//! * rougeL: longest common subsequence of the two token sequences.
//! * rougeLsum: summary-level LCS over newline-separated sentences (`_summary_level_lcs`
//!   with `_union_lcs` and its token-count clipping). With `split_sentences`, both
//!   texts first go through `"\n".join(nltk.sent_tokenize(text))`
//!   ([`crate::sentence_split`]), as the `transformers` summarization examples do.
//! * Aggregates: the mean over examples; with bootstrap, the 2.5/50/97.5 percentiles of
//!   `n_samples` resampled means, drawn exactly as numpy does after
//!   `np.random.seed(seed)` (see [`Mt19937`]), so intervals equal rouge-score's bit for
//!   bit when it is seeded the same way.
//!
//! Speed: tokens are interned to dense per-example `u32` ids through a per-thread
//! vocabulary (each distinct word is stemmed once per thread), n-grams are counted with
//! arrays or sorted keys, LCS is bit-parallel (64 columns per word operation, and the
//! exact table cells for rouge-score's backtrack are recovered from the bit rows),
//! examples run in parallel (rayon). Results do not depend on thread count or order.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;
use unicode_segmentation::UnicodeSegmentation;

use crate::error::{EvalError, Result};
use crate::porter;
use crate::sentence_split;

/// One ROUGE variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RougeType {
    /// rougeN: n-gram overlap (`rouge1`, `rouge2`, ...).
    N(usize),
    /// rougeL: sentence-level LCS over the whole text.
    L,
    /// rougeLsum: summary-level LCS over newline-separated sentences.
    Lsum,
}

/// Names accepted by [`RougeType::parse`], for error messages and `--help`.
pub const VALID_TYPES: &str = "rouge1, rouge2, ..., rougeN (N >= 1), rougeL, rougeLsum";

impl RougeType {
    /// Parses `rouge1`.. `rougeN`, `rougeL`, `rougeLsum` (case-sensitive, as
    /// rouge-score).
    pub fn parse(name: &str) -> Result<RougeType> {
        let unknown = || EvalError::Unknown {
            what: "rouge type",
            name: name.to_string(),
            valid: VALID_TYPES.to_string(),
        };
        match name {
            "rougeL" => Ok(RougeType::L),
            "rougeLsum" => Ok(RougeType::Lsum),
            _ => {
                let digits = name.strip_prefix("rouge").ok_or_else(unknown)?;
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(unknown());
                }
                match digits.parse::<usize>() {
                    Ok(n) if n >= 1 => Ok(RougeType::N(n)),
                    _ => Err(unknown()),
                }
            }
        }
    }

    /// The rouge-score name (`rouge1`, `rougeL`, `rougeLsum`).
    pub fn name(&self) -> String {
        match self {
            RougeType::N(n) => format!("rouge{n}"),
            RougeType::L => "rougeL".to_string(),
            RougeType::Lsum => "rougeLsum".to_string(),
        }
    }
}

impl std::fmt::Display for RougeType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl std::str::FromStr for RougeType {
    type Err = EvalError;
    fn from_str(s: &str) -> Result<RougeType> {
        RougeType::parse(s)
    }
}

/// Parses a comma-separated list such as `rouge1,rouge2,rougeL,rougeLsum`.
pub fn parse_types(list: &str) -> Result<Vec<RougeType>> {
    let types: Vec<RougeType> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(RougeType::parse)
        .collect::<Result<_>>()?;
    if types.is_empty() {
        return Err(EvalError::Invalid(format!(
            "no rouge type given (valid: {VALID_TYPES})"
        )));
    }
    Ok(types)
}

/// The four types everyone reports.
pub fn default_types() -> Vec<RougeType> {
    vec![
        RougeType::N(1),
        RougeType::N(2),
        RougeType::L,
        RougeType::Lsum,
    ]
}

/// How text becomes tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RougeTokenizer {
    /// rouge-score's `DefaultTokenizer`: lowercase, keep `[a-z0-9]+` runs.
    #[default]
    Default,
    /// Our extension: lowercase, split at Unicode (UAX #29) word boundaries and at
    /// non-alphanumeric characters, keep alphanumeric words in any script (CJK
    /// ideographs become one token each). On ASCII text it gives exactly the tokens
    /// of `Default`; stemming applies to ASCII tokens only.
    Unicode,
}

impl RougeTokenizer {
    pub fn name(&self) -> &'static str {
        match self {
            RougeTokenizer::Default => "default",
            RougeTokenizer::Unicode => "unicode",
        }
    }

    /// Parses `default` or `unicode`.
    pub fn parse(name: &str) -> Result<RougeTokenizer> {
        match name {
            "default" => Ok(RougeTokenizer::Default),
            "unicode" => Ok(RougeTokenizer::Unicode),
            _ => Err(EvalError::Unknown {
                what: "rouge tokenizer",
                name: name.to_string(),
                valid: "default, unicode".to_string(),
            }),
        }
    }
}

/// Bootstrap resampling settings (rouge-score's `BootstrapAggregator`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BootstrapConfig {
    /// Number of resampled corpora (rouge-score default 1000).
    pub n_samples: usize,
    /// Width of the interval (default 0.95: the 2.5th and 97.5th percentiles).
    pub confidence: f64,
    /// Seed of numpy's legacy global RNG: intervals equal rouge-score's after
    /// `np.random.seed(seed)`.
    pub seed: u32,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            n_samples: 1000,
            confidence: 0.95,
            seed: 0,
        }
    }
}

/// What to compute.
#[derive(Clone, Debug, PartialEq)]
pub struct RougeConfig {
    pub types: Vec<RougeType>,
    /// Porter-stem tokens longer than 3 characters (rouge-score `use_stemmer`).
    pub use_stemmer: bool,
    /// Split both texts into sentences with NLTK's Punkt before rougeLsum.
    pub split_sentences: bool,
    pub tokenizer: RougeTokenizer,
    pub bootstrap: Option<BootstrapConfig>,
}

impl Default for RougeConfig {
    fn default() -> Self {
        RougeConfig {
            types: default_types(),
            use_stemmer: true,
            split_sentences: false,
            tokenizer: RougeTokenizer::Default,
            bootstrap: None,
        }
    }
}

/// Precision, recall and F-measure, in 0..1 (rouge-score's `Score`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Score {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

impl Score {
    const ZERO: Score = Score {
        precision: 0.0,
        recall: 0.0,
        fmeasure: 0.0,
    };

    fn from_pr(precision: f64, recall: f64) -> Score {
        Score {
            precision,
            recall,
            fmeasure: fmeasure(precision, recall),
        }
    }

    fn percent(&self) -> Score {
        Score {
            precision: self.precision * 100.0,
            recall: self.recall * 100.0,
            fmeasure: self.fmeasure * 100.0,
        }
    }
}

/// `scoring.fmeasure`.
pub fn fmeasure(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

/// Bootstrap interval of one type (0..1): low/high bounds and the median (`mid`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Interval {
    pub low: Score,
    pub mid: Score,
    pub high: Score,
}

/// Corpus result of one type.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeResult {
    pub rouge_type: RougeType,
    /// Mean over examples (0..1).
    pub mean: Score,
    pub interval: Option<Interval>,
}

/// Corpus result: aggregates per type and the per-example scores.
#[derive(Clone, Debug, PartialEq)]
pub struct RougeResult {
    pub config: RougeConfig,
    pub n_examples: usize,
    /// In `config.types` order.
    pub types: Vec<TypeResult>,
    /// `per_example[i][t]`: example `i`, type `config.types[t]`.
    pub per_example: Vec<Vec<Score>>,
}

impl RougeResult {
    /// The result of one type, by name (`"rouge1"`, `"rougeLsum"`).
    pub fn get(&self, name: &str) -> Option<&TypeResult> {
        self.types.iter().find(|t| t.rouge_type.name() == name)
    }

    /// DESIGN.md's JSON: `{"metric":"rouge","rouge1":{"precision":..,"recall":..,
    /// "fmeasure":..},...}` in percent (means over examples); with bootstrap each type
    /// also has `"low"`, `"mid"` (rouge-score's reported median) and `"high"`, each a
    /// precision/recall/fmeasure object. `"settings"` records how it was computed.
    pub fn to_json(&self) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        obj.insert("metric".into(), "rouge".into());
        for t in &self.types {
            let mut v = serde_json::to_value(t.mean.percent()).unwrap_or_default();
            if let (Some(iv), Some(map)) = (&t.interval, v.as_object_mut()) {
                for (k, s) in [("low", iv.low), ("mid", iv.mid), ("high", iv.high)] {
                    map.insert(
                        k.into(),
                        serde_json::to_value(s.percent()).unwrap_or_default(),
                    );
                }
            }
            obj.insert(t.rouge_type.name(), v);
        }
        let c = &self.config;
        let mut settings = serde_json::json!({
            "n_examples": self.n_examples,
            "use_stemmer": c.use_stemmer,
            "split_sentences": c.split_sentences,
            "tokenizer": c.tokenizer.name(),
        });
        if let (Some(b), Some(map)) = (&c.bootstrap, settings.as_object_mut()) {
            map.insert(
                "bootstrap".into(),
                serde_json::json!({"n_samples": b.n_samples, "confidence": b.confidence,
                                   "seed": b.seed}),
            );
        }
        obj.insert("settings".into(), settings);
        serde_json::Value::Object(obj)
    }

    /// A small table in percent, two decimals.
    pub fn to_text(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "ROUGE (rouge-score semantics) n={} stemmer={} split_sentences={} tokenizer={}",
            self.n_examples,
            if c.use_stemmer { "on" } else { "off" },
            if c.split_sentences { "on" } else { "off" },
            c.tokenizer.name()
        );
        let boot = c.bootstrap.is_some();
        let _ = write!(
            s,
            "{:<10} {:>9} {:>9} {:>9}",
            "type", "precision", "recall", "fmeasure"
        );
        if let Some(b) = &c.bootstrap {
            let _ = write!(
                s,
                "   F {:.0}% interval (low mid high; {} samples, seed {})",
                b.confidence * 100.0,
                b.n_samples,
                b.seed
            );
        }
        s.push('\n');
        for t in &self.types {
            let m = t.mean.percent();
            let _ = write!(
                s,
                "{:<10} {:>9.2} {:>9.2} {:>9.2}",
                t.rouge_type.name(),
                m.precision,
                m.recall,
                m.fmeasure
            );
            if let (true, Some(iv)) = (boot, &t.interval) {
                let _ = write!(
                    s,
                    "   {:.2} {:.2} {:.2}",
                    iv.low.fmeasure * 100.0,
                    iv.mid.fmeasure * 100.0,
                    iv.high.fmeasure * 100.0
                );
            }
            s.push('\n');
        }
        s
    }
}

// ---------------------------------------------------------------------------
// Scorer
// ---------------------------------------------------------------------------

/// Scores pairs and corpora with one configuration.
#[derive(Clone, Debug)]
pub struct RougeScorer {
    config: RougeConfig,
    has_lsum: bool,
}

impl RougeScorer {
    /// Checks the configuration (at least one type, sane bootstrap settings).
    pub fn new(config: RougeConfig) -> Result<RougeScorer> {
        if config.types.is_empty() {
            return Err(EvalError::Invalid(format!(
                "no rouge type given (valid: {VALID_TYPES})"
            )));
        }
        if let Some(b) = &config.bootstrap {
            if b.n_samples == 0 {
                return Err(EvalError::Invalid(
                    "bootstrap n_samples must be positive".into(),
                ));
            }
            if !(0.0..=1.0).contains(&b.confidence) {
                return Err(EvalError::Invalid(format!(
                    "bootstrap confidence must be in [0, 1], got {}",
                    b.confidence
                )));
            }
        }
        let has_lsum = config.types.contains(&RougeType::Lsum);
        Ok(RougeScorer { config, has_lsum })
    }

    pub fn config(&self) -> &RougeConfig {
        &self.config
    }

    /// rouge-score's `scorer.score(target=reference, prediction=hypothesis)`: one
    /// [`Score`] per configured type, in order.
    pub fn score(&self, hypothesis: &str, reference: &str) -> Vec<Score> {
        with_scratch(|sc| self.score_with(hypothesis, reference, sc))
    }

    fn score_with(&self, hyp: &str, refr: &str, sc: &mut Scratch) -> Vec<Score> {
        // Sentence splitting only changes where rougeLsum's sentences break; the
        // token sequence is the same (breaks fall after punctuation), so the other
        // types need not pay for it.
        let split = self.config.split_sentences && self.has_lsum;
        let (hyp_split, ref_split);
        let (hyp, refr) = if split {
            hyp_split = sentence_split::split_for_rouge(hyp);
            ref_split = sentence_split::split_for_rouge(refr);
            (hyp_split.as_str(), ref_split.as_str())
        } else {
            (hyp, refr)
        };
        sc.begin_example();
        let h = sc.tokenize(hyp, &self.config);
        let r = sc.tokenize(refr, &self.config);
        let vocab = sc.vocab_size();
        self.config
            .types
            .iter()
            .map(|t| match *t {
                RougeType::N(n) => score_ngrams(&h.ids, &r.ids, n, vocab, sc),
                RougeType::L => score_lcs(&h.ids, &r.ids, vocab, &mut sc.lcs),
                RougeType::Lsum => score_summary_lcs(&h, &r, vocab, sc),
            })
            .collect()
    }

    /// Scores `hyps[i]` against `refs[i]` for every i (in parallel) and aggregates.
    pub fn score_corpus<S: AsRef<str> + Sync>(
        &self,
        hyps: &[S],
        refs: &[S],
    ) -> Result<RougeResult> {
        if hyps.len() != refs.len() {
            return Err(EvalError::ExampleCountMismatch {
                hyp: hyps.len(),
                reference: refs.len(),
            });
        }
        if hyps.is_empty() {
            return Err(EvalError::Invalid("no examples to score".into()));
        }
        let per_example: Vec<Vec<Score>> = hyps
            .par_iter()
            .zip(refs.par_iter())
            .map(|(h, r)| with_scratch(|sc| self.score_with(h.as_ref(), r.as_ref(), sc)))
            .collect();
        Ok(self.aggregate(per_example))
    }

    /// Means (and bootstrap intervals) of per-example scores `[example][type]`.
    pub fn aggregate(&self, per_example: Vec<Vec<Score>>) -> RougeResult {
        let n = per_example.len();
        let mut rng = self.config.bootstrap.map(|b| Mt19937::new(b.seed));
        let types = self
            .config
            .types
            .iter()
            .enumerate()
            .map(|(t, &rouge_type)| {
                // Sequential sums in example order: the reference sums the same way.
                let mut sum = [0.0f64; 3];
                for ex in &per_example {
                    let s = ex[t];
                    sum[0] += s.precision;
                    sum[1] += s.recall;
                    sum[2] += s.fmeasure;
                }
                let nf = n as f64;
                let mean = Score {
                    precision: sum[0] / nf,
                    recall: sum[1] / nf,
                    fmeasure: sum[2] / nf,
                };
                // rouge-score draws the types one after the other from one global RNG,
                // in the order the types were given.
                let interval = match (&self.config.bootstrap, rng.as_mut()) {
                    (Some(b), Some(rng)) => {
                        let col: Vec<Score> = per_example.iter().map(|ex| ex[t]).collect();
                        Some(bootstrap_interval(&col, b, rng))
                    }
                    _ => None,
                };
                TypeResult {
                    rouge_type,
                    mean,
                    interval,
                }
            })
            .collect();
        RougeResult {
            config: self.config.clone(),
            n_examples: n,
            types,
            per_example,
        }
    }
}

/// Scores a corpus: `hyps[i]` against `refs[i]`.
pub fn score_corpus<S: AsRef<str> + Sync>(
    config: &RougeConfig,
    hyps: &[S],
    refs: &[S],
) -> Result<RougeResult> {
    RougeScorer::new(config.clone())?.score_corpus(hyps, refs)
}

/// Scores one pair: one [`Score`] per configured type.
pub fn score_pair(config: &RougeConfig, hypothesis: &str, reference: &str) -> Result<Vec<Score>> {
    Ok(RougeScorer::new(config.clone())?.score(hypothesis, reference))
}

// ---------------------------------------------------------------------------
// Tokenization and interning
// ---------------------------------------------------------------------------

/// FxHash-style hasher: token keys are short, SipHash would dominate.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // Fx leaves the low bits (hashbrown's bucket index) poorly mixed: finish with
        // MurmurHash3's fmix64.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Tokens of one text: dense per-example ids and sentence ends (rougeLsum).
struct Tokens {
    ids: Vec<u32>,
    /// End offsets (exclusive) into `ids` of each newline-separated sentence.
    sent_ends: Vec<usize>,
}

impl Tokens {
    fn sentences(&self) -> impl Iterator<Item = &[u32]> {
        let mut start = 0;
        self.sent_ends.iter().map(move |&e| {
            let s = &self.ids[start..e];
            start = e;
            s
        })
    }
}

/// Open-addressing map from tokens of at most 16 bytes, packed into a `u128` key, to
/// `u32`: one cache line per lookup instead of a bucket, a heap string and a memcmp
/// (the per-thread vocabulary outgrows the caches, so misses dominate scoring).
#[derive(Default)]
struct ShortMap {
    /// `(key, value)`; key 0 marks an empty slot (tokens never contain NUL).
    slots: Vec<(u128, u32)>,
    len: usize,
}

impl ShortMap {
    fn pack(tok: &str) -> Option<u128> {
        let b = tok.as_bytes();
        if b.is_empty() || b.len() > 16 {
            return None;
        }
        let mut buf = [0u8; 16];
        buf[..b.len()].copy_from_slice(b);
        Some(u128::from_le_bytes(buf))
    }

    #[inline]
    fn slot(&self, key: u128) -> usize {
        let mut h = (key as u64) ^ ((key >> 64) as u64).rotate_left(29);
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        (h as usize) & (self.slots.len() - 1)
    }

    fn get(&self, key: u128) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.slot(key);
        loop {
            let (k, v) = self.slots[i];
            if k == key {
                return Some(v);
            }
            if k == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    fn insert(&mut self, key: u128, val: u32) {
        if 2 * (self.len + 1) > self.slots.len() {
            let old = std::mem::take(&mut self.slots);
            self.slots = vec![(0, 0); (old.len() * 2).max(1024)];
            self.len = 0;
            for (k, v) in old {
                if k != 0 {
                    self.insert(k, v);
                }
            }
        }
        let mask = self.slots.len() - 1;
        let mut i = self.slot(key);
        while self.slots[i].0 != 0 && self.slots[i].0 != key {
            i = (i + 1) & mask;
        }
        if self.slots[i].0 == 0 {
            self.len += 1;
        }
        self.slots[i] = (key, val);
    }
}

/// Surface token -> value, short tokens inline, long ones in a hash map.
#[derive(Default)]
struct TokenMap {
    short: ShortMap,
    long: FxMap<Box<str>, u32>,
}

impl TokenMap {
    fn get(&self, tok: &str) -> Option<u32> {
        match ShortMap::pack(tok) {
            Some(k) => self.short.get(k),
            None => self.long.get(tok).copied(),
        }
    }

    fn insert(&mut self, tok: &str, val: u32) {
        match ShortMap::pack(tok) {
            Some(k) => self.short.insert(k, val),
            None => {
                self.long.insert(tok.into(), val);
            }
        }
    }
}

/// Entries of the per-thread vocabulary before it is dropped (bounds memory on
/// adversarial input; CNN/DM has about 90k distinct words).
const MAX_THREAD_VOCAB: usize = 4 << 20;

/// Global id of a surface token that rouge-score drops (empty after stemming).
const DROPPED: u32 = u32::MAX;

/// Per-thread state, reused across examples and calls.
#[derive(Default)]
struct Scratch {
    /// Surface token -> global id of its final token, one map per stemming mode
    /// (`[off, on]`), so every word is stemmed once per thread.
    surface: [TokenMap; 2],
    /// Final token -> global id.
    finals: TokenMap,
    n_finals: usize,
    /// Dense per-example ids: `local[g]` is valid while `stamp[g] == generation`.
    local: Vec<u32>,
    stamp: Vec<u32>,
    generation: u32,
    n_local: u32,
    cur: String,
    lower: String,
    counts: Vec<i32>,
    counts2: Vec<i32>,
    keys_a: Vec<u64>,
    keys_b: Vec<u64>,
    lcs: BitLcs,
    in_union: Vec<bool>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch state.
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut sc) => f(&mut sc),
        // Only reachable if scoring re-entered itself on this thread.
        Err(_) => f(&mut Scratch::default()),
    })
}

impl Scratch {
    fn begin_example(&mut self) {
        if self.n_finals > MAX_THREAD_VOCAB {
            *self = Scratch::default();
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamp.fill(0);
            self.generation = 1;
        }
        self.n_local = 0;
    }

    /// Number of distinct ids in the current example.
    fn vocab_size(&self) -> usize {
        self.n_local as usize
    }

    fn tokenize(&mut self, text: &str, config: &RougeConfig) -> Tokens {
        let mut out = Tokens {
            ids: Vec::new(),
            sent_ends: Vec::new(),
        };
        match config.tokenizer {
            RougeTokenizer::Default => self.tokenize_default(text, config.use_stemmer, &mut out),
            RougeTokenizer::Unicode => self.tokenize_unicode(text, config.use_stemmer, &mut out),
        }
        out.sent_ends.push(out.ids.len());
        out
    }

    /// `tokenize.tokenize(text, stemmer)`: `text.lower()`, `[^a-z0-9]+` -> space,
    /// split, stem tokens longer than 3 characters. A newline also ends a sentence.
    fn tokenize_default(&mut self, text: &str, stem: bool, out: &mut Tokens) {
        let mut cur = std::mem::take(&mut self.cur);
        cur.clear();
        for c in text.chars() {
            if c.is_ascii() {
                if c.is_ascii_alphanumeric() {
                    cur.push(c.to_ascii_lowercase());
                } else {
                    self.flush(&mut cur, stem, out);
                    if c == '\n' {
                        out.sent_ends.push(out.ids.len());
                    }
                }
            } else {
                // Python lowercases first: 'İ' -> "i̇" and the Kelvin sign -> 'k' give
                // ASCII letters; every other non-ASCII character is a separator.
                for l in c.to_lowercase() {
                    if l.is_ascii_alphanumeric() {
                        cur.push(l);
                    } else {
                        self.flush(&mut cur, stem, out);
                    }
                }
            }
        }
        self.flush(&mut cur, stem, out);
        self.cur = cur;
    }

    /// The Unicode tokenizer: per line, lowercase, UAX #29 words, split at graphemes
    /// whose first character is not alphanumeric.
    fn tokenize_unicode(&mut self, text: &str, stem: bool, out: &mut Tokens) {
        let mut cur = std::mem::take(&mut self.cur);
        let mut lower = std::mem::take(&mut self.lower);
        for (k, line) in text.split('\n').enumerate() {
            if k > 0 {
                out.sent_ends.push(out.ids.len());
            }
            lower.clear();
            lower.push_str(&line.to_lowercase());
            for word in lower.unicode_words() {
                cur.clear();
                for g in word.graphemes(true) {
                    if g.chars().next().is_some_and(char::is_alphanumeric) {
                        cur.push_str(g);
                    } else {
                        self.flush(&mut cur, stem, out);
                    }
                }
                self.flush(&mut cur, stem, out);
            }
        }
        self.cur = cur;
        self.lower = lower;
    }

    /// Ends the current token and appends its dense id.
    fn flush(&mut self, cur: &mut String, stem: bool, out: &mut Tokens) {
        if cur.is_empty() {
            return;
        }
        let g = self.global_id(cur, stem);
        cur.clear();
        if g == DROPPED {
            return;
        }
        let g = g as usize;
        if g >= self.stamp.len() {
            let n = (g + 1).max(self.stamp.len() * 2);
            self.stamp.resize(n, 0);
            self.local.resize(n, 0);
        }
        if self.stamp[g] != self.generation {
            self.stamp[g] = self.generation;
            self.local[g] = self.n_local;
            self.n_local += 1;
        }
        out.ids.push(self.local[g]);
    }

    /// Global id of the final form of `surface`: Porter-stemmed when stemming is on
    /// and it is longer than 3 characters (ASCII only: rouge-score's tokens are).
    fn global_id(&mut self, surface: &str, stem: bool) -> u32 {
        let mode = usize::from(stem);
        if let Some(g) = self.surface[mode].get(surface) {
            return g;
        }
        let stemmed;
        let fin = if stem && surface.is_ascii() && surface.len() > 3 {
            stemmed = porter::stem(surface);
            stemmed.as_str()
        } else {
            surface
        };
        // rouge-score drops tokens that are not `^[a-z0-9]+$` after stemming.
        let g = if fin.is_empty() {
            DROPPED
        } else if let Some(g) = self.finals.get(fin) {
            g
        } else {
            let g = self.n_finals as u32;
            self.n_finals += 1;
            self.finals.insert(fin, g);
            g
        };
        self.surface[mode].insert(surface, g);
        g
    }
}

// ---------------------------------------------------------------------------
// Scores
// ---------------------------------------------------------------------------

/// `_score_ngrams(_create_ngrams(ref, n), _create_ngrams(hyp, n))`.
fn score_ngrams(hyp: &[u32], refr: &[u32], n: usize, vocab: usize, sc: &mut Scratch) -> Score {
    let hyp_count = (hyp.len() + 1).saturating_sub(n);
    let ref_count = (refr.len() + 1).saturating_sub(n);
    let overlap = if hyp_count == 0 || ref_count == 0 {
        0
    } else if n == 1 {
        // Dense ids: clip with a count array.
        let counts = &mut sc.counts;
        counts.clear();
        counts.resize(vocab, 0);
        for &t in refr {
            counts[t as usize] += 1;
        }
        let mut overlap = 0usize;
        for &t in hyp {
            let c = &mut counts[t as usize];
            if *c > 0 {
                *c -= 1;
                overlap += 1;
            }
        }
        overlap
    } else if n == 2 {
        let key = |w: &[u32]| (u64::from(w[0]) << 32) | u64::from(w[1]);
        let (a, b) = (&mut sc.keys_a, &mut sc.keys_b);
        a.clear();
        a.extend(hyp.windows(2).map(key));
        b.clear();
        b.extend(refr.windows(2).map(key));
        a.sort_unstable();
        b.sort_unstable();
        sorted_overlap(a, b)
    } else {
        let mut a: Vec<&[u32]> = hyp.windows(n).collect();
        let mut b: Vec<&[u32]> = refr.windows(n).collect();
        a.sort_unstable();
        b.sort_unstable();
        sorted_overlap(&a, &b)
    };
    Score::from_pr(
        overlap as f64 / hyp_count.max(1) as f64,
        overlap as f64 / ref_count.max(1) as f64,
    )
}

/// Sum over distinct keys of min(count in a, count in b); both sorted.
fn sorted_overlap<T: Ord>(a: &[T], b: &[T]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

/// Bit-parallel LCS (Allison & Dix 1986, Hyyrö 2004): the DP row over `cols` is kept
/// as a bit vector whose bit j is 0 exactly where `t[i][j+1] = t[i][j] + 1`, so a
/// whole row costs a few word operations per 64 columns, and any cell of the table is
/// `t[i][j] = j - popcount(V_i & (2^j - 1))`. Used for the LCS length and, keeping
/// every row, for rouge-score's backtrack.
#[derive(Default)]
struct BitLcs {
    /// `masks[t * w + k]`: bits of the positions of token `t` in `cols`; all zero
    /// between calls.
    masks: Vec<u64>,
    rows: Vec<u64>,
}

impl BitLcs {
    fn set_masks(&mut self, cols: &[u32], w: usize, vocab: usize) {
        if self.masks.len() < vocab * w {
            self.masks.resize(vocab * w, 0);
        }
        for (j, &t) in cols.iter().enumerate() {
            self.masks[t as usize * w + j / 64] |= 1u64 << (j % 64);
        }
    }

    fn clear_masks(&mut self, cols: &[u32], w: usize) {
        for &t in cols {
            let t = t as usize * w;
            self.masks[t..t + w].fill(0);
        }
    }

    /// `V' = (V + (V & M)) | (V & !M)` with the carry running across words.
    #[inline]
    fn step(v: &mut [u64], m: &[u64]) {
        let mut carry = false;
        for (vk, &mk) in v.iter_mut().zip(m) {
            let x = *vk;
            let (s1, c1) = x.overflowing_add(x & mk);
            let (s2, c2) = s1.overflowing_add(u64::from(carry));
            carry = c1 || c2;
            *vk = s2 | (x & !mk);
        }
    }

    /// Number of 1 bits of `v` below bit `j`.
    #[inline]
    fn ones_below(v: &[u64], j: usize) -> usize {
        let full: usize = v[..j / 64].iter().map(|x| x.count_ones() as usize).sum();
        let rem = j % 64;
        if rem == 0 {
            full
        } else {
            full + (v[j / 64] & ((1u64 << rem) - 1)).count_ones() as usize
        }
    }

    /// LCS length of `a` and `b` (ids below `vocab`).
    fn len(&mut self, a: &[u32], b: &[u32], vocab: usize) -> usize {
        // Rows over one sequence, bits over the other: pick the cheaper layout.
        let cost = |rows: &[u32], cols: &[u32]| rows.len() * cols.len().div_ceil(64);
        let (rows, cols) = if cost(a, b) <= cost(b, a) {
            (a, b)
        } else {
            (b, a)
        };
        if rows.is_empty() || cols.is_empty() {
            return 0;
        }
        let w = cols.len().div_ceil(64);
        self.set_masks(cols, w, vocab);
        let mut v = std::mem::take(&mut self.rows);
        v.clear();
        v.resize(w, !0);
        for &x in rows {
            let t = x as usize * w;
            Self::step(&mut v, &self.masks[t..t + w]);
        }
        self.clear_masks(cols, w);
        let lcs = cols.len() - Self::ones_below(&v, cols.len());
        self.rows = v;
        lcs
    }

    /// `lcs_ind(r, c)`: marks the indices of `r` on the LCS that rouge-score's
    /// `_backtrack_norec` reads out of the full table (ties go to `i -= 1`).
    fn mark(&mut self, r: &[u32], c: &[u32], vocab: usize, mark: &mut [bool]) {
        let w = c.len().div_ceil(64);
        self.set_masks(c, w, vocab);
        let mut rows = std::mem::take(&mut self.rows);
        rows.clear();
        rows.resize((r.len() + 1) * w, !0);
        for (i, &x) in r.iter().enumerate() {
            let (prev, next) = rows.split_at_mut((i + 1) * w);
            let next = &mut next[..w];
            next.copy_from_slice(&prev[i * w..]);
            let t = x as usize * w;
            Self::step(next, &self.masks[t..t + w]);
        }
        self.clear_masks(c, w);
        let cell = |i: usize, j: usize| j - Self::ones_below(&rows[i * w..(i + 1) * w], j);
        let (mut i, mut j) = (r.len(), c.len());
        while i > 0 && j > 0 {
            if r[i - 1] == c[j - 1] {
                mark[i - 1] = true;
                i -= 1;
                j -= 1;
            } else if cell(i, j - 1) > cell(i - 1, j) {
                j -= 1;
            } else {
                i -= 1;
            }
        }
        self.rows = rows;
    }
}

/// `_score_lcs`: rougeL.
fn score_lcs(hyp: &[u32], refr: &[u32], vocab: usize, lcs: &mut BitLcs) -> Score {
    if hyp.is_empty() || refr.is_empty() {
        return Score::ZERO;
    }
    let l = lcs.len(hyp, refr, vocab) as f64;
    Score::from_pr(l / hyp.len() as f64, l / refr.len() as f64)
}

/// `_summary_level_lcs`: rougeLsum.
fn score_summary_lcs(hyp: &Tokens, refr: &Tokens, vocab: usize, sc: &mut Scratch) -> Score {
    let (m, n) = (refr.ids.len(), hyp.ids.len());
    if m == 0 || n == 0 {
        return Score::ZERO;
    }
    let nonempty = |t: &Tokens| t.sentences().filter(|s| !s.is_empty()).count();
    if nonempty(refr) == 1 && nonempty(hyp) == 1 {
        // One sentence each: the union is one LCS, whose tokens never exceed either
        // side's counts, so hits = LCS length and the score is rougeL's.
        return score_lcs(&hyp.ids, &refr.ids, vocab, &mut sc.lcs);
    }
    // Token counts prevent double counting across reference sentences.
    let (cnt_r, cnt_c) = (&mut sc.counts, &mut sc.counts2);
    cnt_r.clear();
    cnt_r.resize(vocab, 0);
    cnt_c.clear();
    cnt_c.resize(vocab, 0);
    for &t in &refr.ids {
        cnt_r[t as usize] += 1;
    }
    for &t in &hyp.ids {
        cnt_c[t as usize] += 1;
    }
    let mut hits = 0usize;
    for r in refr.sentences() {
        if r.is_empty() {
            continue;
        }
        sc.in_union.clear();
        sc.in_union.resize(r.len(), false);
        for c in hyp.sentences() {
            if !c.is_empty() {
                sc.lcs.mark(r, c, vocab, &mut sc.in_union);
            }
        }
        // The union in index order.
        for (i, _) in sc.in_union.iter().enumerate().filter(|(_, &u)| u) {
            let t = r[i] as usize;
            if cnt_c[t] > 0 && cnt_r[t] > 0 {
                hits += 1;
                cnt_c[t] -= 1;
                cnt_r[t] -= 1;
            }
        }
    }
    Score::from_pr(hits as f64 / n as f64, hits as f64 / m as f64)
}

// ---------------------------------------------------------------------------
// Bootstrap: numpy's legacy RandomState, bit for bit
// ---------------------------------------------------------------------------

/// MT19937 as numpy's legacy `RandomState` uses it. `np.random.seed(s)` for an integer
/// `s` runs `mt19937_seed` (Matsumoto & Nishimura's `init_genrand`); every 32-bit
/// draw is `genrand_int32`.
pub struct Mt19937 {
    mt: [u32; 624],
    idx: usize,
}

impl Mt19937 {
    pub fn new(seed: u32) -> Mt19937 {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { mt, idx: 624 }
    }

    fn generate(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        for k in 0..624 {
            let y = (self.mt[k] & UPPER) | (self.mt[(k + 1) % 624] & LOWER);
            let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
            self.mt[k] = self.mt[(k + 397) % 624] ^ (y >> 1) ^ mag;
        }
        self.idx = 0;
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.idx >= 624 {
            self.generate();
        }
        let mut y = self.mt[self.idx];
        self.idx += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `np.random.randint(0, high)` element by element (legacy path, int64 dtype):
    /// for a range below 2^32 numpy draws 32-bit words, masks them to the smallest
    /// all-ones mask covering `high - 1` and rejects values above it
    /// (`buffered_bounded_masked_uint32`); a range of one value draws nothing.
    pub fn randint(&mut self, high: u32) -> u32 {
        let rng = high.saturating_sub(1);
        if rng == 0 {
            return 0;
        }
        let mut mask = rng;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        loop {
            let v = self.next_u32() & mask;
            if v <= rng {
                return v;
            }
        }
    }
}

/// `BootstrapAggregator._bootstrap_resample` for one type: `n_samples` times
/// `np.random.choice(n, size=n)` (= `randint(0, n, n)`), the mean of the chosen rows
/// (numpy sums axis 0 of a C-ordered matrix row after row), then
/// `np.percentile(means, [2.5, 50, 97.5], axis=0)` with linear interpolation.
fn bootstrap_interval(scores: &[Score], cfg: &BootstrapConfig, rng: &mut Mt19937) -> Interval {
    let n = scores.len();
    let mut means: [Vec<f64>; 3] = [
        Vec::with_capacity(cfg.n_samples),
        Vec::with_capacity(cfg.n_samples),
        Vec::with_capacity(cfg.n_samples),
    ];
    let high = u32::try_from(n).unwrap_or(u32::MAX);
    for _ in 0..cfg.n_samples {
        let mut sum = [0.0f64; 3];
        for _ in 0..n {
            let s = scores[rng.randint(high) as usize];
            sum[0] += s.precision;
            sum[1] += s.recall;
            sum[2] += s.fmeasure;
        }
        for k in 0..3 {
            means[k].push(sum[k] / n as f64);
        }
    }
    for m in &mut means {
        m.sort_unstable_by(f64::total_cmp);
    }
    let delta = (1.0 - cfg.confidence) / 2.0;
    let q = [100.0 * delta, 100.0 * 0.5, 100.0 * (1.0 - delta)];
    let pick = |qi: usize| Score {
        precision: percentile(&means[0], q[qi]),
        recall: percentile(&means[1], q[qi]),
        fmeasure: percentile(&means[2], q[qi]),
    };
    Interval {
        low: pick(0),
        mid: pick(1),
        high: pick(2),
    }
}

/// `np.percentile(sorted, q)`, method "linear", as numpy computes it
/// (`_quantile` + `_lerp`).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let quantile = q / 100.0;
    let virtual_index = (n - 1) as f64 * quantile;
    if virtual_index >= (n - 1) as f64 {
        return sorted[n - 1];
    }
    if virtual_index < 0.0 {
        return sorted[0];
    }
    let prev = virtual_index.floor();
    let gamma = virtual_index - prev;
    let (a, b) = (sorted[prev as usize], sorted[prev as usize + 1]);
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    }
}

// ---------------------------------------------------------------------------
// SimCLS on CNN/DM
// ---------------------------------------------------------------------------

/// ROUGE F-measures (percent, stemming on) of the SimCLS CNN/DM test outputs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimclsRouge {
    pub n_examples: usize,
    pub rouge1: f64,
    pub rouge2: f64,
    /// Sentence-level LCS over the whole summary (rouge-score's rougeL).
    pub rouge_l: f64,
    /// Summary-level LCS after `nltk.sent_tokenize` (rouge-score's rougeLsum, the
    /// transformers recipe): what papers call ROUGE-L on CNN/DM (ROUGE-1.5.5 with
    /// one sentence per line).
    pub rouge_lsum: f64,
}

/// Scores `cnndm/outputs/simcls.cnndm.test.hypo.lower.tok` against
/// `simcls.cnndm.test.ref.lower.tok` under `data_dir` (the shared data root, e.g.
/// `../shared/data`). Published (ROUGE-1.5.5): 46.67 / 22.15 / 43.54; rouge-score
/// gives slightly different numbers (its own tokenizer and stemmer).
pub fn simcls_rows(data_dir: &Path) -> Result<SimclsRouge> {
    let dir = data_dir.join("cnndm").join("outputs");
    let hyps = read_lines(&dir.join("simcls.cnndm.test.hypo.lower.tok"))?;
    let refs = read_lines(&dir.join("simcls.cnndm.test.ref.lower.tok"))?;
    let config = RougeConfig {
        split_sentences: true,
        ..RougeConfig::default()
    };
    let res = score_corpus(&config, &hyps, &refs)?;
    let f = |name: &str| res.get(name).map_or(0.0, |t| t.mean.fmeasure * 100.0);
    Ok(SimclsRouge {
        n_examples: res.n_examples,
        rouge1: f("rouge1"),
        rouge2: f("rouge2"),
        rouge_l: f("rougeL"),
        rouge_lsum: f("rougeLsum"),
    })
}

/// One example per line (split on `\n`, one trailing `\r` dropped). Kept private and
/// minimal: the CLI reads files through `crate::io`.
fn read_lines(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        EvalError::InvalidUtf8 {
            path: path.to_path_buf(),
            line,
        }
    })?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    if text.is_empty() {
        return Ok(Vec::new());
    }
    Ok(text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(p: f64, r: f64) -> Score {
        Score::from_pr(p, r)
    }

    #[test]
    fn parse() {
        assert_eq!(RougeType::parse("rouge1").ok(), Some(RougeType::N(1)));
        assert_eq!(RougeType::parse("rouge12").ok(), Some(RougeType::N(12)));
        assert_eq!(RougeType::parse("rougeLsum").ok(), Some(RougeType::Lsum));
        for bad in ["rouge0", "rouge", "rougel", "bleu", "rouge-1", "rouge+1"] {
            let err = RougeType::parse(bad).unwrap_err().to_string();
            assert!(err.contains("rougeLsum"), "{err}");
        }
        assert_eq!(
            parse_types("rouge1, rougeL").ok(),
            Some(vec![RougeType::N(1), RougeType::L])
        );
    }

    #[test]
    fn basic_scores() {
        let sc = RougeScorer::new(RougeConfig::default()).unwrap();
        let r = sc.score("the cat sat", "the cat sat on the mat");
        assert_eq!(r[0], s(1.0, 0.5));
        assert_eq!(r[1], s(1.0, 0.4));
        assert_eq!(r[2], s(1.0, 0.5));
        let r = sc.score("", "x");
        assert!(r.iter().all(|x| *x == Score::ZERO));
    }

    /// rouge-score's `_lcs_table` + `_backtrack_norec`, literally.
    fn naive_lcs(r: &[u32], c: &[u32]) -> (usize, Vec<usize>) {
        let (rows, cols) = (r.len(), c.len());
        let mut t = vec![vec![0usize; cols + 1]; rows + 1];
        for i in 1..=rows {
            for j in 1..=cols {
                t[i][j] = if r[i - 1] == c[j - 1] {
                    t[i - 1][j - 1] + 1
                } else {
                    t[i - 1][j].max(t[i][j - 1])
                };
            }
        }
        let (mut i, mut j, mut ind) = (rows, cols, Vec::new());
        while i > 0 && j > 0 {
            if r[i - 1] == c[j - 1] {
                ind.insert(0, i - 1);
                i -= 1;
                j -= 1;
            } else if t[i][j - 1] > t[i - 1][j] {
                j -= 1;
            } else {
                i -= 1;
            }
        }
        (t[rows][cols], ind)
    }

    #[test]
    fn bit_lcs_equals_table_lcs() {
        let mut lcs = BitLcs::default();
        let mut rng = Mt19937::new(7);
        for case in 0..3000 {
            let vocab = 1 + rng.randint(if case % 2 == 0 { 4 } else { 30 }) as usize;
            let la = rng.randint(150) as usize;
            let lb = rng.randint(150) as usize;
            let a: Vec<u32> = (0..la).map(|_| rng.randint(vocab as u32)).collect();
            let b: Vec<u32> = (0..lb).map(|_| rng.randint(vocab as u32)).collect();
            let (len, ind) = naive_lcs(&a, &b);
            assert_eq!(lcs.len(&a, &b, vocab), len, "{a:?} {b:?}");
            let mut mark = vec![false; a.len()];
            if !b.is_empty() {
                lcs.mark(&a, &b, vocab, &mut mark);
            }
            let got: Vec<usize> = (0..a.len()).filter(|&i| mark[i]).collect();
            assert_eq!(got, ind, "{a:?} {b:?}");
        }
        assert!(lcs.masks.iter().all(|&m| m == 0));
    }

    #[test]
    fn mt19937_reference() {
        // First outputs of init_genrand(5489), the reference implementation's default.
        let mut mt = Mt19937::new(5489);
        assert_eq!(mt.next_u32(), 3_499_211_612);
        assert_eq!(mt.next_u32(), 581_869_302);
    }

    #[test]
    fn count_mismatch() {
        let err = score_corpus(&RougeConfig::default(), &["a"], &["a", "b"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains('1') && msg.contains('2'), "{msg}");
    }
}
