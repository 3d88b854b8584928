//! Recorded steps (CUDA graphs): `Backend::begin_capture`, `end_capture`, `replay`.
//!
//! Between `begin_capture` and `end_capture` the backend's ops are recorded,
//! not run: on a GPU by stream capture (`cuStreamBeginCapture`, relaxed mode,
//! then `cuGraphInstantiate`), on the emulator by storing each launch with a
//! copy of its argument values, and each device copy and memset. A replay
//! queues the whole recording on the backend's stream with one call and no
//! wait (`cuGraphLaunch`); the emulator runs it at once.
//!
//! What crosses to or from the host (upload, download, the host copies, topk
//! to the host, synchronize, timestamps) fails while recording, and so does `end_capture`
//! afterwards (the recording is discarded; the backend keeps working); so do
//! a launch, device copy or memset that fails, and a replay while recording.
//! An op whose argument checks fail queues nothing: it returns its error and
//! leaves the recording as it was (the caller, holding the error, discards
//! it). `end_capture` always ends the capture on the stream. Scalar
//! arguments and device addresses are frozen into the recording: what changes
//! between replays must be written, outside the recording, into the tensors
//! the recorded ops read.
//!
//! u32 index tensors (embedding ids, `index_select`'s index, attention's
//! kv_index) are range-checked against their host copy when the op is
//! recorded; replays do not check again, so the caller validates the ids it
//! uploads between replays. Likewise the host copy of a u32 tensor a recorded
//! op writes (`write_rows`, `index_select`) describes the values at record
//! time, not those of later replays.
//!
//! A tensor made while recording (`zeros`, `cast`) holds its values only once
//! the graph has been replayed: its memset or copy was recorded, not run.
//! `begin_capture` loads every kernel module first (once per process), so
//! none is compiled or loaded while the stream is captured.
//!
//! A recording takes every op queued on the device, from any thread: while
//! one thread records, other threads' ops wait for it to end
//! (`crate::driver::Rec`).
//!
//! Memory: every block freed while recording (also one allocated before)
//! goes to the recording's private free list, reused only by later
//! allocations of the same recording; the graph keeps those blocks and
//! returns them to the pool when dropped (`crate::memory`). Blocks still held
//! by tensors at `end_capture` stay the tensors': the caller must keep every
//! tensor a recording reads or writes (inputs, weights, caches, outputs)
//! alive, and in place, while replaying it; a dropped tensor's block goes
//! back to the shared pool and may be handed out again.

use std::sync::{Arc, Mutex};

use encdec_core::{CapturedGraph, Error, Result};

use crate::driver::Exec;
use crate::launch::Dev;

/// A finished recording of one CUDA backend (inside a `CapturedGraph`).
#[derive(Debug)]
pub(crate) struct Graph {
    dev: Arc<Dev>,
    /// Locked while replaying: graph handles are not internally synchronised.
    exec: Mutex<Option<Exec>>,
    /// The recording's private blocks, as (address, size).
    blocks: Vec<(u64, usize)>,
}

impl Graph {
    /// Starts recording on `dev` (an error when one is in progress).
    pub(crate) fn begin(dev: &Dev) -> Result<()> {
        dev.bind()?;
        dev.pool.begin_recording()?;
        if let Err(e) = dev.drv.begin_capture() {
            let blocks = dev.pool.end_recording();
            dev.pool.release_recorded(&blocks);
            return Err(e);
        }
        Ok(())
    }

    /// Ends the recording on `dev`: the graph, or the first error of an op
    /// while recording (then nothing is kept).
    pub(crate) fn end(dev: &Arc<Dev>) -> Result<CapturedGraph> {
        let exec = dev.drv.end_capture();
        let blocks = dev.pool.end_recording();
        match exec {
            Ok(exec) => Ok(CapturedGraph::new(Graph {
                dev: dev.clone(),
                exec: Mutex::new(Some(exec)),
                blocks,
            })),
            Err(e) => {
                // Nothing recorded will run; ops queued before are ahead of any later user.
                dev.pool.release_recorded(&blocks);
                Err(e)
            }
        }
    }

    /// Queues `graph` on `dev`'s stream (no wait on a GPU).
    pub(crate) fn replay(dev: &Arc<Dev>, graph: &CapturedGraph) -> Result<()> {
        let g = graph
            .downcast_ref::<Graph>()
            .ok_or_else(|| Error::Invalid("replay: not a recording of a CUDA backend".into()))?;
        if !Arc::ptr_eq(&g.dev, dev) {
            return Err(Error::Invalid(
                "replay: the recording was made by another CUDA backend (device)".into(),
            ));
        }
        if dev.drv.recording() {
            return Err(dev.drv.fail_recording(Error::Invalid(
                "replay: cannot replay a recording while recording (end_capture first)".into(),
            )));
        }
        dev.bind()?;
        let exec = g.exec.lock().unwrap_or_else(|p| p.into_inner());
        match exec.as_ref() {
            Some(x) => dev.drv.replay(x),
            None => Err(Error::Invalid("replay: the recording is gone".into())),
        }
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        let exec = self
            .exec
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(x) = exec {
            self.dev.drv.destroy_exec(x);
        }
        // No wait: a replay still in flight was queued on the one stream, so
        // whoever takes these blocks next is queued after it.
        self.dev.pool.release_recorded(&self.blocks);
    }
}
