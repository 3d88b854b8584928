//! Greedy search, sampling and beam search with Hugging Face `generate` semantics,
//! driving a [`Seq2SeqModel`] one decoder step at a time.
//!
//! Per batch of sources: `encode` once, `start` with one decoder row per beam
//! (or per returned sample) whose `kv_index` points at its source, then
//! `step` / process / select until done. Beam reordering and rows leaving the
//! batch both go through `select_rows`, so a finished sequence (greedy, sample)
//! or a finished source (beam search) stops costing compute. Outputs come back
//! in input order.
//!
//! Semantics (transformers 5, `GenerationMixin._sample` / `_beam_search`):
//! - greedy: argmax of the processed logits, ties to the lowest id (as
//!   `torch.argmax`); sampling: multinomial over `softmax(processed)`, where the
//!   processors include temperature / top-k / top-p. A row stops at an EOS id
//!   (kept in the output) or when the sequence reaches `max_length` (counting the
//!   decoder start token).
//! - beam search: per step `log_softmax(logits)`, then the processors, plus the
//!   running beam score; the top `max(2, 1 + #eos) * num_beams` candidates over
//!   beams × vocab; those among the first `num_beams` that end in EOS (or reach
//!   `max_length`) become finished hypotheses scored `sum_logprobs / len^length_penalty`
//!   with `len` = generated ids including the EOS, excluding the decoder start
//!   token; the best `num_beams` non-finished candidates continue. `early_stopping`
//!   True / False / "never" are HF's done-conditions, including its heuristic.
//!   Beam sampling (`do_sample` with beams) draws the candidates without
//!   replacement from `softmax(accumulated scores)` instead of taking the top.
//! - scores: beam search reports HF's `sequences_scores`; greedy and sampling
//!   report the sum over generated ids of `log_softmax(processed scores)[id]`
//!   (what HF's `compute_transition_scores(..., normalize_logits=True)` sums to).
//!
//! Where the search runs: on the host (the step's full `[rows, vocab]` logits
//! are copied there), or for greedy, beam search and top-k sampling on the
//! backend ([`crate::backend_search`]): the logits stay where the model
//! computed them, the processors' repetition penalty and bans are applied to
//! them there, and only each row's top-K candidates (greedy: its argmax and
//! softmax statistics; sampling: its top-k + 1, which the host warps and
//! draws from) cross to the host. The default is the backend when it is not
//! the CPU; [`Generator::set_search_on_backend`] forces either. A step
//! searches on the host when a processor does more than penalise repeats or
//! ban ids (sampling without top-k, or top-k above 63) or a trace is asked
//! for, and falls back to the full rows (copied then) when the candidates
//! cannot decide it exactly: a greedy row with every id banned, in beam
//! search an id a row did not send that could reach the selection, in
//! sampling a tie at the k-th score, or too many bans. Beam sampling always
//! searches on the host.
//! [`Generator::search_stats`] counts the steps of each kind.
//!
//! Sampling uses this crate's seeded generator ([`crate::rng`]), one stream per
//! (seed, source index, sample): same distribution as HF, not torch's numbers.
//!
//! Ties between equal scores go to the lower index (candidate order); torch's
//! `topk` does not promise an order for ties, so only exact ties could differ.

use std::time::{SystemTime, UNIX_EPOCH};

use encdec_core::{DType, Device, Error, RangeGuard, Result, Tensor};

use crate::backend_search::{
    BackendBuffers, GreedyOutcome, Queued, RowCandidates, SearchStats, Staged,
};
use crate::config::{EarlyStopping, GenerationConfig, SearchMode};
use crate::math::{
    exp_into, exp_nonpos, log_softmax_in_place, log_sum_exp, max_argmax, max_of, sum_exp,
    sum_f64_at,
};
use crate::model::{DecoderState, EncoderOutput, Seq2SeqModel};
use crate::processors::{LogitsProcessorList, RowContext, RowEdits};
use crate::rng::Rng;

/// One generated sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Generated ids after the decoder start token; a forced BOS and the final
    /// EOS are included when produced. No padding.
    pub ids: Vec<u32>,
    /// Beam search: the length-penalised sum of log-probs (HF `sequences_scores`).
    /// Greedy / sampling: the sum of log-probs of the chosen ids under the
    /// processed distribution.
    pub score: f32,
}

/// Number of alternatives a trace event carries.
pub const TRACE_TOP: usize = 5;

/// One decoding decision, for `--trace`.
#[derive(Debug, Clone, Copy)]
pub struct TraceEvent<'a> {
    /// Index of the generated id (0 = first id after the decoder start token).
    pub step: usize,
    /// The caller's index of the source.
    pub source: usize,
    /// Greedy / sampling: the sample index. Beam search: the beam slot the
    /// extended sequence occupies after this step.
    pub row: usize,
    /// Beam search: the beam slot that was extended. Otherwise equal to `row`.
    pub parent: usize,
    pub token: u32,
    /// Probability of `token` under the processed distribution of the row
    /// that produced it (renormalised).
    pub prob: f32,
    /// The most likely ids of that distribution with their probabilities, best first.
    pub alternatives: &'a [(u32, f32)],
}

/// A trace callback.
pub type TraceFn<'a> = dyn FnMut(&TraceEvent<'_>) + Send + 'a;

/// Indices of `lengths` sorted longest first (stable), cut into batches of
/// `batch_size`: sources of similar length share a batch, so padding is small.
pub fn plan_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// Drives a model with one resolved [`GenerationConfig`].
pub struct Generator<'m> {
    model: &'m dyn Seq2SeqModel,
    cfg: GenerationConfig,
    procs: LogitsProcessorList,
    vocab: usize,
    seed: u64,
    /// None: search on the backend when it is not the host's (a GPU).
    search_on_backend: Option<bool>,
    stats: SearchStats,
}

/// Candidates per row beam search on the backend fetches beyond the ones HF keeps.
const BEAM_EXTRA_K: usize = 4;
/// Most candidates per row search on the backend fetches (the CUDA top-k
/// kernel's limit); a beam search that needs more stays on the host.
const MAX_BACKEND_K: usize = 64;

impl<'m> Generator<'m> {
    /// Validates `cfg` against the model and builds the processors.
    pub fn new(model: &'m dyn Seq2SeqModel, cfg: GenerationConfig) -> Result<Self> {
        cfg.validate()?;
        let spec = model.spec();
        cfg.validate_for_model(spec)?;
        let vocab = spec.vocab_size;
        if vocab == 0 {
            return Err(Error::Invalid(
                "model reports a vocabulary of size 0".into(),
            ));
        }
        let procs = LogitsProcessorList::from_config(&cfg, vocab)?;
        if cfg.num_beams > 1 {
            let keep = (1 + cfg.eos_token_id.len()).max(2) * cfg.num_beams;
            if cfg.num_beams * vocab < keep {
                return Err(Error::Invalid(format!(
                    "num_beams {} needs {keep} candidates per step but the vocabulary has only {vocab} ids",
                    cfg.num_beams
                )));
            }
        }
        let seed = cfg.seed.unwrap_or_else(|| {
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            crate::rng::splitmix64(t ^ u64::from(std::process::id()))
        });
        Ok(Generator {
            model,
            cfg,
            procs,
            vocab,
            seed,
            search_on_backend: None,
            stats: SearchStats::default(),
        })
    }

    /// Where greedy and beam search run: `Some(true)` on the backend (the
    /// logits stay there, only each row's best candidates come to the host),
    /// `Some(false)` on the host (the full logits come to the host every
    /// step), `None` (the default) on the backend when it is not the CPU.
    /// Sampling, beam sampling and tracing always search on the host; see
    /// [`crate::backend_search`] for when a step falls back to the full rows.
    pub fn set_search_on_backend(&mut self, on: Option<bool>) {
        self.search_on_backend = on;
    }

    /// Where the decode steps' search ran so far.
    pub fn search_stats(&self) -> SearchStats {
        self.stats
    }

    /// Whether this generation searches on the backend, and with how many
    /// candidates per row: greedy / beam search whose processors only ban
    /// ids, sampling whose warpers end in a top-k, no trace, and the choice
    /// (or the default) asks for it.
    fn backend_k(&mut self, tracing: bool) -> Option<usize> {
        let on = self
            .search_on_backend
            .unwrap_or(self.model.backend().device() != Device::Cpu);
        if !on || tracing {
            return None;
        }
        if self.cfg.do_sample {
            if self.cfg.num_beams > 1 {
                return None;
            }
            // the top-k, and one more to see whether ids not fetched tie the k-th
            let k = self.procs.sampling_top_k()?.saturating_add(1);
            if k > MAX_BACKEND_K && k < self.vocab {
                return None;
            }
            return Some(k.min(self.vocab));
        }
        if !self.procs.only_edits() {
            return None;
        }
        let cfg = &self.cfg;
        // greedy: the argmax of the banned row; beam search: the candidates
        // HF keeps, plus a few to bound what a row did not send
        let k = if cfg.num_beams > 1 {
            (1 + cfg.eos_token_id.len()).max(2) * cfg.num_beams + BEAM_EXTRA_K
        } else {
            1
        };
        if k > MAX_BACKEND_K && k < self.vocab {
            return None;
        }
        Some(k.min(self.vocab))
    }

    /// The most ids the repetition penalty changes in one row (its history
    /// is at most `max_length` ids); 0 without the penalty.
    fn penalized_per_row(&self) -> usize {
        if self.cfg.repetition_penalty != 1.0 {
            self.cfg.max_length
        } else {
            0
        }
    }

    pub fn config(&self) -> &GenerationConfig {
        &self.cfg
    }

    /// The seed sampling uses (the configured one, or the one drawn when unset).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// HF class names of the processors, in order.
    pub fn processor_names(&self) -> Vec<&'static str> {
        self.procs.names()
    }

    /// Generate for every source, in batches of `batch_size` sources sorted by
    /// length; results in input order, `num_return_sequences` hypotheses each
    /// (beam search: best first).
    pub fn generate_all(
        &mut self,
        sources: &[Vec<u32>],
        batch_size: usize,
        mut trace: Option<&mut TraceFn<'_>>,
    ) -> Result<Vec<Vec<Hypothesis>>> {
        let lengths: Vec<usize> = sources.iter().map(Vec::len).collect();
        let mut out: Vec<Option<Vec<Hypothesis>>> = vec![None; sources.len()];
        for batch in plan_batches(&lengths, batch_size) {
            let items: Vec<(usize, &[u32])> =
                batch.iter().map(|&i| (i, sources[i].as_slice())).collect();
            let res = self.generate_indexed(&items, trace.as_deref_mut())?;
            for (&i, hyps) in batch.iter().zip(res) {
                out[i] = Some(hyps);
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Generate for one batch, sources numbered 0.. (see [`Self::generate_indexed`]).
    pub fn generate(
        &mut self,
        sources: &[Vec<u32>],
        trace: Option<&mut TraceFn<'_>>,
    ) -> Result<Vec<Vec<Hypothesis>>> {
        let items: Vec<(usize, &[u32])> = sources
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.as_slice()))
            .collect();
        self.generate_indexed(&items, trace)
    }

    /// Generate for one batch of `(index, source ids)`: the index is the caller's
    /// numbering (trace events, sampling streams). One encoder call for the batch.
    pub fn generate_indexed(
        &mut self,
        batch: &[(usize, &[u32])],
        trace: Option<&mut TraceFn<'_>>,
    ) -> Result<Vec<Vec<Hypothesis>>> {
        let model = self.model;
        let mut trace = trace;
        let mut result = None;
        model.backend().run_scoped(&mut || {
            result = Some(self.generate_here(batch, trace.take()));
        });
        result.unwrap_or_else(|| {
            Err(Error::Invalid(
                "the backend returned without running the generation".into(),
            ))
        })
    }

    /// [`generate_indexed`](Self::generate_indexed) on the calling thread.
    fn generate_here(
        &mut self,
        batch: &[(usize, &[u32])],
        trace: Option<&mut TraceFn<'_>>,
    ) -> Result<Vec<Vec<Hypothesis>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let sources: Vec<Vec<u32>> = batch.iter().map(|(_, s)| s.to_vec()).collect();
        let indices: Vec<usize> = batch.iter().map(|(i, _)| *i).collect();
        let enc = {
            let _range = RangeGuard::open(self.model.backend(), "encode");
            self.model.encode(&sources)?
        };
        if enc.sources != sources.len() {
            return Err(Error::Invalid(format!(
                "encoder returned {} sources for a batch of {}",
                enc.sources,
                sources.len()
            )));
        }
        match self.cfg.mode() {
            SearchMode::Greedy | SearchMode::Sample => {
                self.run_sampling(&enc, &sources, &indices, trace)
            }
            SearchMode::BeamSearch | SearchMode::BeamSample => {
                self.run_beam(&enc, &sources, &indices, trace)
            }
        }
    }

    fn step(
        &self,
        enc: &EncoderOutput,
        state: &mut DecoderState,
        tokens: &[u32],
        logits: &mut Tensor,
    ) -> Result<()> {
        {
            let _range = RangeGuard::open(self.model.backend(), "decode step");
            self.model.step(enc, state, tokens, logits)?;
        }
        if logits.dims() != [tokens.len(), self.vocab] {
            return Err(Error::Invalid(format!(
                "model step returned logits of shape {:?}, expected [{}, {}]",
                logits.dims(),
                tokens.len(),
                self.vocab
            )));
        }
        Ok(())
    }

    /// A decode step that leaves the logits on the backend (`bufs.logits`).
    fn step_on_backend(
        &self,
        enc: &EncoderOutput,
        state: &mut DecoderState,
        tokens: &[u32],
        bufs: &mut BackendBuffers,
    ) -> Result<()> {
        let _range = RangeGuard::open(self.model.backend(), "decode step");
        self.model
            .step_on_backend(enc, state, tokens, &mut bufs.logits)
    }

    /// A decode step on the backend with the search ops `ops(any bans)` queued
    /// after it (the model records them with the step's ops), once `edits`'
    /// bans are staged. False when the bans overflow their buffer: the step
    /// then ran alone and the full rows must come back.
    fn step_then(
        &self,
        enc: &EncoderOutput,
        state: &mut DecoderState,
        tokens: &[u32],
        bufs: &mut BackendBuffers,
        edits: &mut [RowEdits],
        ops: impl FnOnce(Staged) -> Queued,
    ) -> Result<bool> {
        let Some(staged) = bufs.stage_edits(self.model.backend(), edits)? else {
            self.step_on_backend(enc, state, tokens, bufs)?;
            return Ok(false);
        };
        let _range = RangeGuard::open(self.model.backend(), "decode step");
        bufs.with_queued(ops(staged), |logits, then| {
            self.model
                .step_on_backend_then(enc, state, tokens, logits, then)
        })?;
        Ok(true)
    }

    // -----------------------------------------------------------------------------
    // greedy and sampling
    // -----------------------------------------------------------------------------

    fn run_sampling(
        &mut self,
        enc: &EncoderOutput,
        sources: &[Vec<u32>],
        indices: &[usize],
        mut trace: Option<&mut TraceFn<'_>>,
    ) -> Result<Vec<Vec<Hypothesis>>> {
        let sample = self.cfg.do_sample;
        let per = if sample {
            self.cfg.num_return_sequences
        } else {
            1
        };
        let n = sources.len();
        let rows = n * per;
        let v = self.vocab;
        let ml = self.cfg.max_length;
        let eos = self.cfg.eos_token_id.clone();

        let source_of_row: Vec<u32> = (0..rows).map(|r| (r / per) as u32).collect();
        let mut state = self.model.start(enc, &source_of_row, ml - 1)?;
        let mut hist = vec![0u32; rows * ml];
        let mut hlen = vec![1usize; rows];
        for r in 0..rows {
            hist[r * ml] = self.cfg.decoder_start_token_id;
        }
        let mut score = vec![0f64; rows];
        let mut active: Vec<usize> = (0..rows).collect();
        let mut keep: Vec<u32> = Vec::with_capacity(rows);
        let mut tokens = vec![0u32; rows];
        let mut logits = Tensor::zeros([rows, v], DType::F32);
        let mut rngs: Vec<Rng> = (0..rows)
            .map(|r| Rng::for_row(self.seed, indices[r / per], r % per))
            .collect();
        let mut top = [(0u32, 0f32); TRACE_TOP];
        let mut probs = vec![0f32; if sample { v } else { 0 }];
        let model = self.model;
        let be = model.backend();
        let backend_k = self.backend_k(trace.is_some());
        let mut bufs = match backend_k {
            Some(k) => Some(BackendBuffers::new(
                be,
                rows,
                v,
                k,
                self.penalized_per_row(),
            )?),
            None => None,
        };
        let mut edits: Vec<RowEdits> = (0..if bufs.is_some() { rows } else { 0 })
            .map(|_| RowEdits::default())
            .collect();
        let mut choice = vec![(0usize, 0f32); rows];
        let mut draw = SampleScratch::new(
            if sample && bufs.is_some() { rows } else { 0 },
            backend_k.unwrap_or(0) + 16,
        );

        let mut cur_len = 1;
        loop {
            let na = active.len();
            for (i, &r) in active.iter().enumerate() {
                tokens[i] = hist[r * ml + hlen[r] - 1];
            }
            // search on the backend when every row's processors only
            // penalise, ban or force
            let mut decided = false;
            // the backend applied the edits to the rows the host reads back
            let mut edited = false;
            if let Some(bufs) = bufs.as_mut() {
                let mut only_bans = true;
                for (i, &r) in active.iter().enumerate() {
                    let ctx = RowContext {
                        history: &hist[r * ml..r * ml + hlen[r]],
                        source: &sources[r / per],
                    };
                    let edits = &mut edits[i];
                    let ok = if sample {
                        self.procs.edits_before_warpers(&ctx, edits)
                    } else {
                        self.procs.edits(&ctx, edits)
                    };
                    if !ok {
                        only_bans = false;
                        break;
                    }
                }
                if only_bans {
                    // The edits and the argmax and statistics (greedy) or every
                    // row's top-k + 1 (sampling: the host warps and draws from
                    // them) run with the step.
                    let ops: fn(Staged) -> Queued = if sample {
                        Queued::EditsTopk
                    } else {
                        Queued::GreedyPick
                    };
                    let queued = self.step_then(
                        enc,
                        &mut state,
                        &tokens[..na],
                        bufs,
                        &mut edits[..na],
                        ops,
                    )?;
                    decided = if sample {
                        bufs.fetch_candidates(be, &mut edits[..na], queued)?
                            && self.sample_on_candidates(
                                bufs,
                                &edits[..na],
                                &active,
                                &hist,
                                &hlen,
                                sources,
                                &mut rngs,
                                &mut draw,
                                &mut choice[..na],
                            )?
                    } else {
                        let out = bufs.greedy(be, &mut edits[..na], &mut choice[..na], queued)?;
                        out == GreedyOutcome::Decided
                    };
                    if decided {
                        self.stats.backend_steps += 1;
                    } else {
                        be.copy_to_host(&bufs.logits, &mut logits)?;
                        edited = bufs.edits_applied();
                        self.stats.fallback_steps += 1;
                    }
                } else {
                    self.step(enc, &mut state, &tokens[..na], &mut logits)?;
                    self.stats.host_steps += 1;
                }
            } else {
                self.step(enc, &mut state, &tokens[..na], &mut logits)?;
                self.stats.host_steps += 1;
            }
            self.stats.count_recordings(&mut state.recorded);
            let data: &mut [f32] = if decided {
                &mut []
            } else {
                logits.as_f32_mut()?
            };
            keep.clear();
            for (i, &r) in active.iter().enumerate() {
                if decided {
                    let (tok, lp) = choice[i];
                    score[r] += f64::from(lp);
                    hist[r * ml + hlen[r]] = tok as u32;
                    hlen[r] += 1;
                    if !eos.contains(&(tok as u32)) {
                        keep.push(i as u32);
                    }
                    continue;
                }
                let row = &mut data[i * v..(i + 1) * v];
                let ctx = RowContext {
                    history: &hist[r * ml..r * ml + hlen[r]],
                    source: &sources[r / per],
                };
                if edited {
                    self.procs.process_again(row, &ctx);
                } else {
                    self.procs.process(row, &ctx);
                }
                let (max, tok, total) = if sample {
                    let max = max_of(row);
                    let (tok, total) = sample_row(row, max, &mut probs, &mut rngs[r]);
                    (max, tok, total)
                } else {
                    let (max, tok) = max_argmax(row);
                    (max, tok, sum_exp(row, max))
                };
                let log_sum = total.ln() as f32;
                let lp = (row[tok] - max) - log_sum;
                score[r] += f64::from(lp);
                if let Some(t) = trace.as_deref_mut() {
                    let k = top_probs(row, max, log_sum, &mut top);
                    t(&TraceEvent {
                        step: cur_len - 1,
                        source: indices[r / per],
                        row: r % per,
                        parent: r % per,
                        token: tok as u32,
                        prob: lp.exp(),
                        alternatives: &top[..k],
                    });
                }
                hist[r * ml + hlen[r]] = tok as u32;
                hlen[r] += 1;
                if !eos.contains(&(tok as u32)) {
                    keep.push(i as u32);
                }
            }
            cur_len += 1;
            if cur_len >= ml || keep.is_empty() {
                break;
            }
            if keep.len() < na {
                // finished rows leave the batch
                self.model.select_rows(&mut state, &keep)?;
                for (j, &i) in keep.iter().enumerate() {
                    active[j] = active[i as usize];
                }
                active.truncate(keep.len());
                logits = Tensor::zeros([keep.len(), v], DType::F32);
                if let Some(b) = bufs.as_mut() {
                    b.resize(be, keep.len())?;
                }
            }
        }

        Ok((0..n)
            .map(|s| {
                (0..per)
                    .map(|j| {
                        let r = s * per + j;
                        Hypothesis {
                            ids: hist[r * ml + 1..r * ml + hlen[r]].to_vec(),
                            score: score[r] as f32,
                        }
                    })
                    .collect()
            })
            .collect())
    }

    /// Sampling on the backend's candidates: per active row `i`, HF's warpers
    /// and draw over the compact row of its candidates
    /// ([`BackendBuffers::sample_candidates`]), which give the id and log-prob
    /// the whole row gives, into `choice[i]`. The rows' generators advance
    /// only when every row was decided; false (nothing drawn) when a row's
    /// candidates cannot decide it.
    #[allow(clippy::too_many_arguments)]
    fn sample_on_candidates(
        &mut self,
        bufs: &mut BackendBuffers,
        edits: &[RowEdits],
        active: &[usize],
        hist: &[u32],
        hlen: &[usize],
        sources: &[Vec<u32>],
        rngs: &mut [Rng],
        draw: &mut SampleScratch,
        choice: &mut [(usize, f32)],
    ) -> Result<bool> {
        let (ml, v) = (self.cfg.max_length, self.vocab);
        let per = rngs.len() / sources.len().max(1);
        let SampleScratch {
            ids,
            vals,
            probs,
            next,
        } = draw;
        for (i, &r) in active.iter().enumerate() {
            let smallest = match bufs.sample_candidates(i, &edits[i], ids, vals)? {
                RowCandidates::Undecidable => return Ok(false),
                RowCandidates::Whole => None,
                RowCandidates::Partial { smallest } => Some(smallest),
            };
            let ctx = RowContext {
                history: &hist[r * ml..r * ml + hlen[r]],
                source: &sources[r / per],
            };
            if !self.procs.warp_candidates(vals, &ctx, smallest) {
                return Ok(false);
            }
            let max = max_of(vals);
            if !max.is_finite() {
                return Ok(false);
            }
            probs.clear();
            probs.extend(vals.iter().map(|&x| exp_nonpos(x - max)));
            let total = sum_f64_at(probs, ids, v);
            next[i] = rngs[r].clone();
            let j = draw_from(probs, total, &mut next[i]);
            let log_sum = total.ln() as f32;
            choice[i] = (ids[j] as usize, (vals[j] - max) - log_sum);
        }
        for (i, &r) in active.iter().enumerate() {
            rngs[r] = next[i].clone();
        }
        Ok(true)
    }

    // -----------------------------------------------------------------------------
    // beam search
    // -----------------------------------------------------------------------------

    fn run_beam(
        &mut self,
        enc: &EncoderOutput,
        sources: &[Vec<u32>],
        indices: &[usize],
        mut trace: Option<&mut TraceFn<'_>>,
    ) -> Result<Vec<Vec<Hypothesis>>> {
        let cfg = &self.cfg;
        let sample = cfg.do_sample;
        let nb = cfg.num_beams;
        let n = sources.len();
        let v = self.vocab;
        let ml = cfg.max_length;
        let eos = cfg.eos_token_id.clone();
        let k_keep = (1 + eos.len()).max(2) * nb;
        let es = cfg.early_stopping;
        let lp = cfg.length_penalty;
        let nrs = cfg.num_return_sequences;
        let start = cfg.decoder_start_token_id;
        let fill = cfg.pad_token_id.unwrap_or(0);
        const BIG: f32 = -1.0e9;

        let source_of_row: Vec<u32> = (0..n * nb).map(|r| (r / nb) as u32).collect();
        let mut state = self.model.start(enc, &source_of_row, ml - 1)?;

        // running beams (all of length cur_len) and finished slots, per source
        let mut run = vec![fill; n * nb * ml];
        let mut run_next = run.clone();
        let mut run_score = vec![0f32; n * nb];
        let mut run_score_next = run_score.clone();
        let mut fin = run.clone();
        let mut fin_next = run.clone();
        let mut fin_len = vec![1usize; n * nb];
        let mut fin_len_next = fin_len.clone();
        let mut fin_score = vec![BIG; n * nb];
        let mut fin_score_next = fin_score.clone();
        let mut fin_flag = vec![false; n * nb];
        let mut fin_flag_next = fin_flag.clone();
        for b in 0..n {
            for j in 0..nb {
                run[(b * nb + j) * ml] = start;
                fin[(b * nb + j) * ml] = start;
                run_score[b * nb + j] = if j == 0 { 0.0 } else { BIG };
            }
        }
        let mut unsatisfied = vec![true; n];
        let mut done = vec![false; n];

        // per-step scratch
        let mut cand_score = vec![0f32; k_keep];
        let mut cand_idx = vec![0u32; k_keep];
        let mut cand_hit = vec![false; k_keep];
        let mut order: Vec<usize> = Vec::with_capacity(k_keep + nb);
        let mut merged: Vec<(f32, bool)> = Vec::with_capacity(k_keep + nb);
        let mut probs: Vec<f32> = if sample {
            Vec::with_capacity(nb * v)
        } else {
            Vec::new()
        };
        let mut rng = Vec::with_capacity(if sample { n } else { 0 });
        if sample {
            for &i in indices {
                rng.push(Rng::for_row(self.seed, i, 0));
            }
        }
        let tracing = trace.is_some();
        let mut row_top = vec![(0u32, 0f32); if tracing { n * nb * TRACE_TOP } else { 0 }];
        let mut row_topn = vec![0usize; if tracing { n * nb } else { 0 }];
        let mut row_lse = vec![(0f32, 0f32); if tracing { n * nb } else { 0 }];

        let mut active: Vec<usize> = (0..n).collect();
        let mut next_active: Vec<usize> = Vec::with_capacity(n);
        let mut select: Vec<u32> = Vec::with_capacity(n * nb);
        let mut tokens = vec![0u32; n * nb];
        let mut logits = Tensor::zeros([n * nb, v], DType::F32);
        let model = self.model;
        let be = model.backend();
        let mut bufs = match self.backend_k(tracing) {
            Some(k) => Some(BackendBuffers::new(
                be,
                n * nb,
                v,
                k,
                self.penalized_per_row(),
            )?),
            None => None,
        };
        let mut edits: Vec<RowEdits> = (0..if bufs.is_some() { n * nb } else { 0 })
            .map(|_| RowEdits::default())
            .collect();
        let mut dev_score = vec![0f32; if bufs.is_some() { n * k_keep } else { 0 }];
        let mut dev_idx = vec![0u32; dev_score.len()];

        let mut cur_len = 1usize;
        loop {
            let na = active.len();
            for (p, &b) in active.iter().enumerate() {
                for j in 0..nb {
                    tokens[p * nb + j] = run[(b * nb + j) * ml + cur_len - 1];
                }
            }
            // search on the backend when every row's processors only ban ids:
            // log_softmax there, each row's best candidates to the host
            let mut decided = false;
            let mut normalized = false;
            let mut edited = false;
            if let Some(bufs) = bufs.as_mut() {
                let mut only_bans = true;
                'rows: for (p, &b) in active.iter().enumerate() {
                    for j in 0..nb {
                        let hist_at = (b * nb + j) * ml;
                        let ctx = RowContext {
                            history: &run[hist_at..hist_at + cur_len],
                            source: &sources[b],
                        };
                        if !self.procs.edits(&ctx, &mut edits[p * nb + j]) {
                            only_bans = false;
                            break 'rows;
                        }
                    }
                }
                if only_bans {
                    // The log-softmax, bans and top-K run with the step.
                    let queued = self.step_then(
                        enc,
                        &mut state,
                        &tokens[..na * nb],
                        bufs,
                        &mut edits[..na * nb],
                        Queued::LogSoftmaxTopk,
                    )?;
                    if !queued {
                        be.log_softmax(&mut bufs.logits)?;
                    }
                    normalized = true;
                    decided = bufs.fetch_candidates(be, &mut edits[..na * nb], queued)?;
                    for (p, &b) in active.iter().enumerate().take(if decided { na } else { 0 }) {
                        let at = p * k_keep..(p + 1) * k_keep;
                        if !bufs.beam_candidates(
                            p,
                            nb,
                            &run_score[b * nb..(b + 1) * nb],
                            &edits,
                            &mut dev_score[at.clone()],
                            &mut dev_idx[at],
                        )? {
                            decided = false;
                            break;
                        }
                    }
                    if decided {
                        self.stats.backend_steps += 1;
                    } else {
                        be.copy_to_host(&bufs.logits, &mut logits)?;
                        edited = bufs.edits_applied();
                        self.stats.fallback_steps += 1;
                    }
                } else {
                    self.step(enc, &mut state, &tokens[..na * nb], &mut logits)?;
                    self.stats.host_steps += 1;
                }
            } else {
                self.step(enc, &mut state, &tokens[..na * nb], &mut logits)?;
                self.stats.host_steps += 1;
            }
            self.stats.count_recordings(&mut state.recorded);
            let data: &mut [f32] = if decided {
                &mut []
            } else {
                logits.as_f32_mut()?
            };
            select.clear();
            next_active.clear();

            for (p, &b) in active.iter().enumerate() {
                // b. log-probs, processors, accumulated scores; c. top-K candidates
                let mut count = 0usize;
                if decided {
                    cand_score.copy_from_slice(&dev_score[p * k_keep..(p + 1) * k_keep]);
                    cand_idx.copy_from_slice(&dev_idx[p * k_keep..(p + 1) * k_keep]);
                }
                for j in 0..if decided { 0 } else { nb } {
                    let r = p * nb + j;
                    let row = &mut data[r * v..(r + 1) * v];
                    if !normalized {
                        // (after a fallback the backend's log_softmax is in the row)
                        log_softmax_in_place(row);
                    }
                    let hist_at = (b * nb + j) * ml;
                    let ctx = RowContext {
                        history: &run[hist_at..hist_at + cur_len],
                        source: &sources[b],
                    };
                    if edited {
                        self.procs.process_again(row, &ctx);
                    } else {
                        self.procs.process(row, &ctx);
                    }
                    if tracing {
                        let (max, ls) = log_sum_exp(row);
                        row_lse[r] = (max, ls);
                        let mut top = [(0u32, 0f32); TRACE_TOP];
                        let k = top_probs(row, max, ls, &mut top);
                        row_top[r * TRACE_TOP..r * TRACE_TOP + k].copy_from_slice(&top[..k]);
                        row_topn[r] = k;
                    }
                    if !sample {
                        let base = run_score[b * nb + j];
                        for (t, &x) in row.iter().enumerate() {
                            let s = x + base;
                            if count < k_keep || s > cand_score[k_keep - 1] {
                                insert_top(
                                    &mut cand_score,
                                    &mut cand_idx,
                                    &mut count,
                                    s,
                                    (j * v + t) as u32,
                                );
                            }
                        }
                    }
                }
                if sample && !decided {
                    let rows = &data[p * nb * v..(p + 1) * nb * v];
                    sample_candidates(
                        rows,
                        &run_score[b * nb..(b + 1) * nb],
                        v,
                        &mut probs,
                        &mut rng[b],
                        &mut cand_score,
                        &mut cand_idx,
                    );
                }
                // d. which candidates hit a stopping criterion
                for k in 0..k_keep {
                    let tok = cand_idx[k] % v as u32;
                    cand_hit[k] = cur_len + 1 >= ml || eos.contains(&tok);
                }
                // e. the running beams of the next step: best non-finished
                order.clear();
                order.extend(0..k_keep);
                let rlp = |k: usize| cand_score[k] + if cand_hit[k] { BIG } else { -0.0 };
                order.sort_unstable_by(|&a, &c| rlp(c).total_cmp(&rlp(a)).then(a.cmp(&c)));
                for j in 0..nb {
                    let k = order[j];
                    let parent = cand_idx[k] as usize / v;
                    let tok = cand_idx[k] % v as u32;
                    let src = (b * nb + parent) * ml;
                    let dst = (b * nb + j) * ml;
                    run_next[dst..dst + cur_len].copy_from_slice(&run[src..src + cur_len]);
                    run_next[dst + cur_len] = tok;
                    run_score_next[b * nb + j] = rlp(k);
                    select.push((p * nb + parent) as u32);
                    if let Some(t) = trace.as_deref_mut() {
                        let r = p * nb + parent;
                        let (max, ls) = row_lse[r];
                        let x = data[r * v + tok as usize];
                        t(&TraceEvent {
                            step: cur_len - 1,
                            source: indices[b],
                            row: j,
                            parent,
                            token: tok,
                            prob: ((x - max) - ls).exp(),
                            alternatives: &row_top[r * TRACE_TOP..r * TRACE_TOP + row_topn[r]],
                        });
                    }
                }
                // f. finished hypotheses: merge the new ones into the best num_beams
                let div = (cur_len as f64).powf(lp) as f32;
                let all_fin = fin_flag[b * nb..(b + 1) * nb].iter().all(|&f| f);
                let full = all_fin && es == EarlyStopping::True;
                merged.clear();
                for i in 0..nb {
                    merged.push((fin_score[b * nb + i], fin_flag[b * nb + i]));
                }
                for k in 0..k_keep {
                    let mut s = cand_score[k] / div;
                    if full {
                        s += BIG;
                    }
                    if !unsatisfied[b] {
                        s += BIG;
                    }
                    let did = cand_hit[k] && k < nb;
                    if !did {
                        s += BIG;
                    }
                    merged.push((s, did));
                }
                order.clear();
                order.extend(0..merged.len());
                order
                    .sort_unstable_by(|&a, &c| merged[c].0.total_cmp(&merged[a].0).then(a.cmp(&c)));
                for (i, &m) in order.iter().take(nb).enumerate() {
                    let dst = (b * nb + i) * ml;
                    let slot = b * nb + i;
                    if m < nb {
                        let src = (b * nb + m) * ml;
                        let len = fin_len[b * nb + m];
                        fin_next[dst..dst + len].copy_from_slice(&fin[src..src + len]);
                        fin_len_next[slot] = len;
                    } else {
                        let k = m - nb;
                        let parent = cand_idx[k] as usize / v;
                        let src = (b * nb + parent) * ml;
                        fin_next[dst..dst + cur_len].copy_from_slice(&run[src..src + cur_len]);
                        fin_next[dst + cur_len] = cand_idx[k] % v as u32;
                        fin_len_next[slot] = cur_len + 1;
                    }
                    fin_score_next[slot] = merged[m].0;
                    fin_flag_next[slot] = merged[m].1;
                }
            }
            // the new running beams and finished slots replace the old ones
            for &b in active.iter() {
                for j in 0..nb {
                    let at = (b * nb + j) * ml;
                    run[at..at + cur_len + 1].copy_from_slice(&run_next[at..at + cur_len + 1]);
                    let slot = b * nb + j;
                    let len = fin_len_next[slot];
                    fin[at..at + len].copy_from_slice(&fin_next[at..at + len]);
                    fin_len[slot] = len;
                    run_score[slot] = run_score_next[slot];
                    fin_score[slot] = fin_score_next[slot];
                    fin_flag[slot] = fin_flag_next[slot];
                }
            }
            cur_len += 1;

            // g. the early-stop heuristic and per-source completion
            for (p, &b) in active.iter().enumerate() {
                let best_len = if es == EarlyStopping::Never && lp > 0.0 {
                    ml - 1
                } else {
                    cur_len - 1
                };
                let best = run_score[b * nb] / (best_len as f64).powf(lp) as f32;
                let slots = b * nb..(b + 1) * nb;
                let min_fin = fin_score[slots.clone()]
                    .iter()
                    .copied()
                    .fold(f32::INFINITY, f32::min);
                let improvable = fin_flag[slots.clone()]
                    .iter()
                    .any(|&f| best > if f { min_fin } else { BIG });
                unsatisfied[b] = unsatisfied[b] && improvable;
                let all_fin = fin_flag[slots].iter().all(|&f| f);
                done[b] = !unsatisfied[b] || (es == EarlyStopping::True && all_fin);
                if !done[b] {
                    next_active.push(p);
                }
            }
            if cur_len >= ml || next_active.is_empty() {
                break;
            }
            // reorder beams and drop finished sources in one gather
            let mut w = 0;
            for &p in &next_active {
                for j in 0..nb {
                    select[w] = select[p * nb + j];
                    w += 1;
                }
            }
            select.truncate(w);
            self.model.select_rows(&mut state, &select)?;
            if next_active.len() < na {
                for (i, &p) in next_active.iter().enumerate() {
                    active[i] = active[p];
                }
                active.truncate(next_active.len());
                logits = Tensor::zeros([active.len() * nb, v], DType::F32);
                if let Some(b) = bufs.as_mut() {
                    b.resize(be, active.len() * nb)?;
                }
            }
        }

        Ok((0..n)
            .map(|b| {
                (0..nrs)
                    .map(|i| {
                        let slot = b * nb + i;
                        let at = slot * ml;
                        let len = if fin_flag[slot] { fin_len[slot] } else { 1 };
                        Hypothesis {
                            ids: fin[at + 1..at + len].to_vec(),
                            score: fin_score[slot],
                        }
                    })
                    .collect()
            })
            .collect())
    }
}

// ---------------------------------------------------------------------------------
// row helpers
// ---------------------------------------------------------------------------------

/// One draw from `softmax(row)`: `probs` receives `e^(x - max)`, `total` their sum.
fn sample_row(row: &[f32], max: f32, probs: &mut [f32], rng: &mut Rng) -> (usize, f64) {
    let probs = &mut probs[..row.len()];
    let total = exp_into(row, max, probs);
    (draw_from(probs, total, rng), total)
}

/// The index where the running sum of the positive `probs` (in order) first
/// passes a uniform draw times `total` (rounding: the last positive one).
/// Zeros neither move the sum nor get drawn, so a row's nonzero entries
/// alone, in the same order, draw the same entry.
fn draw_from(probs: &[f32], total: f64, rng: &mut Rng) -> usize {
    let target = rng.next_f64() * total;
    let mut cum = 0.0;
    let mut last = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            cum += f64::from(p);
            last = i;
            if cum > target {
                return i;
            }
        }
    }
    last
}

/// Host buffers of sampling on the backend's candidates, allocated when a
/// generation starts: one row's compact candidates and their `e^(x - max)`,
/// and each row's generator as it would be after this step's draw.
struct SampleScratch {
    ids: Vec<u32>,
    vals: Vec<f32>,
    probs: Vec<f32>,
    next: Vec<Rng>,
}

impl SampleScratch {
    fn new(rows: usize, per_row: usize) -> Self {
        SampleScratch {
            ids: Vec::with_capacity(per_row),
            vals: Vec::with_capacity(per_row),
            probs: Vec::with_capacity(per_row),
            next: vec![Rng::new(0); rows],
        }
    }
}

/// Beam sampling: `cand_score.len()` draws without replacement from
/// `softmax(rows + beam score)` over beams × vocab, in draw order.
fn sample_candidates(
    rows: &[f32],
    beam_scores: &[f32],
    v: usize,
    probs: &mut Vec<f32>,
    rng: &mut Rng,
    cand_score: &mut [f32],
    cand_idx: &mut [u32],
) {
    let acc = |i: usize| rows[i] + beam_scores[i / v];
    let mut max = f32::NEG_INFINITY;
    for i in 0..rows.len() {
        max = max.max(acc(i));
    }
    probs.clear();
    let mut total = 0.0f64;
    for i in 0..rows.len() {
        let p = exp_nonpos(acc(i) - max);
        probs.push(p);
        total += f64::from(p);
    }
    for k in 0..cand_score.len() {
        let target = rng.next_f64() * total;
        let mut cum = 0.0f64;
        let mut pick = None;
        let mut last = None;
        for (i, &p) in probs.iter().enumerate() {
            if p > 0.0 {
                cum += f64::from(p);
                last = Some(i);
                if cum > target {
                    pick = Some(i);
                    break;
                }
            }
        }
        // no mass left (fewer positive entries than draws): the best id not drawn yet
        let i = pick.or(last).unwrap_or_else(|| {
            (0..probs.len())
                .filter(|i| !cand_idx[..k].contains(&(*i as u32)))
                .max_by(|&a, &b| acc(a).total_cmp(&acc(b)).then(b.cmp(&a)))
                .unwrap_or(0)
        });
        total = (total - f64::from(probs[i])).max(0.0);
        probs[i] = 0.0;
        cand_idx[k] = i as u32;
        cand_score[k] = acc(i);
    }
}

/// Insert `(s, idx)` into the descending top list (ties keep the earlier index first).
fn insert_top(scores: &mut [f32], idx: &mut [u32], count: &mut usize, s: f32, i: u32) {
    let cap = scores.len();
    let mut pos = (*count).min(cap);
    if pos == cap {
        pos -= 1; // drop the last
    } else {
        *count += 1;
    }
    while pos > 0 && scores[pos - 1] < s {
        scores[pos] = scores[pos - 1];
        idx[pos] = idx[pos - 1];
        pos -= 1;
    }
    scores[pos] = s;
    idx[pos] = i;
}

/// The `out.len()` most likely ids of `softmax(row)` with probabilities; returns how many.
fn top_probs(row: &[f32], max: f32, log_sum: f32, out: &mut [(u32, f32)]) -> usize {
    let cap = out.len().min(row.len());
    let mut n = 0usize;
    for (i, &x) in row.iter().enumerate() {
        if x == f32::NEG_INFINITY {
            continue;
        }
        if n < cap || x > out[n - 1].1 {
            let mut pos = if n < cap {
                n += 1;
                n - 1
            } else {
                cap - 1
            };
            while pos > 0 && out[pos - 1].1 < x {
                out[pos] = out[pos - 1];
                pos -= 1;
            }
            out[pos] = (i as u32, x);
        }
    }
    for o in out[..n].iter_mut() {
        o.1 = ((o.1 - max) - log_sum).exp();
    }
    n
}
