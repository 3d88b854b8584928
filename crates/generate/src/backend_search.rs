//! Search on the backend: the logits stay where the model computed them, and
//! only each row's best candidates (and a few numbers) come to the host.
//!
//! The processors that only ban ids ([`RowEdits`]: min length / min new
//! tokens, no-repeat n-grams, bad words) are evaluated on the host from the
//! row's history, and the banned ids are set to -inf on the backend in one
//! [`Backend::scatter_fill`]; the repetition penalty goes the same way (the
//! row's distinct history ids, [`Backend::repetition_penalty`], before the
//! bans as in HF); a forced row (forced BOS/EOS: every id -inf but a few,
//! which are 0) is known in full on the host and needs no logits.
//!
//! Greedy: per row the backend computes the processed row's softmax
//! statistics (max and sum of `e^(x - max)`, [`Backend::softmax_stats`]) and
//! its best entry ([`Backend::topk_into`], K = 1: the argmax, ties to the
//! lower id as `torch.argmax`). The chosen id's log-prob is
//! `(x - max) - ln(sum)`: HF's score, with no row on the host.
//!
//! Beam search: `log_softmax` in place on the backend (HF applies the
//! processors to log-probs), the bans, then the top-K of each row (K = HF's
//! `max(2, 1 + #eos) * num_beams` + 4). The host adds each row's running beam
//! score and takes HF's top `max(2, 1 + #eos) * num_beams` over the union of
//! the rows' candidates, ordered as the host search orders them (score, then
//! the lower flat index). That is the top over beams x vocab when no id a row
//! did not send can reach the last one selected: checked per row against the
//! row's K-th candidate (ties included).
//!
//! Top-k sampling: the edits, then each row's top-(k + 1) on the backend
//! ([`Queued::EditsTopk`]). On the host HF's warpers (temperature, top-k,
//! top-p) and the draw run over each row's candidates as a compact row in id
//! order ([`BackendBuffers::sample_candidates`]): every other id is -inf after
//! the top-k, so the warpers, the row's maximum, the sum of `e^(x - max)`
//! (taken in the whole row's lane order, `math::sum_f64_at`) and the running
//! sum the draw walks are the whole row's, and the ids, scores and random
//! stream are the host search's bit for bit. The (k + 1)-th candidate shows
//! whether ids that were not fetched survive the top-k: only when it ties the
//! k-th score can they, and the step falls back.
//!
//! When the candidates cannot decide a step exactly (a greedy row with every
//! id banned, an unsent id that could reach the beam selection, a tie at the
//! sampling top-k's k-th score, NaN, more bans than the buffer holds), [`GreedyOutcome::Fallback`] / `false` tells the
//! caller to copy the full rows to the host. Bans already applied there are
//! applied again by the host processors (the same -inf), but not the
//! repetition penalty ([`BackendBuffers::edits_applied`],
//! `LogitsProcessorList::process_again`).

use encdec_core::backend::PENALTY_INDEX_UNUSED;
use encdec_core::{Backend, DType, Result, Tensor};

use crate::model::Then;
use crate::processors::RowEdits;

/// The search ops a decode step queues right after the model's, on the
/// step's logits, so that the backend records them with the step (one replay
/// runs both). They read nothing back to the host, and their arguments do
/// not change between steps: the penalised and banned positions are uploaded
/// before the step ([`BackendBuffers::stage_edits`]) into buffers of fixed size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queued {
    /// Greedy: the staged edits, softmax statistics, the argmax.
    GreedyPick(Staged),
    /// Beam search: the log-softmax, the staged edits, every row's top-K.
    LogSoftmaxTopk(Staged),
    /// Sampling: the staged edits, every row's top-K (top-k + 1).
    EditsTopk(Staged),
}

/// Which of a step's edits were staged for the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Staged {
    /// Some id of some row is banned.
    pub bans: bool,
    /// Some id of some row gets the repetition penalty.
    pub penalized: bool,
}

impl Queued {
    fn key(self) -> usize {
        let (kind, s) = match self {
            Queued::GreedyPick(s) => (1, s),
            Queued::LogSoftmaxTopk(s) => (2, s),
            Queued::EditsTopk(s) => (3, s),
        };
        kind << 2 | (s.bans as usize) << 1 | s.penalized as usize
    }
}

/// Where the search of a [`crate::Generator`] ran, counted in decode steps
/// since the generator was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchStats {
    /// Steps decided on the backend's candidates alone (no full row on the host).
    pub backend_steps: u64,
    /// Steps that went to the backend, but whose candidates could not decide
    /// them exactly: the full logits were copied to the host and searched there.
    pub fallback_steps: u64,
    /// Steps searched on the host from the start (search on the backend off,
    /// sampling, tracing, or a processor that does more than penalise
    /// repeats or ban ids).
    pub host_steps: u64,
    /// Decode steps whose ops the backend recorded (a CUDA graph; the step
    /// ran by replaying it), replayed from an earlier recording, or ran op by
    /// op ([`crate::RecordedSteps`]).
    pub recorded_steps: u64,
    pub replayed_steps: u64,
    pub unrecorded_steps: u64,
}

impl SearchStats {
    /// Moves the step counts of a decoder state's recordings into these stats.
    pub(crate) fn count_recordings(&mut self, r: &mut crate::RecordedSteps) {
        self.recorded_steps += std::mem::take(&mut r.recorded);
        self.replayed_steps += std::mem::take(&mut r.replayed);
        self.unrecorded_steps += std::mem::take(&mut r.unrecorded);
    }

    /// Steps whose full `[rows, vocab]` logits were read on the host.
    pub fn full_row_steps(&self) -> u64 {
        self.fallback_steps + self.host_steps
    }
}

/// The backend and host buffers of search on the backend, allocated when a
/// generation starts and when rows leave the batch, never per step.
pub(crate) struct BackendBuffers {
    pub rows: usize,
    pub k: usize,
    vocab: usize,
    ban_cap: usize,
    /// Slots of the penalty index (0: the processors have no repetition penalty).
    penalty_cap: usize,
    penalty: f32,
    /// Whether this step's edits were applied to `logits` on the backend.
    applied: bool,
    /// f32 `[rows, vocab]` on the backend: the model writes the step's logits here.
    pub logits: Tensor,
    ids: Tensor,
    vals: Tensor,
    ids_h: Tensor,
    vals_h: Tensor,
    stats: Tensor,
    stats_h: Tensor,
    /// u32 `[ban_cap]`: flat positions of the banned ids (host, and on the backend).
    ban_idx_h: Tensor,
    ban_idx: Tensor,
    /// u32 `[penalty_cap]`: flat positions the repetition penalty changes
    /// (distinct; unused slots [`PENALTY_INDEX_UNUSED`]).
    penalty_idx_h: Tensor,
    penalty_idx: Tensor,
    /// Candidate pool of one source (beam search): (score, beam * vocab + id).
    pool: Vec<(f32, u32)>,
}

impl BackendBuffers {
    /// Buffers for `rows` rows of `vocab` logits and K = `k` candidates per
    /// row; `penalized_per_row`: the most ids the repetition penalty can
    /// touch in one row (the longest history; 0 without the penalty).
    pub fn new(
        be: &dyn Backend,
        rows: usize,
        vocab: usize,
        k: usize,
        penalized_per_row: usize,
    ) -> Result<Self> {
        let ban_cap = (16 * rows).max(256);
        let penalty_cap = rows * penalized_per_row.min(vocab);
        let mut b = BackendBuffers {
            rows: 0,
            k,
            vocab,
            ban_cap,
            penalty_cap,
            penalty: 1.0,
            applied: false,
            logits: Tensor::zeros([0], DType::F32),
            ids: Tensor::zeros([0], DType::U32),
            vals: Tensor::zeros([0], DType::F32),
            ids_h: Tensor::zeros([0], DType::U32),
            vals_h: Tensor::zeros([0], DType::F32),
            stats: Tensor::zeros([0], DType::F32),
            stats_h: Tensor::zeros([0], DType::F32),
            ban_idx_h: Tensor::zeros([ban_cap], DType::U32),
            ban_idx: be.zeros(&[ban_cap], DType::U32)?,
            penalty_idx_h: Tensor::zeros([penalty_cap], DType::U32),
            penalty_idx: be.zeros(&[penalty_cap], DType::U32)?,
            pool: Vec::new(),
        };
        b.resize(be, rows)?;
        Ok(b)
    }

    /// Buffers for `rows` rows (reallocated only when the count changes).
    pub fn resize(&mut self, be: &dyn Backend, rows: usize) -> Result<()> {
        if rows == self.rows {
            return Ok(());
        }
        let (k, v) = (self.k, self.vocab);
        self.rows = rows;
        self.logits = be.zeros(&[rows, v], DType::F32)?;
        self.ids = be.zeros(&[rows, k], DType::U32)?;
        self.vals = be.zeros(&[rows, k], DType::F32)?;
        self.ids_h = Tensor::zeros([rows, k], DType::U32);
        self.vals_h = Tensor::zeros([rows, k], DType::F32);
        self.stats = be.zeros(&[rows, 2], DType::F32)?;
        self.stats_h = Tensor::zeros([rows, 2], DType::F32);
        self.pool = Vec::with_capacity(rows * k + 64);
        Ok(())
    }

    /// Whether this step's edits were applied to [`logits`](Self::logits) on
    /// the backend: after a fallback the host then re-runs only the
    /// idempotent processors (not the repetition penalty).
    pub fn edits_applied(&self) -> bool {
        self.applied
    }

    /// Edits on the backend: every row's penalised ids, then its banned ids
    /// (-inf), in `self.logits` ([`Backend::repetition_penalty`],
    /// [`Backend::scatter_fill`]); forced rows are left alone (the host knows
    /// them in full). False, with the logits untouched, when there are more
    /// edits than the buffers hold.
    fn apply_edits(&mut self, be: &dyn Backend, edits: &mut [RowEdits]) -> Result<bool> {
        let Some(staged) = self.stage_edits(be, edits)? else {
            return Ok(false);
        };
        if staged.penalized {
            be.repetition_penalty(&mut self.logits, &self.penalty_idx, self.penalty)?;
        }
        if staged.bans {
            be.scatter_fill(&mut self.logits, &self.ban_idx, f32::NEG_INFINITY)?;
        }
        self.applied = true;
        Ok(true)
    }

    /// The first half of [`apply_edits`](Self::apply_edits): every row's
    /// banned ids (sorted and deduplicated here) and penalised ids as flat
    /// positions, uploaded into the fixed-size index buffers (unused ban slots
    /// repeat a real position, unused penalty slots are
    /// [`PENALTY_INDEX_UNUSED`], so the launches are the same every step).
    /// Some(what is staged), or None when there are more edits than the
    /// buffers hold.
    pub(crate) fn stage_edits(
        &mut self,
        be: &dyn Backend,
        edits: &mut [RowEdits],
    ) -> Result<Option<Staged>> {
        self.applied = false;
        let (rows, v) = (self.rows, self.vocab);
        let at = self.ban_idx_h.as_u32_mut_slice()?;
        let mut g = 0usize;
        let mut penalized = 0usize;
        for (i, e) in edits.iter_mut().enumerate().take(rows) {
            e.banned.retain(|&b| (b as usize) < v);
            e.banned.sort_unstable();
            e.banned.dedup();
            if e.is_forced {
                continue;
            }
            if g + e.banned.len() > self.ban_cap {
                return Ok(None);
            }
            for &b in &e.banned {
                at[g] = (i * v) as u32 + b;
                g += 1;
            }
            penalized += e.penalized.len();
        }
        if g > 0 {
            // the unused slots repeat a real position
            let first = at[0];
            at[g..].fill(first);
            be.copy_from_host(&self.ban_idx_h, &mut self.ban_idx)?;
        }
        if penalized > self.penalty_cap {
            return Ok(None);
        }
        if penalized > 0 {
            let at = self.penalty_idx_h.as_u32_mut_slice()?;
            let mut p = 0usize;
            for (i, e) in edits.iter().enumerate().take(rows) {
                if e.is_forced {
                    continue;
                }
                // distinct ids (the processor's), each once
                for &t in e.penalized.iter().filter(|&&t| (t as usize) < v) {
                    at[p] = (i * v) as u32 + t;
                    p += 1;
                }
                self.penalty = e.penalty;
            }
            at[p..].fill(PENALTY_INDEX_UNUSED);
            be.copy_from_host(&self.penalty_idx_h, &mut self.penalty_idx)?;
        }
        Ok(Some(Staged {
            bans: g > 0,
            penalized: penalized > 0,
        }))
    }

    /// Runs `f` with the step's logits buffer and the [`Then`] that queues
    /// `queued`'s ops on it (into this search's buffers).
    pub(crate) fn with_queued<R>(
        &mut self,
        queued: Queued,
        f: impl FnOnce(&mut Tensor, Then<'_>) -> R,
    ) -> R {
        let k = self.k;
        // (the penalty's value is a launch argument the recording keeps)
        let key = [
            queued.key(),
            k,
            self.penalty.to_bits() as usize,
            self.stats.address(),
            self.ids.address(),
            self.vals.address(),
            self.ban_idx.address(),
            self.penalty_idx.address(),
        ];
        self.applied = true;
        let (stats, ids, vals) = (&mut self.stats, &mut self.ids, &mut self.vals);
        let (ban_idx, penalty_idx, penalty) = (&self.ban_idx, &self.penalty_idx, self.penalty);
        let edit = |be: &dyn Backend, logits: &mut Tensor, s: Staged| -> Result<()> {
            if s.penalized {
                be.repetition_penalty(logits, penalty_idx, penalty)?;
            }
            if s.bans {
                be.scatter_fill(logits, ban_idx, f32::NEG_INFINITY)?;
            }
            Ok(())
        };
        let mut ops = |be: &dyn Backend, logits: &mut Tensor| -> Result<()> {
            match queued {
                Queued::GreedyPick(s) => {
                    edit(be, logits, s)?;
                    be.softmax_stats(logits, stats)?;
                    be.topk_into(logits, k, ids, vals)
                }
                Queued::LogSoftmaxTopk(s) => {
                    be.log_softmax(logits)?;
                    edit(be, logits, s)?;
                    be.topk_into(logits, k, ids, vals)
                }
                Queued::EditsTopk(s) => {
                    edit(be, logits, s)?;
                    be.topk_into(logits, k, ids, vals)
                }
            }
        };
        f(&mut self.logits, (&mut ops, &key))
    }

    /// Greedy: the chosen id and its log-prob under the processed row, per
    /// row, from the raw logits in `self.logits` and each row's edits: bans on
    /// the backend, then each row's softmax statistics and best entry (K = 1)
    /// to the host. A forced row needs nothing from the backend. `queued`:
    /// the step queued the edits, statistics and argmax already
    /// ([`Queued::GreedyPick`], after [`BackendBuffers::stage_edits`]).
    pub fn greedy(
        &mut self,
        be: &dyn Backend,
        edits: &mut [RowEdits],
        choice: &mut [(usize, f32)],
        queued: bool,
    ) -> Result<GreedyOutcome> {
        let (rows, v, k) = (self.rows, self.vocab, self.k);
        if !queued {
            if !self.apply_edits(be, edits)? {
                return Ok(GreedyOutcome::Fallback);
            }
            be.softmax_stats(&self.logits, &mut self.stats)?;
            be.topk_into(&self.logits, k, &mut self.ids, &mut self.vals)?;
        }
        // One round trip to the device for the step's three results.
        be.copy_to_host_all(&mut [
            (&self.stats, &mut self.stats_h),
            (&self.ids, &mut self.ids_h),
            (&self.vals, &mut self.vals_h),
        ])?;
        let ids = self.ids_h.as_u32()?;
        let vals = self.vals_h.as_f32()?;
        let stats = self.stats_h.as_f32()?;
        for (i, e) in edits.iter().enumerate().take(rows) {
            if e.is_forced {
                // every id -inf except the forced ones (0): the lowest wins,
                // with log-prob -ln(#forced)
                let mut n = 0usize;
                let mut tok = None;
                for t in live_forced(e, v) {
                    n += 1;
                    tok = Some(tok.map_or(t, |o: u32| o.min(t)));
                }
                let Some(tok) = tok else {
                    return Ok(GreedyOutcome::Fallback);
                };
                choice[i] = (tok as usize, -((n as f64).ln() as f32));
                continue;
            }
            // the argmax of the processed row (ties: the lower id, as topk)
            let (tok, x) = (ids[i * k], vals[i * k]);
            let (m, s) = (stats[2 * i], f64::from(stats[2 * i + 1]));
            // every id banned (the host path decides what that gives), or NaN
            if !x.is_finite() || x != m || s.is_nan() || s < 1.0 {
                return Ok(GreedyOutcome::Fallback);
            }
            // log_softmax(processed)[tok] = (x - max) - ln(sum e^(x - max))
            choice[i] = (tok as usize, (f64::from(x - m) - s.ln()) as f32);
        }
        Ok(GreedyOutcome::Decided)
    }

    /// Beam search (after `log_softmax` of `self.logits` on the backend) and
    /// sampling: the edits there, then every row's top-K to the host. False
    /// (fall back to the full rows) when there are too many edits.
    /// `queued`: the step queued the edits and top-K already
    /// ([`Queued::LogSoftmaxTopk`], [`Queued::EditsTopk`], after
    /// [`BackendBuffers::stage_edits`]).
    pub fn fetch_candidates(
        &mut self,
        be: &dyn Backend,
        edits: &mut [RowEdits],
        queued: bool,
    ) -> Result<bool> {
        if !queued {
            if !self.apply_edits(be, edits)? {
                return Ok(false);
            }
            be.topk_into(&self.logits, self.k, &mut self.ids, &mut self.vals)?;
        }
        be.copy_to_host_all(&mut [(&self.ids, &mut self.ids_h), (&self.vals, &mut self.vals_h)])?;
        Ok(true)
    }

    /// Sampling, after [`fetch_candidates`](Self::fetch_candidates): row `i`'s
    /// candidates as a compact row in id order, `ids` and their edited scores
    /// `vals` (cleared first). A forced row's are its forced ids (0), which are
    /// all its finite entries; any other row's are its top-K. HF's warpers and
    /// draw over them then give what they give over the whole row (see
    /// `LogitsProcessorList::warp_candidates` and `math::sum_f64_at`).
    pub fn sample_candidates(
        &mut self,
        i: usize,
        e: &RowEdits,
        ids: &mut Vec<u32>,
        vals: &mut Vec<f32>,
    ) -> Result<RowCandidates> {
        let (v, k) = (self.vocab, self.k);
        ids.clear();
        vals.clear();
        if e.is_forced {
            ids.extend(live_forced(e, v));
            ids.sort_unstable();
            vals.resize(ids.len(), 0.0);
            return Ok(if ids.is_empty() {
                RowCandidates::Undecidable
            } else {
                RowCandidates::Whole
            });
        }
        let fetched = &self.ids_h.as_u32()?[i * k..(i + 1) * k];
        let scores = &self.vals_h.as_f32()?[i * k..(i + 1) * k];
        if scores.iter().any(|x| x.is_nan()) {
            return Ok(RowCandidates::Undecidable);
        }
        let pool = &mut self.pool;
        pool.clear();
        pool.extend(scores.iter().zip(fetched).map(|(&x, &t)| (x, t)));
        pool.sort_unstable_by_key(|c| c.1);
        ids.extend(pool.iter().map(|c| c.1));
        vals.extend(pool.iter().map(|c| c.0));
        if k >= v {
            return Ok(RowCandidates::Whole);
        }
        // top-k order: the last is the weakest (ties: the highest id)
        let weakest = fetched[k - 1];
        Ok(match ids.binary_search(&weakest) {
            Ok(smallest) => RowCandidates::Partial { smallest },
            Err(_) => RowCandidates::Undecidable,
        })
    }

    /// Beam search, after [`fetch_candidates`](Self::fetch_candidates): the
    /// `cand_score.len()` best (accumulated score, beam * vocab + id) of
    /// source `p` (rows `p * nb .. (p + 1) * nb`, running scores
    /// `beam_scores`), ordered as the host search orders them (score, then the
    /// lower flat index). False when the candidates cannot decide it.
    pub fn beam_candidates(
        &mut self,
        p: usize,
        nb: usize,
        beam_scores: &[f32],
        edits: &[RowEdits],
        cand_score: &mut [f32],
        cand_idx: &mut [u32],
    ) -> Result<bool> {
        let (v, k) = (self.vocab, self.k);
        let keep = cand_score.len();
        let ids = self.ids_h.as_u32()?;
        let vals = self.vals_h.as_f32()?;
        let pool = &mut self.pool;
        pool.clear();
        // best score an id no row sent can have (-inf: every finite entry was sent)
        let mut unseen = f32::NEG_INFINITY;
        for (j, &base) in beam_scores.iter().enumerate().take(nb) {
            let r = p * nb + j;
            let e = &edits[r];
            let flat = (j * v) as u32;
            if e.is_forced {
                // forced ids are 0 (log-prob space, as HF), all others -inf
                for t in live_forced(e, v) {
                    pool.push((0.0 + base, flat + t));
                }
                continue;
            }
            // banned ids are -inf on the backend: they sort last and are left out
            for (&t, &x) in ids[r * k..(r + 1) * k]
                .iter()
                .zip(&vals[r * k..(r + 1) * k])
            {
                if x > f32::NEG_INFINITY || x.is_nan() {
                    pool.push((x + base, flat + t));
                }
            }
            if k < v {
                unseen = unseen.max(vals[r * k + k - 1] + base);
            }
        }
        if pool.iter().any(|c| c.0.is_nan()) || unseen.is_nan() {
            return Ok(false);
        }
        pool.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        if pool.len() >= keep {
            // an unsent id could tie or beat the last one selected
            if unseen >= pool[keep - 1].0 {
                return Ok(false);
            }
        } else {
            if unseen > f32::NEG_INFINITY {
                return Ok(false);
            }
            // every finite entry is in the pool: the rest are -inf, lowest flat index first
            let mut f = 0u32;
            while pool.len() < keep && (f as usize) < nb * v {
                if !pool.iter().any(|c| c.1 == f) {
                    pool.push((f32::NEG_INFINITY, f));
                }
                f += 1;
            }
            if pool.len() < keep {
                return Ok(false);
            }
        }
        for (c, (s, i)) in pool.iter().take(keep).enumerate() {
            cand_score[c] = *s;
            cand_idx[c] = *i;
        }
        Ok(true)
    }
}

/// The ids a forced row leaves at 0 (all others are -inf): its forced ids in
/// the vocabulary, each once, that no later ban took back.
fn live_forced(e: &RowEdits, v: usize) -> impl Iterator<Item = u32> + '_ {
    e.forced
        .iter()
        .enumerate()
        .filter(move |&(q, &t)| {
            (t as usize) < v && !e.forced[..q].contains(&t) && !e.banned.contains(&t)
        })
        .map(|(_, &t)| t)
}

/// A row's candidates for sampling ([`BackendBuffers::sample_candidates`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowCandidates {
    /// Every id that can be drawn is among them.
    Whole,
    /// Ids were not fetched: they are out of the draw if the top-k warper
    /// drops the weakest candidate, at this compact position.
    Partial { smallest: usize },
    /// They cannot decide the step (NaN, no id left).
    Undecidable,
}

/// What [`BackendBuffers::greedy`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GreedyOutcome {
    Decided,
    /// The candidates cannot decide the step: search the full rows.
    Fallback,
}

/// `Tensor` helpers for host u32 buffers.
trait HostU32 {
    fn as_u32_mut_slice(&mut self) -> Result<&mut [u32]>;
}

impl HostU32 for Tensor {
    fn as_u32_mut_slice(&mut self) -> Result<&mut [u32]> {
        match self.host_mut("backend search")? {
            encdec_core::HostStorage::U32(v) => Ok(v.as_mut_slice()),
            h => Err(encdec_core::Error::DTypeMismatch {
                op: "backend search",
                lhs: h.dtype(),
                rhs: DType::U32,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GenerationConfig, GenerationOverrides};
    use crate::processors::{LogitsProcessorList, RowContext};

    fn processors(values: serde_json::Value, vocab: usize) -> LogitsProcessorList {
        let cfg = GenerationConfig::from_values(&values, &GenerationOverrides::default())
            .expect("config");
        LogitsProcessorList::from_config(&cfg, vocab).expect("processors")
    }

    /// What a fallback reads: rows the backend penalised and banned, to which
    /// the host then applies `process_again`, equal the raw rows after the
    /// host's full `process` (the penalty applied once), for rows of both
    /// signs and an id both penalised and banned. And when the edits did not
    /// fit (not applied), the rows are untouched and `edits_applied` is false.
    #[test]
    fn edits_on_the_backend_then_process_again_equal_the_host_processors() {
        let be = encdec_cpu::CpuBackend::with_threads(1);
        let (rows, v) = (3usize, 16usize);
        for penalty in [1.5, 0.7] {
            let mut procs = processors(
                serde_json::json!({"decoder_start_token_id": 0, "eos_token_id": 2,
                                   "repetition_penalty": penalty, "no_repeat_ngram_size": 2,
                                   "bad_words_ids": [[9]]}),
                v,
            );
            let histories: [&[u32]; 3] = [&[0, 5, 7, 5, 7], &[0, 9, 3, 9], &[0, 12, 12, 4, 1]];
            let raw: Vec<f32> = (0..rows * v)
                .map(|i| ((i * 37 % 29) as f32 - 14.0) * 0.375)
                .collect();
            let mut edits: Vec<RowEdits> = (0..rows).map(|_| RowEdits::default()).collect();
            for (r, h) in histories.iter().enumerate() {
                let ctx = RowContext {
                    history: h,
                    source: &[],
                };
                assert!(procs.edits(&ctx, &mut edits[r]));
            }
            let mut bufs = BackendBuffers::new(&be, rows, v, 1, 8).expect("buffers");
            be.copy_from_host(
                &Tensor::from_f32(raw.clone(), [rows, v]).unwrap(),
                &mut bufs.logits,
            )
            .unwrap();
            let mut choice = vec![(0usize, 0f32); rows];
            bufs.greedy(&be, &mut edits, &mut choice, false).unwrap();
            assert!(bufs.edits_applied());
            let mut got = bufs.logits.as_f32().unwrap().to_vec();
            let mut want = raw.clone();
            for (r, h) in histories.iter().enumerate() {
                let ctx = RowContext {
                    history: h,
                    source: &[],
                };
                procs.process_again(&mut got[r * v..(r + 1) * v], &ctx);
                procs.process(&mut want[r * v..(r + 1) * v], &ctx);
            }
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "penalty {penalty}:\n{got:?}\n{want:?}");
            // penalised ids really moved (the test would pass without a penalty otherwise)
            assert_ne!(raw[5], got[5]);

            // More penalised ids than the buffer holds: nothing applied.
            let mut small = BackendBuffers::new(&be, rows, v, 1, 1).expect("buffers");
            be.copy_from_host(
                &Tensor::from_f32(raw.clone(), [rows, v]).unwrap(),
                &mut small.logits,
            )
            .unwrap();
            let out = small.greedy(&be, &mut edits, &mut choice, false).unwrap();
            assert_eq!(out, GreedyOutcome::Fallback);
            assert!(!small.edits_applied());
            assert_eq!(small.logits.as_f32().unwrap(), &raw[..]);
        }
    }
}
