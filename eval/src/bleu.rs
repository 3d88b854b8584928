//! Corpus and sentence BLEU with sacreBLEU 2.x semantics, digit for digit.
//!
//! Per segment: BLEU lowercases (optionally), strips trailing whitespace, tokenizes,
//! splits on whitespace, and counts 1..4-grams; reference n-gram counts are the
//! maximum over references, the reference length is the one closest to the
//! hypothesis length (the shorter on ties). Corpus statistics are integer sums, so
//! the parallel reduction below is exact. Tokens are interned per segment and an
//! n-gram is a `u128` of up to four 32-bit token ids (ids start at 1, so n-grams of
//! different orders never share a key): no strings are built for n-grams.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rayon::prelude::*;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use crate::bleu_tokenize::{py_rstrip, py_split, BleuTokenizer};
use crate::error::{EvalError, Result};

/// The sacreBLEU release these metrics reproduce; it ends every signature.
pub const SACREBLEU_VERSION: &str = "2.6.0";

/// BLEU's maximum n-gram order.
pub const MAX_NGRAM_ORDER: usize = 4;

/// Corpora at least this long are scored on the rayon pool; shorter ones are not
/// worth the hand-off.
const PARALLEL_MIN_SEGMENTS: usize = 256;

/// A small, fast, non-cryptographic hasher (FxHash) for the per-segment interners.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Smoothing of zero n-gram precisions (Chen & Cherry 2014), as sacreBLEU names them.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Smooth {
    /// NIST geometric smoothing (sacreBLEU's default).
    #[default]
    Exp,
    /// Replace a zero match count by this value (default 0.1).
    Floor(f64),
    /// Add this value to matches and totals of orders 2..4 (default 1).
    AddK(f64),
    /// No smoothing.
    None,
}

impl Smooth {
    pub const NAMES: [&'static str; 4] = ["exp", "floor", "add-k", "none"];

    /// The method's name as on the sacreBLEU command line.
    pub fn name(&self) -> &'static str {
        match self {
            Smooth::Exp => "exp",
            Smooth::Floor(_) => "floor",
            Smooth::AddK(_) => "add-k",
            Smooth::None => "none",
        }
    }

    /// `name` with an optional value (`--smooth-value`); `None` takes sacreBLEU's
    /// default (floor 0.1, add-k 1). The value is ignored by `exp` and `none`.
    pub fn from_name(name: &str, value: Option<f64>) -> Result<Smooth> {
        match name {
            "exp" => Ok(Smooth::Exp),
            "floor" => Ok(Smooth::Floor(value.unwrap_or(0.1))),
            "add-k" => Ok(Smooth::AddK(value.unwrap_or(1.0))),
            "none" => Ok(Smooth::None),
            _ => Err(EvalError::Unknown {
                what: "smoothing method",
                name: name.to_string(),
                valid: Smooth::NAMES.join(", "),
            }),
        }
    }

    /// The signature part: `exp`, `floor[0.10]`, `add-k[1.00]`, `none`.
    pub fn signature(&self) -> String {
        match self {
            Smooth::Floor(v) | Smooth::AddK(v) => format!("{}[{v:.2}]", self.name()),
            _ => self.name().to_string(),
        }
    }
}

impl FromStr for Smooth {
    type Err = EvalError;

    fn from_str(s: &str) -> Result<Self> {
        Smooth::from_name(s, None)
    }
}

/// BLEU options, sacreBLEU's defaults via `Default` (corpus BLEU) and
/// `BleuConfig::sentence()` (sentence BLEU: effective order on).
#[derive(Clone, Debug, PartialEq)]
pub struct BleuConfig {
    pub tokenizer: BleuTokenizer,
    pub lowercase: bool,
    pub smooth: Smooth,
    /// Average only over the orders up to the highest with any hypothesis n-gram.
    pub effective_order: bool,
}

impl Default for BleuConfig {
    fn default() -> Self {
        BleuConfig {
            tokenizer: BleuTokenizer::Tok13a,
            lowercase: false,
            smooth: Smooth::Exp,
            effective_order: false,
        }
    }
}

impl BleuConfig {
    /// sacreBLEU's `sentence_bleu` defaults (13a, exp smoothing, effective order).
    pub fn sentence() -> Self {
        BleuConfig {
            effective_order: true,
            ..BleuConfig::default()
        }
    }

    /// sacreBLEU's signature, e.g. `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`.
    pub fn signature(&self, nrefs: usize) -> String {
        format!(
            "nrefs:{nrefs}|case:{}|eff:{}|tok:{}|smooth:{}|version:{SACREBLEU_VERSION}",
            if self.lowercase { "lc" } else { "mixed" },
            if self.effective_order { "yes" } else { "no" },
            self.tokenizer.name(),
            self.smooth.signature(),
        )
    }

    /// Lowercase (optionally), strip trailing whitespace and tokenize, as
    /// sacreBLEU's `BLEU._preprocess_segment`.
    pub fn preprocess(&self, line: &str) -> String {
        if self.lowercase {
            let lower = line.to_lowercase();
            self.tokenizer.tokenize(py_rstrip(&lower))
        } else {
            self.tokenizer.tokenize(py_rstrip(line))
        }
    }

    /// Same tokens as `preprocess`, skipping its whitespace normalization.
    fn prepare(&self, line: &str) -> String {
        if self.lowercase {
            let lower = line.to_lowercase();
            self.tokenizer.spaced(py_rstrip(&lower))
        } else {
            self.tokenizer.spaced(py_rstrip(line))
        }
    }
}

/// Sufficient statistics of BLEU; sums over segments give the corpus statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BleuStats {
    pub sys_len: u64,
    pub ref_len: u64,
    pub correct: [u64; MAX_NGRAM_ORDER],
    pub total: [u64; MAX_NGRAM_ORDER],
}

impl std::ops::AddAssign for BleuStats {
    fn add_assign(&mut self, o: BleuStats) {
        self.sys_len += o.sys_len;
        self.ref_len += o.ref_len;
        for n in 0..MAX_NGRAM_ORDER {
            self.correct[n] += o.correct[n];
            self.total[n] += o.total[n];
        }
    }
}

impl std::ops::Add for BleuStats {
    type Output = BleuStats;
    fn add(mut self, o: BleuStats) -> BleuStats {
        self += o;
        self
    }
}

/// A BLEU result. `counts`/`totals` are the raw n-gram statistics (before add-k).
#[derive(Clone, Debug, PartialEq)]
pub struct BleuScore {
    pub score: f64,
    pub counts: [u64; MAX_NGRAM_ORDER],
    pub totals: [u64; MAX_NGRAM_ORDER],
    pub precisions: [f64; MAX_NGRAM_ORDER],
    pub bp: f64,
    pub sys_len: u64,
    pub ref_len: u64,
    pub signature: String,
}

impl BleuScore {
    /// Hypothesis / reference length ratio (0 when the reference is empty).
    pub fn ratio(&self) -> f64 {
        if self.ref_len == 0 {
            0.0
        } else {
            self.sys_len as f64 / self.ref_len as f64
        }
    }

    /// sacreBLEU's text form, e.g.
    /// `BLEU = 27.31 60.5/33.7/21.0/13.9 (BP = 1.000 ratio = 1.001 hyp_len = 62 ref_len = 62)`.
    pub fn format_text(&self) -> String {
        let p = &self.precisions;
        format!(
            "BLEU = {:.2} {:.1}/{:.1}/{:.1}/{:.1} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            self.score,
            p[0],
            p[1],
            p[2],
            p[3],
            self.bp,
            self.ratio(),
            self.sys_len,
            self.ref_len
        )
    }
}

impl fmt::Display for BleuScore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format_text())
    }
}

impl Serialize for BleuScore {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("BleuScore", 7)?;
        st.serialize_field("metric", "bleu")?;
        st.serialize_field("score", &self.score)?;
        st.serialize_field("precisions", &self.precisions)?;
        st.serialize_field("bp", &self.bp)?;
        st.serialize_field("sys_len", &self.sys_len)?;
        st.serialize_field("ref_len", &self.ref_len)?;
        st.serialize_field("signature", &self.signature)?;
        st.end()
    }
}

/// sacreBLEU's `my_log`: log with log(0) floored to -9999999999.
#[inline]
fn my_log(x: f64) -> f64 {
    if x == 0.0 {
        -9_999_999_999.0
    } else {
        x.ln()
    }
}

/// BLEU from (corpus or segment) statistics, as sacreBLEU's `BLEU.compute_bleu`,
/// operation for operation so that every float rounds the same way.
pub fn compute_bleu(stats: &BleuStats, cfg: &BleuConfig, nrefs: usize) -> BleuScore {
    let (sys_len, ref_len) = (stats.sys_len, stats.ref_len);
    let mut bp = 1.0;
    if sys_len < ref_len {
        bp = if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        };
    }
    let mut precisions = [0.0f64; MAX_NGRAM_ORDER];
    let mut result = BleuScore {
        score: 0.0,
        counts: stats.correct,
        totals: stats.total,
        precisions,
        bp,
        sys_len,
        ref_len,
        signature: cfg.signature(nrefs),
    };
    // No match at any order: sacreBLEU returns 0 before smoothing.
    if stats.correct.iter().all(|&c| c == 0) {
        return result;
    }
    let mut smooth_mteval = 1.0f64;
    let mut eff_order = MAX_NGRAM_ORDER;
    for n in 1..=MAX_NGRAM_ORDER {
        let mut correct = stats.correct[n - 1] as f64;
        let mut total = stats.total[n - 1] as f64;
        if let Smooth::AddK(k) = cfg.smooth {
            if n > 1 {
                correct += k;
                total += k;
            }
        }
        if total == 0.0 {
            break;
        }
        if cfg.effective_order {
            eff_order = n;
        }
        if correct == 0.0 {
            match cfg.smooth {
                Smooth::Exp => {
                    smooth_mteval *= 2.0;
                    precisions[n - 1] = 100.0 / (smooth_mteval * total);
                }
                Smooth::Floor(v) => precisions[n - 1] = 100.0 * v / total,
                _ => {}
            }
        } else {
            precisions[n - 1] = 100.0 * correct / total;
        }
    }
    // Left-to-right sum, as Python's `sum` of a list.
    let mut log_sum = 0.0f64;
    for &p in &precisions[..eff_order] {
        log_sum += my_log(p);
    }
    result.score = bp * (log_sum / eff_order as f64).exp();
    result.precisions = precisions;
    result
}

/// An n-gram of up to four non-zero token ids packed into one integer; ids start
/// at 1, so n-grams of different orders never share a key.
trait NgramKey: Copy + Ord {
    /// Largest token id the key can hold.
    const MAX_ID: usize;
    fn pack(ids: &[u32]) -> Self;
    /// Order (1..=4) of a key.
    fn order(self) -> usize;
}

impl NgramKey for u64 {
    const MAX_ID: usize = 0xffff;
    #[inline]
    fn pack(ids: &[u32]) -> u64 {
        let mut k = 0u64;
        for (i, &id) in ids.iter().enumerate() {
            k |= u64::from(id) << (16 * i);
        }
        k
    }
    #[inline]
    fn order(self) -> usize {
        4 - (self.leading_zeros() as usize / 16)
    }
}

impl NgramKey for u128 {
    const MAX_ID: usize = u32::MAX as usize;
    #[inline]
    fn pack(ids: &[u32]) -> u128 {
        let mut k = 0u128;
        for (i, &id) in ids.iter().enumerate() {
            k |= u128::from(id) << (32 * i);
        }
        k
    }
    #[inline]
    fn order(self) -> usize {
        4 - (self.leading_zeros() as usize / 32)
    }
}

/// Sorted (key, count) pairs of all 1..4-grams of `ids`, skipping n-grams that
/// contain id 0 (a hypothesis token absent from every reference).
fn count_ngrams<K: NgramKey>(ids: &[u32], keys: &mut Vec<K>, out: &mut Vec<(K, u32)>) {
    keys.clear();
    for n in 1..=MAX_NGRAM_ORDER.min(ids.len()) {
        for w in ids.windows(n) {
            if w.iter().all(|&id| id != 0) {
                keys.push(K::pack(w));
            }
        }
    }
    keys.sort_unstable();
    out.clear();
    for &k in keys.iter() {
        match out.last_mut() {
            Some((lk, c)) if *lk == k => *c += 1,
            _ => out.push((k, 1)),
        }
    }
}

/// sacreBLEU's `_get_closest_ref_len`: closest length, the shorter on ties.
fn closest_ref_len(hyp_len: usize, ref_lens: &[usize]) -> usize {
    let mut best: Option<(usize, usize)> = None;
    for &r in ref_lens {
        let diff = hyp_len.abs_diff(r);
        best = match best {
            Some((d, l)) if diff > d || (diff == d && r >= l) => Some((d, l)),
            _ => Some((diff, r)),
        };
    }
    best.map_or(0, |(_, l)| l)
}

/// Statistics of one segment from already tokenized strings.
fn tokenized_segment_stats(hyp: &str, refs: &[String]) -> BleuStats {
    let mut vocab: FxMap<&str, u32> =
        FxMap::with_capacity_and_hasher(refs.iter().map(|r| r.len() / 4).sum(), Default::default());
    let ref_ids: Vec<Vec<u32>> = refs
        .iter()
        .map(|r| {
            py_split(r)
                .map(|tok| {
                    let next = vocab.len() as u32 + 1;
                    *vocab.entry(tok).or_insert(next)
                })
                .collect()
        })
        .collect();
    let hyp_ids: Vec<u32> = py_split(hyp)
        .map(|tok| vocab.get(tok).copied().unwrap_or(0))
        .collect();
    // Narrow keys sort faster; segments never come near 65,535 distinct tokens,
    // but the wide path keeps any input exact.
    if vocab.len() <= u64::MAX_ID {
        stats_from_ids::<u64>(&hyp_ids, &ref_ids)
    } else {
        stats_from_ids::<u128>(&hyp_ids, &ref_ids)
    }
}

fn stats_from_ids<K: NgramKey>(hyp_ids: &[u32], ref_ids: &[Vec<u32>]) -> BleuStats {
    let mut keys: Vec<K> = Vec::with_capacity(4 * hyp_ids.len().max(16));
    let mut counts: Vec<(K, u32)> = Vec::new();
    // Reference n-gram counts, the maximum over references, sorted by key.
    let mut ref_counts: Vec<(K, u32)> = Vec::new();
    let mut merged = Vec::new();
    let mut ref_lens = Vec::with_capacity(ref_ids.len());
    for (ri, ids) in ref_ids.iter().enumerate() {
        ref_lens.push(ids.len());
        if ri == 0 {
            count_ngrams(ids, &mut keys, &mut ref_counts);
            continue;
        }
        count_ngrams(ids, &mut keys, &mut counts);
        merged.clear();
        let (mut i, mut j) = (0, 0);
        while i < ref_counts.len() && j < counts.len() {
            let (a, b) = (ref_counts[i], counts[j]);
            if a.0 < b.0 {
                merged.push(a);
                i += 1;
            } else if b.0 < a.0 {
                merged.push(b);
                j += 1;
            } else {
                merged.push((a.0, a.1.max(b.1)));
                i += 1;
                j += 1;
            }
        }
        merged.extend_from_slice(&ref_counts[i..]);
        merged.extend_from_slice(&counts[j..]);
        std::mem::swap(&mut ref_counts, &mut merged);
    }

    let hyp_len = hyp_ids.len();
    let mut stats = BleuStats {
        sys_len: hyp_len as u64,
        ref_len: closest_ref_len(hyp_len, &ref_lens) as u64,
        ..BleuStats::default()
    };
    for n in 1..=MAX_NGRAM_ORDER {
        stats.total[n - 1] = hyp_len.saturating_sub(n - 1) as u64;
    }
    count_ngrams(hyp_ids, &mut keys, &mut counts);
    let mut j = 0;
    for &(k, c) in &counts {
        while j < ref_counts.len() && ref_counts[j].0 < k {
            j += 1;
        }
        if j < ref_counts.len() && ref_counts[j].0 == k {
            stats.correct[k.order() - 1] += u64::from(c.min(ref_counts[j].1));
        }
    }
    stats
}

/// Statistics of one segment against its references (raw, untokenized strings).
pub fn segment_stats(hyp: &str, refs: &[&str], cfg: &BleuConfig) -> BleuStats {
    let refs: Vec<String> = refs.iter().map(|r| cfg.prepare(r)).collect();
    tokenized_segment_stats(&cfg.prepare(hyp), &refs)
}

/// Checks that every reference set is parallel to the hypotheses.
pub(crate) fn check_parallel<H, R>(hyps: &[H], refs: &[Vec<R>]) -> Result<()> {
    if hyps.is_empty() {
        return Err(EvalError::Invalid("no hypotheses to score".into()));
    }
    if refs.is_empty() {
        return Err(EvalError::Invalid("no references given".into()));
    }
    for (i, r) in refs.iter().enumerate() {
        if r.len() != hyps.len() {
            return Err(EvalError::LineCountMismatch {
                hyp: hyps.len(),
                reference: format!("#{}", i + 1),
                ref_count: r.len(),
            });
        }
    }
    Ok(())
}

/// Per-segment statistics of a corpus (for bootstrap resampling and the like).
/// `refs` holds one `Vec` per reference set, each parallel to `hyps`.
pub fn corpus_segment_stats<H, R>(
    hyps: &[H],
    refs: &[Vec<R>],
    cfg: &BleuConfig,
) -> Result<Vec<BleuStats>>
where
    H: AsRef<str> + Sync,
    R: AsRef<str> + Sync,
{
    check_parallel(hyps, refs)?;
    let one = |i: usize| {
        let rs: Vec<String> = refs.iter().map(|r| cfg.prepare(r[i].as_ref())).collect();
        tokenized_segment_stats(&cfg.prepare(hyps[i].as_ref()), &rs)
    };
    Ok(if hyps.len() >= PARALLEL_MIN_SEGMENTS {
        (0..hyps.len()).into_par_iter().map(one).collect()
    } else {
        (0..hyps.len()).map(one).collect()
    })
}

/// Corpus BLEU as sacreBLEU's `BLEU(...).corpus_score(hyps, refs)`.
/// `refs` holds one `Vec` per reference set, each parallel to `hyps`.
pub fn corpus_bleu<H, R>(hyps: &[H], refs: &[Vec<R>], cfg: &BleuConfig) -> Result<BleuScore>
where
    H: AsRef<str> + Sync,
    R: AsRef<str> + Sync,
{
    let stats = corpus_segment_stats(hyps, refs, cfg)?
        .into_iter()
        .fold(BleuStats::default(), |a, b| a + b);
    Ok(compute_bleu(&stats, cfg, refs.len()))
}

/// Sentence BLEU as sacreBLEU's `sentence_score` (use `BleuConfig::sentence()` for
/// `sacrebleu.sentence_bleu`'s defaults).
pub fn sentence_bleu(hyp: &str, refs: &[&str], cfg: &BleuConfig) -> Result<BleuScore> {
    if refs.is_empty() {
        return Err(EvalError::Invalid("no references given".into()));
    }
    Ok(compute_bleu(
        &segment_stats(hyp, refs, cfg),
        cfg,
        refs.len(),
    ))
}

/// One WMT22 system whose official `bleu-A` was re-measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Wmt22Row {
    /// Language pair, e.g. `en-de`.
    pub pair: String,
    pub system: String,
    /// The score in the official `automatic-scores.tsv`.
    pub published: f64,
    /// Our corpus BLEU on the same files (13a, or `zh` for Chinese targets).
    pub measured: f64,
    pub signature: String,
}

/// The WMT22 folder under `data_dir`: accepts the shared data root (holding `wmt/`)
/// or the `wmt` folder itself.
fn wmt_dir(data_dir: &Path) -> PathBuf {
    let sub = data_dir.join("wmt");
    if sub.join("outputs").is_dir() {
        sub
    } else {
        data_dir.to_path_buf()
    }
}

/// Re-measures the official WMT22 `bleu-A` of every system in
/// `wmt/outputs/generaltest2022/automatic-scores.tsv` whose output and reference A
/// are present (sacreBLEU defaults; `zh` tokenizer for Chinese targets, as WMT
/// did; Japanese and Korean targets are skipped). Rows come in the file's order,
/// duplicates dropped.
pub fn wmt22_official_rows(data_dir: impl AsRef<Path>) -> Result<Vec<Wmt22Row>> {
    let wmt = wmt_dir(data_dir.as_ref());
    let outputs = wmt.join("outputs").join("generaltest2022");
    let tsv_path = outputs.join("automatic-scores.tsv");
    let tsv = std::fs::read_to_string(&tsv_path).map_err(|source| EvalError::Io {
        path: tsv_path.clone(),
        source,
    })?;
    let mut seen = std::collections::HashSet::new();
    let mut ref_cache: HashMap<String, Vec<String>> = HashMap::new();
    let mut rows = Vec::new();
    for (i, line) in tsv.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 6 || f[4] != "bleu-A" {
            continue;
        }
        let (pair, system) = (f[0], f[1]);
        if !seen.insert((pair.to_string(), system.to_string())) {
            continue;
        }
        let published: f64 = f[5].trim().parse().map_err(|_| {
            EvalError::Invalid(format!(
                "{}: line {}: bad score '{}'",
                tsv_path.display(),
                i + 1,
                f[5]
            ))
        })?;
        let Some((_, tgt)) = pair.split_once('-') else {
            continue;
        };
        // WMT scored Japanese and Korean with MeCab tokenizers, which we lack.
        if tgt == "ja" || tgt == "ko" {
            continue;
        }
        let hyp_path = outputs.join(format!("generaltest2022.{pair}.hyp.{system}.{tgt}"));
        let ref_path = wmt
            .join("generaltest2022")
            .join(format!("generaltest2022.{pair}.ref.A.{tgt}"));
        if !hyp_path.is_file() || !ref_path.is_file() {
            continue;
        }
        if !ref_cache.contains_key(pair) {
            ref_cache.insert(pair.to_string(), crate::io::read_lines(&ref_path)?);
        }
        let refs = match ref_cache.get(pair) {
            Some(r) => std::slice::from_ref(r),
            None => continue,
        };
        let hyps = crate::io::read_lines(&hyp_path)?;
        let cfg = BleuConfig {
            tokenizer: if tgt == "zh" {
                BleuTokenizer::Zh
            } else {
                BleuTokenizer::Tok13a
            },
            ..BleuConfig::default()
        };
        let score = corpus_bleu(&hyps, refs, &cfg).map_err(|e| match e {
            EvalError::LineCountMismatch { hyp, ref_count, .. } => EvalError::LineCountMismatch {
                hyp,
                reference: ref_path.display().to_string(),
                ref_count,
            },
            other => other,
        })?;
        rows.push(Wmt22Row {
            pair: pair.to_string(),
            system: system.to_string(),
            published,
            measured: score.score,
            signature: score.signature,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_ref_len_prefers_shorter_on_ties() {
        assert_eq!(closest_ref_len(5, &[3, 7]), 3);
        assert_eq!(closest_ref_len(5, &[7, 3]), 3);
        assert_eq!(closest_ref_len(5, &[9, 6, 4]), 4);
        assert_eq!(closest_ref_len(5, &[5, 4]), 5);
    }

    #[test]
    fn signature_format() {
        let cfg = BleuConfig::default();
        assert_eq!(
            cfg.signature(1),
            format!("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{SACREBLEU_VERSION}")
        );
        let cfg = BleuConfig {
            smooth: Smooth::Floor(0.1),
            lowercase: true,
            effective_order: true,
            tokenizer: BleuTokenizer::Zh,
        };
        assert!(cfg
            .signature(2)
            .starts_with("nrefs:2|case:lc|eff:yes|tok:zh|smooth:floor[0.10]|"));
    }

    #[test]
    fn identical_sentence_is_100() {
        let s = sentence_bleu(
            "The cat sat on the mat .",
            &["The cat sat on the mat ."],
            &BleuConfig::sentence(),
        )
        .map(|s| s.score)
        .unwrap_or(0.0);
        // sacreBLEU itself gives 100.00000000000004 here (exp of a sum of logs).
        assert!((s - 100.0).abs() < 1e-9, "{s}");
    }

    #[test]
    fn wide_and_narrow_keys_agree() {
        let hyp = [1, 2, 3, 0, 1, 2, 3, 4, 5, 1, 2];
        let refs = vec![
            vec![1, 2, 3, 4, 5, 6, 1, 2, 3],
            vec![5, 1, 2, 9, 1, 2, 3, 4],
        ];
        let a = stats_from_ids::<u64>(&hyp, &refs);
        let b = stats_from_ids::<u128>(&hyp, &refs);
        assert_eq!(a, b);
        assert_eq!(a.total, [11, 10, 9, 8]);
        assert_eq!(a.correct[0], 8);
    }

    #[test]
    fn line_count_mismatch() {
        let r = corpus_bleu(&["a", "b"], &[vec!["a"]], &BleuConfig::default());
        assert!(matches!(
            r,
            Err(EvalError::LineCountMismatch {
                hyp: 2,
                ref_count: 1,
                ..
            })
        ));
    }
}
