//! Logits processors with the semantics of `transformers.generation.logits_process`.
//!
//! Each processor rewrites one row of f32 scores in place, given the row's
//! decoder input ids (`history`: the decoder start token and every id generated
//! so far — HF's `input_ids` inside `generate`) and its unpadded source ids.
//! Buffers are allocated when a processor is built, never per call.
//!
//! [`LogitsProcessorList::from_config`] builds them in the order of HF
//! `GenerationMixin._get_logits_processor`:
//! repetition penalty, no-repeat n-gram, encoder no-repeat n-gram, bad words,
//! min length, min new tokens, forced BOS, forced EOS, then (sampling only)
//! temperature, top-k, top-p. HF filter value: `-inf`.
//!
//! In beam search HF applies them to `log_softmax(logits)`; in greedy and
//! sampling to the raw logits. The caller decides (see `search`).

use encdec_core::{Error, Result};

use crate::config::GenerationConfig;

/// What a processor may look at for one row.
#[derive(Debug, Clone, Copy)]
pub struct RowContext<'a> {
    /// Decoder input ids: the start token, then the generated ids.
    pub history: &'a [u32],
    /// The row's source ids (unpadded).
    pub source: &'a [u32],
}

/// What the processors do to one row when all they do is apply the
/// repetition penalty to some ids, ban ids (set them to -inf) or force the
/// row (every id -inf except a few, which become 0), in that order (HF's):
/// search on the backend applies that to the row there and reads back only
/// the row's best candidates.
#[derive(Debug)]
pub struct RowEdits {
    /// Distinct ids whose score the repetition penalty changes (`s < 0 ?
    /// s * penalty : s / penalty`), applied before the bans; ids outside the
    /// vocabulary mean nothing.
    pub penalized: Vec<u32>,
    pub penalty: f32,
    /// Ids set to -inf (may repeat; ids outside the vocabulary mean nothing).
    pub banned: Vec<u32>,
    /// Whether the row was replaced: every id -inf except `forced`, which are 0
    /// (then `banned` holds only bans made after the forcing, and `penalized`
    /// is empty).
    pub is_forced: bool,
    pub forced: Vec<u32>,
}

impl Default for RowEdits {
    fn default() -> Self {
        // room for the usual edits, so that a decode step does not allocate
        RowEdits {
            penalized: Vec::with_capacity(256),
            penalty: 1.0,
            banned: Vec::with_capacity(256),
            is_forced: false,
            forced: Vec::with_capacity(16),
        }
    }
}

impl RowEdits {
    pub fn clear(&mut self) {
        self.penalized.clear();
        self.penalty = 1.0;
        self.banned.clear();
        self.is_forced = false;
        self.forced.clear();
    }
    /// Replace the row: every id -inf except `ids`, which become 0.
    pub fn force(&mut self, ids: &[u32]) {
        self.penalized.clear();
        self.banned.clear();
        self.is_forced = true;
        self.forced.clear();
        self.forced.extend_from_slice(ids);
    }
}

/// One logits processor.
pub trait LogitsProcessor: Send {
    /// The name of the HF class with the same semantics.
    fn name(&self) -> &'static str;
    fn process(&mut self, scores: &mut [f32], ctx: &RowContext<'_>);
    /// Adds to `edits` what [`process`](Self::process) would do to the row of
    /// `ctx`, if it only penalises, bans or forces (see [`RowEdits`]), and
    /// returns true; returns false if it can change a score in any other way
    /// (the caller then needs the whole row). The default: false.
    fn edits(&mut self, ctx: &RowContext<'_>, edits: &mut RowEdits) -> bool {
        let _ = (ctx, edits);
        false
    }
    /// Whether [`process`](Self::process) on a row it already processed
    /// changes nothing (bans, forcing). A search that applied the edits on
    /// the backend and then needs the full row re-runs only these
    /// ([`LogitsProcessorList::process_again`]).
    fn idempotent(&self) -> bool {
        true
    }
    /// Some(how) for the sampling warpers (temperature, top-k, top-p), which
    /// search on the backend runs on the host over each row's candidates
    /// (see [`Warp`]); None for every other processor (the default).
    fn warp(&self) -> Option<Warp> {
        None
    }
}

/// How a sampling warper depends on its row, which decides whether it gives
/// the same result on a row's best candidates alone (a compact row of the
/// fetched ids, in id order) as on the whole row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warp {
    /// Maps each score on its own, keeping their order (temperature).
    Monotone,
    /// Sets every score below the k-th largest to -inf (top-k).
    TopK(usize),
    /// Reads only the finite scores, their values and id order; -inf stays
    /// -inf (top-p).
    OnFinite,
}

const NEG_INF: f32 = f32::NEG_INFINITY;

/// `RepetitionPenaltyLogitsProcessor`: every token present in `history`
/// (the decoder start token included, the source excluded) has its score
/// divided by `penalty` if positive, multiplied if negative. Each distinct
/// token is penalised once.
pub struct RepetitionPenalty {
    penalty: f32,
    stamp: Vec<u32>,
    epoch: u32,
}

impl RepetitionPenalty {
    pub fn new(penalty: f64, vocab_size: usize) -> Self {
        RepetitionPenalty {
            penalty: penalty as f32,
            stamp: vec![0; vocab_size],
            epoch: 0,
        }
    }
}

impl RepetitionPenalty {
    /// Calls `f` once for each distinct id of `history` below `len`, in order
    /// of first occurrence.
    fn for_each_distinct(&mut self, history: &[u32], len: usize, mut f: impl FnMut(usize)) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.stamp.fill(0);
            self.epoch = 1;
        }
        for &t in history {
            let t = t as usize;
            // ids beyond the scores cannot be generated: HF drops them
            if t >= len || t >= self.stamp.len() || self.stamp[t] == self.epoch {
                continue;
            }
            self.stamp[t] = self.epoch;
            f(t);
        }
    }
}

impl LogitsProcessor for RepetitionPenalty {
    fn name(&self) -> &'static str {
        "RepetitionPenaltyLogitsProcessor"
    }
    fn process(&mut self, scores: &mut [f32], ctx: &RowContext<'_>) {
        let penalty = self.penalty;
        self.for_each_distinct(ctx.history, scores.len(), |t| {
            let s = scores[t];
            scores[t] = if s < 0.0 { s * penalty } else { s / penalty };
        });
    }
    fn edits(&mut self, ctx: &RowContext<'_>, edits: &mut RowEdits) -> bool {
        if edits.is_forced || !edits.banned.is_empty() || !edits.penalized.is_empty() {
            // not first in the list (HF puts it first): the order would matter
            return false;
        }
        edits.penalty = self.penalty;
        let out = &mut edits.penalized;
        self.for_each_distinct(ctx.history, usize::MAX, |t| out.push(t as u32));
        true
    }
    fn idempotent(&self) -> bool {
        false
    }
}

/// `NoRepeatNGramLogitsProcessor`: bans every token that would complete an
/// n-gram already present in `history`.
pub struct NoRepeatNGram {
    n: usize,
}

impl NoRepeatNGram {
    pub fn new(n: usize) -> Self {
        NoRepeatNGram { n }
    }
}

/// Ban `seq[i + n - 1]` for each window `seq[i..i + n - 1]` equal to `prefix`.
fn ban_ngram_completions(scores: &mut [f32], seq: &[u32], prefix: &[u32], n: usize) {
    if seq.len() < n {
        return;
    }
    for w in seq.windows(n) {
        if &w[..n - 1] == prefix {
            let t = w[n - 1] as usize;
            if t < scores.len() {
                scores[t] = NEG_INF;
            }
        }
    }
}

/// The ids [`ban_ngram_completions`] bans, pushed onto `out`.
fn ngram_completions(out: &mut Vec<u32>, seq: &[u32], prefix: &[u32], n: usize) {
    if seq.len() < n {
        return;
    }
    for w in seq.windows(n) {
        if &w[..n - 1] == prefix {
            out.push(w[n - 1]);
        }
    }
}

impl LogitsProcessor for NoRepeatNGram {
    fn name(&self) -> &'static str {
        "NoRepeatNGramLogitsProcessor"
    }
    fn process(&mut self, scores: &mut [f32], ctx: &RowContext<'_>) {
        let h = ctx.history;
        let n = self.n;
        if n == 0 || h.len() < n {
            return;
        }
        let prefix = &h[h.len() + 1 - n..];
        ban_ngram_completions(scores, h, prefix, n);
    }
    fn edits(&mut self, ctx: &RowContext<'_>, edits: &mut RowEdits) -> bool {
        let h = ctx.history;
        let n = self.n;
        if n == 0 || h.len() < n {
            return true;
        }
        let prefix = &h[h.len() + 1 - n..];
        ngram_completions(&mut edits.banned, h, prefix, n);
        true
    }
}

/// `EncoderNoRepeatNGramLogitsProcessor`: bans tokens that would complete an
/// n-gram of the source, given the last n-1 decoder ids.
pub struct EncoderNoRepeatNGram {
    n: usize,
}

impl EncoderNoRepeatNGram {
    pub fn new(n: usize) -> Self {
        EncoderNoRepeatNGram { n }
    }
}

impl LogitsProcessor for EncoderNoRepeatNGram {
    fn name(&self) -> &'static str {
        "EncoderNoRepeatNGramLogitsProcessor"
    }
    fn process(&mut self, scores: &mut [f32], ctx: &RowContext<'_>) {
        let h = ctx.history;
        let n = self.n;
        if n == 0 || h.len() + 1 < n {
            return;
        }
        let prefix = &h[h.len() + 1 - n..];
        ban_ngram_completions(scores, ctx.source, prefix, n);
    }
    fn edits(&mut self, ctx: &RowContext<'_>, edits: &mut RowEdits) -> bool {
        let h = ctx.history;
        let n = self.n;
        if n == 0 || h.len() + 1 < n {
            return true;
        }
        let prefix = &h[h.len() + 1 - n..];
        ngram_completions(&mut edits.banned, ctx.source, prefix, n);
        true
    }
}

/// `NoBadWordsLogitsProcessor`: a one-token bad word is always banned; a longer
/// one bans its last token when `history` ends with the rest. Sequences equal
/// to a single EOS id are dropped, as HF does.
pub struct NoBadWords {
    single: Vec<u32>,
    multi: Vec<Vec<u32>>,
}

impl NoBadWords {
    pub fn new(bad_words_ids: &[Vec<u32>], eos: &[u32], vocab_size: usize) -> Result<Self> {
        let mut single = Vec::new();
        let mut multi = Vec::new();
        for seq in bad_words_ids {
            if seq.is_empty() {
                return Err(Error::Invalid(
                    "bad_words_ids contains an empty sequence".into(),
                ));
            }
            if let Some(&t) = seq.iter().find(|&&t| t as usize >= vocab_size) {
                return Err(Error::Invalid(format!(
                    "bad_words_ids: token {t} is outside the vocabulary (size {vocab_size})"
                )));
            }
            if seq.len() == 1 {
                if !eos.contains(&seq[0]) {
                    single.push(seq[0]);
                }
            } else {
                multi.push(seq.clone());
            }
        }
        Ok(NoBadWords { single, multi })
    }
}

impl LogitsProcessor for NoBadWords {
    fn name(&self) -> &'static str {
        "NoBadWordsLogitsProcessor"
    }
    fn process(&mut self, scores: &mut [f32], ctx: &RowContext<'_>) {
        for &t in &self.single {
            scores[t as usize] = NEG_INF;
        }
        let h = ctx.history;
        for seq in &self.multi {
            let p = seq.len() - 1;
            if p <= h.len() && h[h.len() - p..] == seq[..p] {
                scores[seq[p] as usize] = NEG_INF;
            }
        }
    }
    fn edits(&mut self, ctx: &RowContext<'_>, edits: &mut RowEdits) -> bool {
        edits.banned.extend_from_slice(&self.single);
        let h = ctx.history;
        for seq in &self.multi {
            let p = seq.len() - 1;
            if p <= h.len() && h[h.len() - p..] == seq[..p] {
                edits.banned.push(seq[p]);
            }
        }
        true
    }
}

fn ban(scores: &mut [f32], ids: &[u32]) {
    for &t in ids {
        if let Some(s) = scores.get_mut(t as usize) {
            *s = NEG_INF;
        }
    }
}

/// `MinLengthLogitsProcessor`: EOS banned while `history.len() < min_length`.
pub struct MinLength {
    min_length: usize,
    eos: Vec<u32>,
}

impl MinLength {
    pub fn new(min_length: usize, eos: &[u32]) -> Self {
        MinLength {
            min_length,
            eos: eos.to_vec(),
        }
    }
}

impl LogitsProcessor for MinLength {
    fn name(&self) -> &'static str {
        "MinLengthLogitsProcessor"
    }
    fn process(&mut self, scores: &mut [f32], ctx: &RowContext<'_>) {
        if ctx.history.len() < self.min_length {
            ban(scores, &self.eos);
        }
    }
    fn edits(&mut self, ctx: &RowContext<'_>, edits: &mut RowEdits) -> bool {
        if ctx.history.len() < self.min_length {
            edits.banned.extend_from_slice(&self.eos);
        }
        true
    }
}

/// `MinNewTokensLengthLogitsProcessor`: EOS banned while fewer than
/// `min_new_tokens` ids follow the `prompt_length` decoder prompt ids.
pub struct MinNewTokens {
    prompt_length: usize,
    min_new_tokens: usize,
    eos: Vec<u32>,
}

impl MinNewTokens {
    pub fn new(prompt_length: usize, min_new_tokens: usize, eos: &[u32]) -> Self {
        MinNewTokens {
            prompt_length,
            min_new_tokens,
            eos: eos.to_vec(),
        }
    }
}

impl LogitsProcessor for MinNewTokens {
    fn name(&self) -> &'static str {
        "MinNewTokensLengthLogitsProcessor"
    }
    fn process(&mut self, scores: &mut [f32], ctx: &RowContext<'_>) {
        let new = ctx.history.len() as i64 - self.prompt_length as i64;
        if new < self.min_new_tokens as i64 {
            ban(scores, &self.eos);
        }
    }
    fn edits(&mut self, ctx: &RowContext<'_>, edits: &mut RowEdits) -> bool {
        let new = ctx.history.len() as i64 - self.prompt_length as i64;
        if new < self.min_new_tokens as i64 {
            edits.banned.extend_from_slice(&self.eos);
        }
        true
    }
}

/// `ForcedBOSTokenLogitsProcessor`: at the first step (history = the start
/// token) every score is -inf except `bos`, which is 0.
pub struct ForcedBos {
    bos: u32,
}

impl ForcedBos {
    pub fn new(bos: u32) -> Self {
        ForcedBos { bos }
    }
}

impl LogitsProcessor for ForcedBos {
    fn name(&self) -> &'static str {
        "ForcedBOSTokenLogitsProcessor"
    }
    fn process(&mut self, scores: &mut [f32], ctx: &RowContext<'_>) {
        if ctx.history.len() == 1 {
            scores.fill(NEG_INF);
            if let Some(s) = scores.get_mut(self.bos as usize) {
                *s = 0.0;
            }
        }
    }
    fn edits(&mut self, ctx: &RowContext<'_>, edits: &mut RowEdits) -> bool {
        if ctx.history.len() == 1 {
            edits.force(&[self.bos]);
        }
        true
    }
}

/// `ForcedEOSTokenLogitsProcessor`: when the next id is the last one
/// `max_length` allows, every score is -inf except the EOS ids, which are 0.
pub struct ForcedEos {
    max_length: usize,
    eos: Vec<u32>,
}

impl ForcedEos {
    pub fn new(max_length: usize, eos: &[u32]) -> Self {
        ForcedEos {
            max_length,
            eos: eos.to_vec(),
        }
    }
}

impl LogitsProcessor for ForcedEos {
    fn name(&self) -> &'static str {
        "ForcedEOSTokenLogitsProcessor"
    }
    fn process(&mut self, scores: &mut [f32], ctx: &RowContext<'_>) {
        if ctx.history.len() + 1 == self.max_length {
            scores.fill(NEG_INF);
            for &t in &self.eos {
                if let Some(s) = scores.get_mut(t as usize) {
                    *s = 0.0;
                }
            }
        }
    }
    fn edits(&mut self, ctx: &RowContext<'_>, edits: &mut RowEdits) -> bool {
        if ctx.history.len() + 1 == self.max_length {
            edits.force(&self.eos);
        }
        true
    }
}

/// `TemperatureLogitsWarper`: scores / temperature.
pub struct Temperature {
    t: f32,
}

impl Temperature {
    pub fn new(temperature: f64) -> Self {
        Temperature {
            t: temperature as f32,
        }
    }
}

impl LogitsProcessor for Temperature {
    fn name(&self) -> &'static str {
        "TemperatureLogitsWarper"
    }
    fn process(&mut self, scores: &mut [f32], _ctx: &RowContext<'_>) {
        for s in scores.iter_mut() {
            *s /= self.t;
        }
    }
    fn idempotent(&self) -> bool {
        false
    }
    fn warp(&self) -> Option<Warp> {
        Some(Warp::Monotone)
    }
}

/// `TopKLogitsWarper`: scores below the k-th largest become -inf (ties with
/// the k-th are kept); k = max(top_k, min_tokens_to_keep).
pub struct TopK {
    k: usize,
    scratch: Vec<f32>,
}

impl TopK {
    pub fn new(top_k: usize, min_tokens_to_keep: usize, vocab_size: usize) -> Self {
        TopK {
            k: top_k.max(min_tokens_to_keep),
            scratch: Vec::with_capacity(top_k.max(min_tokens_to_keep).min(vocab_size)),
        }
    }
}

impl TopK {
    /// The k-th largest value of `scores` (k < len): a min-heap of the k best
    /// seen, so most entries cost one comparison.
    fn kth_largest(&mut self, scores: &[f32], k: usize) -> f32 {
        let h = &mut self.scratch;
        h.clear();
        for &x in scores {
            if h.len() < k {
                // sift up
                h.push(x);
                let mut i = h.len() - 1;
                while i > 0 {
                    let parent = (i - 1) / 2;
                    if h[i] < h[parent] {
                        h.swap(i, parent);
                        i = parent;
                    } else {
                        break;
                    }
                }
            } else if x > h[0] {
                // replace the smallest, sift down
                h[0] = x;
                let mut i = 0;
                loop {
                    let (l, r) = (2 * i + 1, 2 * i + 2);
                    let mut m = i;
                    if l < k && h[l] < h[m] {
                        m = l;
                    }
                    if r < k && h[r] < h[m] {
                        m = r;
                    }
                    if m == i {
                        break;
                    }
                    h.swap(i, m);
                    i = m;
                }
            }
        }
        h[0]
    }
}

impl LogitsProcessor for TopK {
    fn name(&self) -> &'static str {
        "TopKLogitsWarper"
    }
    fn warp(&self) -> Option<Warp> {
        Some(Warp::TopK(self.k))
    }
    fn process(&mut self, scores: &mut [f32], _ctx: &RowContext<'_>) {
        let k = self.k.min(scores.len());
        if k == 0 || k == scores.len() {
            return;
        }
        let threshold = self.kth_largest(scores, k);
        for s in scores.iter_mut() {
            if *s < threshold {
                *s = NEG_INF;
            }
        }
    }
}

/// `TopPLogitsWarper`: sort ascending, softmax, cumulative sum; tokens whose
/// cumulative probability is `<= 1 - top_p` become -inf, except the
/// `min_tokens_to_keep` most likely.
pub struct TopP {
    top_p: f64,
    min_keep: usize,
    order: Vec<u32>,
    probs: Vec<f64>,
}

impl TopP {
    pub fn new(top_p: f64, min_tokens_to_keep: usize, vocab_size: usize) -> Self {
        TopP {
            top_p,
            min_keep: min_tokens_to_keep,
            order: Vec::with_capacity(vocab_size),
            probs: Vec::with_capacity(vocab_size),
        }
    }
}

impl LogitsProcessor for TopP {
    fn name(&self) -> &'static str {
        "TopPLogitsWarper"
    }
    fn idempotent(&self) -> bool {
        false
    }
    fn warp(&self) -> Option<Warp> {
        Some(Warp::OnFinite)
    }
    fn process(&mut self, scores: &mut [f32], _ctx: &RowContext<'_>) {
        // -inf entries have probability 0: they sort first, their cumulative
        // probability (0) is below the threshold, so they stay -inf. Only the
        // finite entries need sorting.
        self.order.clear();
        let mut max = NEG_INF;
        for (i, &s) in scores.iter().enumerate() {
            if s > NEG_INF {
                self.order.push(i as u32);
                if s > max {
                    max = s;
                }
            }
        }
        let finite = self.order.len();
        if finite == 0 {
            return;
        }
        self.order.sort_unstable_by(|&a, &b| {
            scores[a as usize]
                .total_cmp(&scores[b as usize])
                .then(a.cmp(&b))
        });
        self.probs.clear();
        let mut sum = 0.0f64;
        for &i in &self.order {
            let e = ((scores[i as usize] - max) as f64).exp();
            self.probs.push(e);
            sum += e;
        }
        let threshold = (1.0 - self.top_p) as f32;
        // the last `min_keep` of the full ascending order are kept
        let keep_from =
            (scores.len().saturating_sub(self.min_keep)).saturating_sub(scores.len() - finite);
        let mut cum = 0.0f64;
        for (pos, &i) in self.order.iter().enumerate() {
            cum += self.probs[pos] / sum;
            if pos >= keep_from {
                break;
            }
            if (cum as f32) <= threshold {
                scores[i as usize] = NEG_INF;
            }
        }
    }
}

/// The processors `generate` runs, in HF's order.
pub struct LogitsProcessorList {
    procs: Vec<Box<dyn LogitsProcessor>>,
}

impl LogitsProcessorList {
    pub fn new(procs: Vec<Box<dyn LogitsProcessor>>) -> Self {
        LogitsProcessorList { procs }
    }

    /// The list HF `_get_logits_processor` builds for `cfg` (the warpers only
    /// when sampling; in beam sampling `min_tokens_to_keep` is the number of
    /// EOS ids + 1, as HF).
    pub fn from_config(cfg: &GenerationConfig, vocab_size: usize) -> Result<Self> {
        let mut p: Vec<Box<dyn LogitsProcessor>> = Vec::new();
        let eos = &cfg.eos_token_id;
        if cfg.repetition_penalty != 1.0 {
            p.push(Box::new(RepetitionPenalty::new(
                cfg.repetition_penalty,
                vocab_size,
            )));
        }
        if cfg.no_repeat_ngram_size > 0 {
            p.push(Box::new(NoRepeatNGram::new(cfg.no_repeat_ngram_size)));
        }
        if cfg.encoder_no_repeat_ngram_size > 0 {
            p.push(Box::new(EncoderNoRepeatNGram::new(
                cfg.encoder_no_repeat_ngram_size,
            )));
        }
        if let Some(bad) = &cfg.bad_words_ids {
            p.push(Box::new(NoBadWords::new(bad, eos, vocab_size)?));
        }
        if !eos.is_empty() && cfg.min_length > 0 {
            p.push(Box::new(MinLength::new(cfg.min_length, eos)));
        }
        if let Some(n) = cfg.min_new_tokens {
            if !eos.is_empty() && n > 0 {
                p.push(Box::new(MinNewTokens::new(1, n, eos)));
            }
        }
        if let Some(bos) = cfg.forced_bos_token_id {
            p.push(Box::new(ForcedBos::new(bos)));
        }
        if let Some(feos) = &cfg.forced_eos_token_id {
            p.push(Box::new(ForcedEos::new(cfg.max_length, feos)));
        }
        if cfg.do_sample {
            let min_keep = if cfg.num_beams > 1 {
                // HF: len(eos) + 1, and 2 when there is no EOS
                if eos.is_empty() {
                    2
                } else {
                    eos.len() + 1
                }
            } else {
                1
            };
            if cfg.temperature != 1.0 {
                p.push(Box::new(Temperature::new(cfg.temperature)));
            }
            if cfg.top_k != 0 {
                p.push(Box::new(TopK::new(cfg.top_k, min_keep, vocab_size)));
            }
            if cfg.top_p < 1.0 {
                p.push(Box::new(TopP::new(cfg.top_p, min_keep, vocab_size)));
            }
        }
        Ok(LogitsProcessorList { procs: p })
    }

    /// HF class names, in order of application.
    pub fn names(&self) -> Vec<&'static str> {
        self.procs.iter().map(|p| p.name()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn process(&mut self, scores: &mut [f32], ctx: &RowContext<'_>) {
        for p in &mut self.procs {
            p.process(scores, ctx);
        }
    }

    /// [`process`](Self::process) on a row whose [`edits`](Self::edits)
    /// were applied already: the processors a row needs after search on the backend applied its
    /// edits there and then fell back to the full row: the idempotent edits
    /// (bans, forcing) again, which changes nothing, and the sampling warpers,
    /// which the backend never runs; not the repetition penalty.
    pub fn process_again(&mut self, scores: &mut [f32], ctx: &RowContext<'_>) {
        for p in self
            .procs
            .iter_mut()
            .filter(|p| p.warp().is_some() || p.idempotent())
        {
            p.process(scores, ctx);
        }
    }

    /// Every processor's edits of the row of `ctx` into `edits` (cleared
    /// first); false when one does more than penalise, ban or force.
    pub fn edits(&mut self, ctx: &RowContext<'_>, edits: &mut RowEdits) -> bool {
        self.edits_where(ctx, edits, false)
    }

    /// [`edits`](Self::edits) of the processors other than the sampling
    /// warpers (which run on the candidates: [`warp_candidates`](Self::warp_candidates)).
    pub fn edits_before_warpers(&mut self, ctx: &RowContext<'_>, edits: &mut RowEdits) -> bool {
        self.edits_where(ctx, edits, true)
    }

    fn edits_where(
        &mut self,
        ctx: &RowContext<'_>,
        edits: &mut RowEdits,
        skip_warpers: bool,
    ) -> bool {
        edits.clear();
        self.procs
            .iter_mut()
            .filter(|p| !(skip_warpers && p.warp().is_some()))
            .all(|p| p.edits(ctx, edits))
    }

    /// Whether every processor only penalises, bans or forces (as far as a
    /// row with an empty history shows).
    pub fn only_edits(&mut self) -> bool {
        self.edits_on_empty_history(false)
    }

    /// [`edits_where`](Self::edits_where) for a row with an empty history.
    fn edits_on_empty_history(&mut self, skip_warpers: bool) -> bool {
        let mut e = RowEdits::default();
        let ctx = RowContext {
            history: &[0],
            source: &[],
        };
        self.edits_where(&ctx, &mut e, skip_warpers)
    }

    /// Some(k) when sampling can be decided from each row's k + 1 best
    /// candidates: the processors are edits, then sampling warpers that are
    /// monotone up to a top-k with this k and read only the finite scores
    /// after it (HF's temperature, top-k, top-p). The (k + 1)-th candidate
    /// tells whether ids that were not fetched survive the top-k
    /// ([`warp_candidates`](Self::warp_candidates)).
    pub fn sampling_top_k(&mut self) -> Option<usize> {
        let mut top_k = None;
        let mut warped = false;
        for p in &self.procs {
            match (p.warp(), top_k) {
                (None, _) if warped => return None,
                (None, _) => {}
                (Some(Warp::Monotone), _) => warped = true,
                (Some(Warp::TopK(k)), None) => {
                    top_k = Some(k);
                    warped = true;
                }
                (Some(Warp::OnFinite), Some(_)) => {}
                (Some(_), _) => return None,
            }
        }
        top_k.filter(|_| self.edits_on_empty_history(true))
    }

    /// Runs the sampling warpers on a compact row of candidates (the edits
    /// were applied where the row was). `smallest`: the compact position of
    /// the weakest fetched candidate when the row has ids that were not
    /// fetched; false when the top-k kept it (a tie at the k-th score: the
    /// ids not fetched may tie too, and the candidates cannot decide).
    pub fn warp_candidates(
        &mut self,
        row: &mut [f32],
        ctx: &RowContext<'_>,
        smallest: Option<usize>,
    ) -> bool {
        for p in self.procs.iter_mut().filter(|p| p.warp().is_some()) {
            p.process(row, ctx);
            if let (Some(Warp::TopK(_)), Some(at)) = (p.warp(), smallest) {
                if row[at] > NEG_INF || row[at].is_nan() {
                    return false;
                }
            }
        }
        true
    }
}
