//! chrF and chrF++ with sacreBLEU 2.x semantics, digit for digit.
//!
//! Per segment and per reference: for each character order 1..=char_order (and word
//! order 1..=word_order for chrF++) the triple [hyp n-grams, ref n-grams, matches];
//! the reference with the best segment F-score (first on ties) supplies the
//! segment's statistics; corpus statistics are their integer sums, so the parallel
//! reduction is exact. Characters and words are interned per segment and n-grams
//! packed into integers (10-bit character lanes in a `u64`, or 21-bit code points in
//! a `u128` for segments with over 1,023 distinct characters); one sort per side
//! yields the counts of every order (see `prefix_ngram_counts`).

use std::borrow::Cow;
use std::fmt;

use rayon::prelude::*;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use crate::bleu::{check_parallel, FxMap, SACREBLEU_VERSION};
use crate::bleu_tokenize::{py_is_space, py_split};
use crate::error::{EvalError, Result};

const PARALLEL_MIN_SEGMENTS: usize = 256;

/// chrF options; `Default` is sacreBLEU's chrF (`ChrfConfig::plus_plus()` is chrF++).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChrfConfig {
    /// Character n-gram order (sacreBLEU default 6).
    pub char_order: usize,
    /// Word n-gram order: 0 for chrF, 2 for chrF++.
    pub word_order: usize,
    /// Recall weight (default 2).
    pub beta: u32,
    pub lowercase: bool,
    /// Keep whitespace inside character n-grams (default off).
    pub whitespace: bool,
    /// chrF++.py-style epsilon smoothing instead of effective order (default off).
    pub eps_smoothing: bool,
}

impl Default for ChrfConfig {
    fn default() -> Self {
        ChrfConfig {
            char_order: 6,
            word_order: 0,
            beta: 2,
            lowercase: false,
            whitespace: false,
            eps_smoothing: false,
        }
    }
}

impl ChrfConfig {
    /// chrF++ (word order 2).
    pub fn plus_plus() -> Self {
        ChrfConfig {
            word_order: 2,
            ..ChrfConfig::default()
        }
    }

    /// sacreBLEU's signature, e.g. `nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0`.
    pub fn signature(&self, nrefs: usize) -> String {
        format!(
            "nrefs:{nrefs}|case:{}|eff:{}|nc:{}|nw:{}|space:{}|version:{SACREBLEU_VERSION}",
            if self.lowercase { "lc" } else { "mixed" },
            if self.eps_smoothing { "no" } else { "yes" },
            self.char_order,
            self.word_order,
            if self.whitespace { "yes" } else { "no" },
        )
    }

    /// The score's name: `chrF2`, `chrF2++`.
    pub fn name(&self) -> String {
        format!("chrF{}{}", self.beta, "+".repeat(self.word_order))
    }

    fn order(&self) -> usize {
        self.char_order + self.word_order
    }

    fn validate(&self) -> Result<()> {
        if self.char_order == 0 && self.word_order == 0 {
            return Err(EvalError::Invalid(
                "chrF needs a character or word order above 0".into(),
            ));
        }
        Ok(())
    }

    /// sacreBLEU's `CHRF._compute_f_score` over a flat [hyp, ref, match] * order list.
    pub fn f_score(&self, stats: &[u64]) -> f64 {
        let eps = 1e-16;
        let factor = f64::from(self.beta * self.beta);
        let mut score = 0.0f64;
        let mut effective_order = 0u32;
        let (mut avg_prec, mut avg_rec) = (0.0f64, 0.0f64);
        for t in stats.chunks_exact(3) {
            let (n_hyp, n_ref, n_match) = (t[0], t[1], t[2]);
            let prec = if n_hyp > 0 {
                n_match as f64 / n_hyp as f64
            } else {
                eps
            };
            let rec = if n_ref > 0 {
                n_match as f64 / n_ref as f64
            } else {
                eps
            };
            let denom = factor * prec + rec;
            score += if denom > 0.0 {
                (1.0 + factor) * prec * rec / denom
            } else {
                eps
            };
            if n_hyp > 0 && n_ref > 0 {
                avg_prec += prec;
                avg_rec += rec;
                effective_order += 1;
            }
        }
        if self.eps_smoothing {
            return 100.0 * score / self.order() as f64;
        }
        if effective_order == 0 {
            avg_prec = 0.0;
            avg_rec = 0.0;
        } else {
            avg_prec /= f64::from(effective_order);
            avg_rec /= f64::from(effective_order);
        }
        if avg_prec + avg_rec != 0.0 {
            let mut s = (1.0 + factor) * avg_prec * avg_rec;
            s /= factor * avg_prec + avg_rec;
            100.0 * s
        } else {
            0.0
        }
    }
}

/// A chrF / chrF++ result.
#[derive(Clone, Debug, PartialEq)]
pub struct ChrfScore {
    pub score: f64,
    pub char_order: usize,
    pub word_order: usize,
    pub beta: u32,
    /// Summed [hyp, ref, match] triples, character orders first.
    pub stats: Vec<u64>,
    pub signature: String,
}

impl ChrfScore {
    /// `chrF2`, `chrF2++`.
    pub fn name(&self) -> String {
        format!("chrF{}{}", self.beta, "+".repeat(self.word_order))
    }

    /// sacreBLEU's text form, e.g. `chrF2 = 60.65`.
    pub fn format_text(&self) -> String {
        format!("{} = {:.2}", self.name(), self.score)
    }
}

impl fmt::Display for ChrfScore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format_text())
    }
}

impl Serialize for ChrfScore {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("ChrfScore", 3)?;
        st.serialize_field("metric", "chrf")?;
        st.serialize_field("score", &self.score)?;
        st.serialize_field("signature", &self.signature)?;
        st.end()
    }
}

/// ASCII punctuation (Python's `string.punctuation`), split off words by chrF++.
#[inline]
fn is_punct(c: char) -> bool {
    c.is_ascii_punctuation()
}

/// sacreBLEU's `_remove_punctuation`: one leading or trailing ASCII punctuation
/// mark becomes a word of its own (the trailing one wins).
fn words_of(sent: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for w in py_split(sent) {
        let mut it = w.chars();
        let (first, last) = match (it.next(), it.next_back()) {
            (Some(f), Some(l)) => (f, l),
            _ => {
                // One character.
                out.push(w);
                continue;
            }
        };
        if is_punct(last) {
            let cut = w.len() - last.len_utf8();
            out.push(&w[..cut]);
            out.push(&w[cut..]);
        } else if is_punct(first) {
            let cut = first.len_utf8();
            out.push(&w[..cut]);
            out.push(&w[cut..]);
        } else {
            out.push(w);
        }
    }
    out
}

/// Sorted (n-gram, count) lists, one per order.
type Counts<K> = Vec<Vec<(K, u32)>>;

/// An integer n-gram key made of fixed-width lanes, the first token in the highest
/// lane used. Ids start at 1, so a zero lane means "past the end of the text".
trait PackedKey: Copy + Ord + Default {
    /// `self | id << shift`.
    fn or_top(self, shift: u32, id: u32) -> Self;
    fn shr(self, s: u32) -> Self;
    fn low_lane_is_zero(self, bits: u32) -> bool;
}

impl PackedKey for u64 {
    #[inline]
    fn or_top(self, shift: u32, id: u32) -> u64 {
        self | (u64::from(id) << shift)
    }
    #[inline]
    fn shr(self, s: u32) -> u64 {
        self >> s
    }
    #[inline]
    fn low_lane_is_zero(self, bits: u32) -> bool {
        self & ((1u64 << bits) - 1) == 0
    }
}

impl PackedKey for u128 {
    #[inline]
    fn or_top(self, shift: u32, id: u32) -> u128 {
        self | (u128::from(id) << shift)
    }
    #[inline]
    fn shr(self, s: u32) -> u128 {
        self >> s
    }
    #[inline]
    fn low_lane_is_zero(self, bits: u32) -> bool {
        self & ((1u128 << bits) - 1) == 0
    }
}

/// Sorted (n-gram, count) lists for every order 1..=lanes of `ids`, from a single
/// sort: each position's `lanes`-long window (zero-padded past the end) is a key,
/// and sorting the windows keeps the n-grams that share a prefix contiguous for
/// every n, so each order is one linear pass over the sorted keys.
fn prefix_ngram_counts<K: PackedKey>(ids: &[u32], lanes: usize, bits: u32) -> Counts<K> {
    if lanes == 0 {
        return Vec::new();
    }
    // Windows built back to front: each is the next one shifted down a lane with
    // its own first id on top, so no window is assembled from scratch.
    let mut keys: Vec<K> = vec![K::default(); ids.len()];
    let top = bits * (lanes as u32 - 1);
    let mut k = K::default();
    for i in (0..ids.len()).rev() {
        k = k.shr(bits).or_top(top, ids[i]);
        keys[i] = k;
    }
    keys.sort_unstable();
    (1..=lanes)
        .map(|n| {
            let shift = bits * (lanes - n) as u32;
            let mut out: Vec<(K, u32)> = Vec::with_capacity(keys.len());
            for &k in &keys {
                let p = k.shr(shift);
                // The window is shorter than n here: no n-gram starts at it.
                if p.low_lane_is_zero(bits) {
                    continue;
                }
                match out.last_mut() {
                    Some((lk, c)) if *lk == p => *c += 1,
                    _ => out.push((p, 1)),
                }
            }
            out
        })
        .collect()
}

/// Sorts `keys` and writes (key, count) runs to `out`.
fn run_length<K: Ord + Copy>(keys: &mut [K], out: &mut Vec<(K, u32)>) {
    keys.sort_unstable();
    out.clear();
    for &k in keys.iter() {
        match out.last_mut() {
            Some((lk, c)) if *lk == k => *c += 1,
            _ => out.push((k, 1)),
        }
    }
}

/// Counts of n-grams of orders `lo..=hi` over `items`, keyed by slices (orders too
/// long to pack into an integer; rare).
fn slice_ngram_counts<T: Ord>(items: &[T], lo: usize, hi: usize) -> Counts<&[T]> {
    (lo..=hi)
        .map(|n| {
            let mut ks: Vec<&[T]> = items.windows(n).collect();
            let mut counts = Vec::with_capacity(ks.len());
            run_length(&mut ks, &mut counts);
            counts
        })
        .collect()
}

/// sacreBLEU's `_get_match_statistics` over sorted count lists.
fn match_stats<K: Ord>(hyp: &[(K, u32)], rf: &[(K, u32)]) -> [u64; 3] {
    let hyp_count: u64 = hyp.iter().map(|&(_, c)| u64::from(c)).sum();
    let ref_count: u64 = rf.iter().map(|&(_, c)| u64::from(c)).sum();
    let mut matches = 0u64;
    let mut j = 0;
    for (k, c) in hyp {
        while j < rf.len() && rf[j].0 < *k {
            j += 1;
        }
        if j < rf.len() && rf[j].0 == *k {
            matches += u64::from((*c).min(rf[j].1));
        }
    }
    // No hypothesis count when the reference has no n-gram of this order.
    [
        if rf.is_empty() { 0 } else { hyp_count },
        ref_count,
        matches,
    ]
}

fn extend_stats<K: Ord>(stats: &mut Vec<u64>, hyp: &[Vec<(K, u32)>], rf: &[Vec<(K, u32)>]) {
    for (h, r) in hyp.iter().zip(rf) {
        stats.extend_from_slice(&match_stats(h, r));
    }
}

/// Bits per character lane: 10 bits (6 lanes in a u64) when a segment has at most
/// 1,023 distinct characters after interning, else raw code points in 21 bits.
const NARROW_BITS: u32 = 10;
const WIDE_BITS: u32 = 21;
/// Longest character order packed into an integer key.
const MAX_PACKED_CHAR_ORDER: usize = 6;
/// Longest word order packed into a u128 (32-bit lanes).
const MAX_PACKED_WORD_ORDER: usize = 4;

/// Characters that enter character n-grams: all of them, or sacreBLEU's
/// `''.join(line.split())` (no whitespace).
fn kept_chars<'a>(s: &'a str, cfg: &ChrfConfig) -> impl Iterator<Item = char> + 'a {
    let keep_space = cfg.whitespace;
    s.chars().filter(move |&c| keep_space || !py_is_space(c))
}

/// Per-segment character ids: ASCII maps to itself + 1, other characters are
/// interned from 129 up. `None` if the segment needs more than 10 bits.
fn narrow_char_ids(texts: &[&str], cfg: &ChrfConfig) -> Option<Vec<Vec<u32>>> {
    let mut map: FxMap<char, u32> = FxMap::default();
    let limit = (1u32 << NARROW_BITS) - 1;
    let mut out = Vec::with_capacity(texts.len());
    for t in texts {
        let mut ids = Vec::with_capacity(t.len());
        for c in kept_chars(t, cfg) {
            let id = if c.is_ascii() {
                c as u32 + 1
            } else {
                let next = 129 + map.len() as u32;
                *map.entry(c).or_insert(next)
            };
            if id > limit {
                return None;
            }
            ids.push(id);
        }
        out.push(ids);
    }
    Some(out)
}

fn wide_char_ids(texts: &[&str], cfg: &ChrfConfig) -> Vec<Vec<u32>> {
    texts
        .iter()
        .map(|t| kept_chars(t, cfg).map(|c| c as u32 + 1).collect())
        .collect()
}

/// Statistics of one segment: those of the reference with the best F-score.
/// `texts[0]` is the hypothesis, the rest its references (already lowercased).
fn segment_stats_impl(hyp: &str, refs: &[&str], cfg: &ChrfConfig) -> Vec<u64> {
    let hyp_s = lower(hyp, cfg);
    let refs_s: Vec<Cow<str>> = refs.iter().map(|r| lower(r, cfg)).collect();
    let mut texts: Vec<&str> = Vec::with_capacity(1 + refs.len());
    texts.push(&hyp_s);
    texts.extend(refs_s.iter().map(|r| r.as_ref()));

    let lanes = cfg.char_order.min(MAX_PACKED_CHAR_ORDER);
    let per_side_chars: Vec<CharCounts> = match narrow_char_ids(&texts, cfg) {
        Some(ids) => ids
            .iter()
            .map(|i| CharCounts::Narrow(prefix_ngram_counts(i, lanes, NARROW_BITS)))
            .collect(),
        None => wide_char_ids(&texts, cfg)
            .iter()
            .map(|i| CharCounts::Wide(prefix_ngram_counts(i, lanes, WIDE_BITS)))
            .collect(),
    };
    // Character orders beyond 6 (rare): string slices of the kept text.
    let long_texts: Vec<Vec<char>> = if cfg.char_order > MAX_PACKED_CHAR_ORDER {
        texts.iter().map(|t| kept_chars(t, cfg).collect()).collect()
    } else {
        Vec::new()
    };
    let long: Vec<Counts<&[char]>> = long_texts
        .iter()
        .map(|t| slice_ngram_counts(t, MAX_PACKED_CHAR_ORDER + 1, cfg.char_order))
        .collect();

    // Word ids for chrF++, interned over the whole segment.
    let mut vocab: FxMap<&str, u32> = FxMap::default();
    let word_ids: Vec<Vec<u32>> = if cfg.word_order > 0 {
        texts.iter().map(|t| intern(t, &mut vocab)).collect()
    } else {
        Vec::new()
    };
    let words: Vec<WordCounts> = word_ids
        .iter()
        .map(|ids| {
            if cfg.word_order <= MAX_PACKED_WORD_ORDER {
                WordCounts::Packed(prefix_ngram_counts(ids, cfg.word_order, 32))
            } else {
                WordCounts::Slices(slice_ngram_counts(ids, 1, cfg.word_order))
            }
        })
        .collect();

    let mut best: Vec<u64> = Vec::new();
    let mut best_f = -1.0f64;
    for r in 1..texts.len() {
        let mut stats = Vec::with_capacity(3 * cfg.order());
        match (&per_side_chars[0], &per_side_chars[r]) {
            (CharCounts::Narrow(h), CharCounts::Narrow(x)) => extend_stats(&mut stats, h, x),
            (CharCounts::Wide(h), CharCounts::Wide(x)) => extend_stats(&mut stats, h, x),
            // Every side of a segment uses the same width.
            _ => {}
        }
        if !long.is_empty() {
            extend_stats(&mut stats, &long[0], &long[r]);
        }
        if !words.is_empty() {
            match (&words[0], &words[r]) {
                (WordCounts::Packed(h), WordCounts::Packed(x)) => extend_stats(&mut stats, h, x),
                (WordCounts::Slices(h), WordCounts::Slices(x)) => extend_stats(&mut stats, h, x),
                _ => {}
            }
        }
        let f = cfg.f_score(&stats);
        if f > best_f {
            best_f = f;
            best = stats;
        }
    }
    best
}

/// Character n-gram counts of one side, per order.
enum CharCounts {
    Narrow(Counts<u64>),
    Wide(Counts<u128>),
}

/// Word n-gram counts of one side, per order.
enum WordCounts<'a> {
    Packed(Counts<u128>),
    Slices(Counts<&'a [u32]>),
}

fn lower<'a>(s: &'a str, cfg: &ChrfConfig) -> Cow<'a, str> {
    if cfg.lowercase {
        Cow::Owned(s.to_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

fn intern<'a>(s: &'a str, vocab: &mut FxMap<&'a str, u32>) -> Vec<u32> {
    let words = words_of(s);
    vocab.reserve(words.len());
    words
        .into_iter()
        .map(|w| {
            let next = vocab.len() as u32 + 1;
            *vocab.entry(w).or_insert(next)
        })
        .collect()
}

/// Statistics of one segment against its references (flat [hyp, ref, match] list).
pub fn segment_stats(hyp: &str, refs: &[&str], cfg: &ChrfConfig) -> Vec<u64> {
    segment_stats_impl(hyp, refs, cfg)
}

/// Per-segment statistics of a corpus; `refs` holds one `Vec` per reference set.
pub fn corpus_segment_stats<H, R>(
    hyps: &[H],
    refs: &[Vec<R>],
    cfg: &ChrfConfig,
) -> Result<Vec<Vec<u64>>>
where
    H: AsRef<str> + Sync,
    R: AsRef<str> + Sync,
{
    cfg.validate()?;
    check_parallel(hyps, refs)?;
    let one = |i: usize| {
        let rs: Vec<&str> = refs.iter().map(|r| r[i].as_ref()).collect();
        segment_stats_impl(hyps[i].as_ref(), &rs, cfg)
    };
    Ok(if hyps.len() >= PARALLEL_MIN_SEGMENTS {
        (0..hyps.len()).into_par_iter().map(one).collect()
    } else {
        (0..hyps.len()).map(one).collect()
    })
}

fn score_from_stats(stats: Vec<u64>, cfg: &ChrfConfig, nrefs: usize) -> ChrfScore {
    ChrfScore {
        score: cfg.f_score(&stats),
        char_order: cfg.char_order,
        word_order: cfg.word_order,
        beta: cfg.beta,
        stats,
        signature: cfg.signature(nrefs),
    }
}

/// Corpus chrF / chrF++ as sacreBLEU's `CHRF(...).corpus_score(hyps, refs)`.
pub fn corpus_chrf<H, R>(hyps: &[H], refs: &[Vec<R>], cfg: &ChrfConfig) -> Result<ChrfScore>
where
    H: AsRef<str> + Sync,
    R: AsRef<str> + Sync,
{
    let per_seg = corpus_segment_stats(hyps, refs, cfg)?;
    let mut total = vec![0u64; 3 * cfg.order()];
    for s in &per_seg {
        for (t, v) in total.iter_mut().zip(s) {
            *t += v;
        }
    }
    Ok(score_from_stats(total, cfg, refs.len()))
}

/// Sentence chrF as sacreBLEU's `sentence_score`.
pub fn sentence_chrf(hyp: &str, refs: &[&str], cfg: &ChrfConfig) -> Result<ChrfScore> {
    cfg.validate()?;
    if refs.is_empty() {
        return Err(EvalError::Invalid("no references given".into()));
    }
    Ok(score_from_stats(
        segment_stats_impl(hyp, refs, cfg),
        cfg,
        refs.len(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_split() {
        assert_eq!(
            words_of("(hi) a, .x y"),
            vec!["(hi", ")", "a", ",", ".", "x", "y"]
        );
    }

    #[test]
    fn names_and_signature() {
        let c = ChrfConfig::plus_plus();
        assert_eq!(c.name(), "chrF2++");
        assert_eq!(
            ChrfConfig::default().signature(1),
            format!("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:{SACREBLEU_VERSION}")
        );
    }

    #[test]
    fn narrow_and_wide_keys_agree() {
        let cfg = ChrfConfig::default();
        let texts = ["„Grüße“ aus Köln, 2024!", "Grüße aus Köln – 2024."];
        let narrow = narrow_char_ids(&texts, &cfg).unwrap_or_default();
        let wide = wide_char_ids(&texts, &cfg);
        let n: Vec<Counts<u64>> = narrow
            .iter()
            .map(|i| prefix_ngram_counts(i, 6, NARROW_BITS))
            .collect();
        let w: Vec<Counts<u128>> = wide
            .iter()
            .map(|i| prefix_ngram_counts(i, 6, WIDE_BITS))
            .collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        extend_stats(&mut a, &n[0], &n[1]);
        extend_stats(&mut b, &w[0], &w[1]);
        assert_eq!(a.len(), 18);
        assert_eq!(a, b);
        // Orders 1..6 from one sort equal the windows counted one order at a time.
        let chars: Vec<char> = texts[0].chars().filter(|c| !c.is_whitespace()).collect();
        for (order, counts) in slice_ngram_counts(&chars, 1, 6).iter().enumerate() {
            let total: u32 = counts.iter().map(|c| c.1).sum();
            let packed: u32 = n[0][order].iter().map(|c| c.1).sum();
            assert_eq!((total, counts.len()), (packed, n[0][order].len()));
        }
    }

    #[test]
    fn many_distinct_characters_use_wide_keys() {
        let hyp: String = (0x4e00u32..0x4e00 + 1100)
            .filter_map(char::from_u32)
            .collect();
        let rf: String = hyp.chars().rev().collect();
        assert!(narrow_char_ids(&[&hyp, &rf], &ChrfConfig::default()).is_none());
        let s = sentence_chrf(&hyp, &[&rf], &ChrfConfig::default()).map(|s| s.stats);
        // Unigrams all match, no longer n-gram does.
        assert_eq!(
            s.ok().map(|v| v[..6].to_vec()),
            Some(vec![1100, 1100, 1100, 1099, 1099, 0])
        );
    }

    #[test]
    fn word_only_and_long_orders() {
        // char_order 0 (words only) and orders beyond the packed limits.
        let cfg = ChrfConfig {
            char_order: 0,
            word_order: 2,
            ..ChrfConfig::default()
        };
        let s = sentence_chrf("a b c", &["a b d"], &cfg).map(|s| s.stats);
        assert_eq!(s.ok(), Some(vec![3, 3, 2, 2, 2, 1]));
        let cfg = ChrfConfig {
            char_order: 8,
            word_order: 5,
            ..ChrfConfig::default()
        };
        let s = sentence_chrf("a b c d e f", &["a b c d e f"], &cfg).map(|s| s.score);
        assert!(s.is_ok_and(|v| (v - 100.0).abs() < 1e-9));
    }

    #[test]
    fn identical_is_100() {
        let s = sentence_chrf("Hello world!", &["Hello world!"], &ChrfConfig::plus_plus())
            .map(|s| s.score)
            .ok();
        assert_eq!(s, Some(100.0));
    }
}
