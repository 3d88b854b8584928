//! Device memory: a caching allocator and the buffer type tensors hold.
//!
//! Every allocation goes through [`Pool`]. A freed [`Block`] is not returned to
//! the driver: it goes back to the pool's free list (keyed by its rounded size)
//! and the next request of that size class takes it, so a decode loop whose
//! buffers have the same shapes every step calls `cuMemAlloc` only during its
//! first step. Reuse is safe without events because all work runs on the
//! backend's one stream: a kernel that reads a block was enqueued before the
//! block was freed, and any later user of the block is enqueued after it.
//! When `cuMemAlloc` fails, the pool releases every cached block and tries once more.
//!
//! While a CUDA graph is recorded (`crate::graph`), every block freed, also one
//! allocated before the recording began, goes to the recording's private free
//! list instead: a recorded op may read or write it on every replay, so only
//! later allocations of the same recording may reuse it. The graph keeps those
//! blocks ([`Pool::end_recording`]) until it is dropped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::result;
use encdec_core::{DType, Device, DeviceBuffer, Error, Result};

use crate::driver::Driver;

/// Bytes a request of `bytes` occupies: size classes of 4 steps per power of
/// two up to 1 MiB (at most 25% slack), multiples of 64 KiB above.
pub(crate) fn size_class(bytes: usize) -> usize {
    const MIN: usize = 512;
    const BIG: usize = 1 << 20;
    if bytes <= MIN {
        return MIN;
    }
    if bytes >= BIG {
        return bytes.div_ceil(1 << 16) << 16;
    }
    // bytes in (2^e, 2^(e+1)]: classes 2^e * (1 + q/4), q = 1..=4.
    let e = usize::BITS - 1 - (bytes - 1).leading_zeros();
    let step = 1usize << (e - 2);
    bytes.div_ceil(step) * step
}

/// Counters of the pool (for tests and `describe`-style reports).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStats {
    /// `cuMemAlloc` calls made so far.
    pub driver_allocs: u64,
    /// Requests served from the free list.
    pub reuses: u64,
    /// Bytes held from the driver (in use or cached).
    pub reserved_bytes: usize,
    /// Bytes sitting in the free list.
    pub cached_bytes: usize,
    /// Bytes in blocks handed out and not yet returned (size classes, not
    /// requests), including those a recorded graph keeps until it is dropped.
    pub in_use_bytes: usize,
    /// Most `in_use_bytes` at once since the pool was made or `reset_peak`.
    pub peak_in_use_bytes: usize,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Free blocks by size.
    free: BTreeMap<usize, Vec<u64>>,
    stats: MemoryStats,
    /// The private free list of the recording in progress (blocks by size).
    /// Its blocks count as in use: no one outside the recording may take them.
    recording: Option<BTreeMap<usize, Vec<u64>>>,
}

/// Takes the smallest block of `list` that fits `size` without wasting more than 1/8.
fn take_fitting(list: &mut BTreeMap<usize, Vec<u64>>, size: usize) -> Option<(usize, u64)> {
    list.range_mut(size..=size + size / 8)
        .find_map(|(&s, v)| v.pop().map(|p| (s, p)))
}

/// The caching allocator of one device.
#[derive(Debug)]
pub(crate) struct Pool {
    drv: Arc<Driver>,
    state: Mutex<PoolState>,
}

impl Pool {
    pub(crate) fn new(drv: Arc<Driver>) -> Arc<Self> {
        Arc::new(Pool {
            drv,
            state: Mutex::new(PoolState::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // A panic while holding the lock leaves the lists consistent (every
        // mutation is a push or a pop), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        self.lock().stats
    }

    /// A block of at least `bytes` (uninitialised). Zero bytes gives a null block.
    pub(crate) fn alloc(self: &Arc<Self>, bytes: usize) -> Result<Block> {
        if bytes == 0 {
            return Ok(Block {
                ptr: 0,
                size: 0,
                pool: None,
            });
        }
        let size = size_class(bytes);
        {
            let mut st = self.lock();
            // A block the recording freed first: it is the recording's anyway.
            if let Some((s, ptr)) = st.recording.as_mut().and_then(|r| take_fitting(r, size)) {
                st.stats.reuses += 1;
                return Ok(Block {
                    ptr,
                    size: s,
                    pool: Some(self.clone()),
                });
            }
            if let Some((s, ptr)) = take_fitting(&mut st.free, size) {
                // An emptied list stays (with its capacity), so giving the
                // block back allocates nothing: the decode loop's host side
                // stays allocation-free.
                st.stats.reuses += 1;
                st.stats.cached_bytes -= s;
                st.stats.take(s);
                return Ok(Block {
                    ptr,
                    size: s,
                    pool: Some(self.clone()),
                });
            }
        }
        let ptr = match self.drv.malloc(size) {
            Ok(p) => p,
            Err(_) => {
                self.release_cached();
                self.drv.malloc(size).map_err(|e| {
                    Error::Cuda(format!(
                        "out of device memory: cannot allocate {size} bytes ({e}); {} bytes are in use",
                        self.stats().reserved_bytes
                    ))
                })?
            }
        };
        let mut st = self.lock();
        st.stats.driver_allocs += 1;
        st.stats.reserved_bytes += size;
        st.stats.take(size);
        Ok(Block {
            ptr,
            size,
            pool: Some(self.clone()),
        })
    }

    /// Frees every cached block (after the stream's work that might use them).
    pub(crate) fn release_cached(&self) {
        let blocks: Vec<(usize, u64)> = {
            let mut st = self.lock();
            if st.recording.is_some() {
                // Freeing needs a wait for the device, which a recording forbids.
                return;
            }
            let all = std::mem::take(&mut st.free);
            st.stats.cached_bytes = 0;
            all.into_iter()
                .flat_map(|(s, v)| v.into_iter().map(move |p| (s, p)))
                .collect()
        };
        if blocks.is_empty() {
            return;
        }
        if !self.drv.quiesce() {
            return;
        }
        let mut freed = 0;
        for (s, p) in blocks {
            // p is in no free list any more, no Block refers to it, and the
            // device has finished the work queued before (quiesce).
            self.drv.free(p, s);
            freed += s;
        }
        self.lock().stats.reserved_bytes -= freed;
    }

    fn give_back(&self, ptr: u64, size: usize) {
        let mut st = self.lock();
        if let Some(r) = st.recording.as_mut() {
            // A recorded op may use the block on every replay (still counted in use).
            r.entry(size).or_default().push(ptr);
            return;
        }
        Self::to_free_list(&mut st, ptr, size);
    }

    fn to_free_list(st: &mut PoolState, ptr: u64, size: usize) {
        // Room for a few blocks per size up front, so the lists rarely grow
        // (a growth is a host allocation; the decode loop should make none).
        st.free
            .entry(size)
            .or_insert_with(|| Vec::with_capacity(16))
            .push(ptr);
        st.stats.cached_bytes += size;
        st.stats.in_use_bytes -= size;
    }

    /// Starts sending freed blocks to a recording's private free list; an
    /// error when a recording is in progress already (one per device: all
    /// work runs on its one stream).
    pub(crate) fn begin_recording(&self) -> Result<()> {
        let mut st = self.lock();
        if st.recording.is_some() {
            return Err(Error::Invalid(
                "begin_capture: a recording is already in progress on this device \
                 (end_capture first; recordings do not nest)"
                    .into(),
            ));
        }
        st.recording = Some(BTreeMap::new());
        Ok(())
    }

    /// Ends the recording's private free list: its blocks, as (address, size),
    /// for the graph to keep ([`Pool::release_recorded`] when it is dropped).
    /// Empty when no recording was in progress.
    pub(crate) fn end_recording(&self) -> Vec<(u64, usize)> {
        let r = self.lock().recording.take().unwrap_or_default();
        r.into_iter()
            .flat_map(|(s, v)| v.into_iter().map(move |p| (p, s)))
            .collect()
    }

    /// Returns blocks [`Pool::end_recording`] handed out to the shared free
    /// list. Safe without waiting for the device: all work runs on the one
    /// stream, so whoever takes a block next is queued after every replay
    /// (and every op queued before) that used it.
    pub(crate) fn release_recorded(&self, blocks: &[(u64, usize)]) {
        let mut st = self.lock();
        for &(ptr, size) in blocks {
            Self::to_free_list(&mut st, ptr, size);
        }
    }

    /// Starts a new peak of bytes in use from what is in use now.
    pub(crate) fn reset_peak(&self) {
        let mut st = self.lock();
        st.stats.peak_in_use_bytes = st.stats.in_use_bytes;
    }
}

impl MemoryStats {
    /// A block of `size` bytes handed out.
    fn take(&mut self, size: usize) {
        self.in_use_bytes += size;
        self.peak_in_use_bytes = self.peak_in_use_bytes.max(self.in_use_bytes);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Runs when the backend and every buffer are gone: nothing refers to the
        // cached blocks.
        self.release_cached();
    }
}

/// One device allocation; returns to its pool when dropped.
#[derive(Debug)]
pub(crate) struct Block {
    pub(crate) ptr: u64,
    size: usize,
    pool: Option<Arc<Pool>>,
}

impl Drop for Block {
    fn drop(&mut self) {
        if let Some(p) = self.pool.take() {
            p.give_back(self.ptr, self.size);
        }
    }
}

/// The device memory of one tensor.
#[derive(Debug)]
pub struct CudaBuffer {
    pub(crate) data: Block,
    /// int8: one f32 scale per row.
    pub(crate) scales: Option<Block>,
    /// int8: how many rows (scales) there are.
    pub(crate) rows: usize,
    /// u32 ids: a host copy, kept in step with the device by every op that
    /// writes u32 data, so index and id range checks need no device read.
    pub(crate) ids: Option<Vec<u32>>,
    pub(crate) len: usize,
    pub(crate) dtype: DType,
    pub(crate) ordinal: usize,
}

/// The device address of a contiguous CUDA tensor's first element, for
/// handing it to another library (the cuBLAS yardstick bench); None for a
/// host tensor or a non-contiguous view.
pub fn device_ptr(t: &encdec_core::Tensor) -> Option<u64> {
    match t.storage() {
        encdec_core::Storage::Device(b) if t.is_contiguous() => b
            .as_any()
            .downcast_ref::<CudaBuffer>()
            .map(|b| b.ptr_at(t.offset())),
        _ => None,
    }
}

impl CudaBuffer {
    /// Device address of element `i`.
    pub(crate) fn ptr_at(&self, i: usize) -> u64 {
        self.data.ptr + (i * self.dtype.size_in_bytes()) as u64
    }
    /// Device address of the scale of row `r` (int8 only; 0 otherwise).
    pub(crate) fn scale_ptr_at(&self, r: usize) -> u64 {
        self.scales.as_ref().map_or(0, |b| b.ptr + (r * 4) as u64)
    }
}

impl DeviceBuffer for CudaBuffer {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
    fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn len(&self) -> usize {
        self.len
    }
}

pub(crate) fn cuda_err(what: &str, e: result::DriverError) -> Error {
    Error::Cuda(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_bound_the_slack() {
        assert_eq!(size_class(1), 512);
        assert_eq!(size_class(512), 512);
        assert_eq!(size_class(513), 640);
        assert_eq!(size_class(1024), 1024);
        assert_eq!(size_class(1025), 1280);
        assert_eq!(size_class((1 << 20) - 1), 1 << 20);
        assert_eq!(size_class((1 << 20) + 1), (1 << 20) + (1 << 16));
        for b in (1..3_000_000).step_by(977) {
            let s = size_class(b);
            assert!(s >= b, "{b} -> {s}");
            assert!(s <= b + b / 4 + 512 || s - b < 1 << 16, "{b} -> {s}");
        }
    }
}
