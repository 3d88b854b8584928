//! Page-locked (pinned) host buffers for the decode loop's per-step copies:
//! the step's token ids and beam indices up, the logits down.
//!
//! A copy between pageable host memory and the device goes through the
//! driver's own bounce buffer (an extra host copy, and the upload is
//! synchronous in effect); from pinned memory the copy engine reads or writes
//! the bytes directly and the upload is truly asynchronous. The buffers grow
//! to the largest copy seen and are then reused, so a step allocates nothing.
//!
//! Reuse of the upload buffer: the copies from it may still be queued when the
//! next upload wants to write it, so each upload records a fence (an event)
//! after its copy, and the next one writes after the bytes still in use. Once
//! the fence has passed (normally at a step's first upload: the previous
//! step's download waited for the whole stream) the buffer is reused from its
//! start. So the several small uploads of one decode step (ids, positions,
//! bans, penalties) queue without waiting for each other; only a buffer too
//! small for all of them waits, and then grows to hold them next time.

use std::sync::{Arc, Mutex, MutexGuard};

use encdec_core::{Error, Result};

use crate::driver::{Driver, Mark};

/// One pinned buffer.
#[derive(Debug)]
struct Pinned {
    ptr: *mut u8,
    cap: usize,
}

// SAFETY: the pointer is a host allocation owned by this struct, only touched
// under `Staging`'s mutex.
unsafe impl Send for Pinned {}

#[derive(Debug)]
struct Buffers {
    up: Pinned,
    /// Bytes of `up` that queued copies may still read (from its start).
    up_used: usize,
    down: Pinned,
    /// Queued after the last copy out of `up`.
    up_fence: Option<Mark>,
}

/// The two staging buffers of one device.
#[derive(Debug)]
pub(crate) struct Staging {
    drv: Arc<Driver>,
    bufs: Mutex<Buffers>,
}

impl Staging {
    pub(crate) fn new(drv: Arc<Driver>) -> Self {
        let empty = || Pinned {
            ptr: std::ptr::null_mut(),
            cap: 0,
        };
        Staging {
            drv,
            bufs: Mutex::new(Buffers {
                up: empty(),
                up_used: 0,
                down: empty(),
                up_fence: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Buffers> {
        self.bufs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `p` hold at least `bytes` (freeing the smaller one first).
    fn reserve(&self, p: &mut Pinned, bytes: usize) -> Result<()> {
        if p.cap >= bytes {
            return Ok(());
        }
        // Grow by at least half, so slowly growing copies do not reallocate every time.
        let cap = bytes.max(p.cap + p.cap / 2).next_multiple_of(4096);
        if !p.ptr.is_null() {
            // SAFETY: allocated by alloc_pinned(p.cap); no queued copy uses it
            // (the caller waited for the fence / the download synchronised).
            unsafe { self.drv.free_pinned(p.ptr, p.cap) };
            p.ptr = std::ptr::null_mut();
            p.cap = 0;
        }
        p.ptr = self.drv.alloc_pinned(cap)?;
        p.cap = cap;
        Ok(())
    }

    /// Copies `src` to the device at `dst` through the pinned upload buffer;
    /// returns once the bytes are in the buffer (the copy itself is queued).
    ///
    /// # Safety
    /// `dst` starts a live device allocation of at least `size_of_val(src)` bytes.
    pub(crate) unsafe fn upload<T: Copy>(&self, dst: u64, src: &[T], op: &str) -> Result<()> {
        self.drv.host_guard(op)?;
        let bytes = std::mem::size_of_val(src);
        if bytes == 0 {
            return Ok(());
        }
        let mut b = self.lock();
        let b = &mut *b;
        let idle = match &b.up_fence {
            Some(fence) => fence
                .is_reached()
                .map_err(|e| Error::Cuda(format!("{op}: {e}")))?,
            None => true,
        };
        let slot = UploadSlot::place(b.up_used, b.up.cap, bytes, idle);
        if slot.wait {
            if let Some(fence) = &b.up_fence {
                fence
                    .wait()
                    .map_err(|e| Error::Cuda(format!("{op}: {e}")))?;
            }
        }
        if let Some(cap) = slot.grow_to {
            // (nothing queued reads the buffer now)
            self.reserve(&mut b.up, cap)?;
        }
        let at = slot.at;
        // SAFETY: the buffer holds at least `at + bytes`; queued copies read
        // only `..up_used` <= `at` (or none: the fence passed or was waited
        // for), and `src` is `bytes` long.
        unsafe {
            let staged = b.up.ptr.add(at);
            std::ptr::copy_nonoverlapping(src.as_ptr() as *const u8, staged, bytes);
            self.drv.htod_pinned(dst, staged, bytes, op)?;
        }
        b.up_used = at + bytes;
        // One event, re-recorded each upload (no event made per step).
        self.drv.record_fence(&mut b.up_fence)?;
        Ok(())
    }

    /// Copies `dst.len()` elements from the device at `src` into `dst` through
    /// the pinned download buffer, waiting for the stream.
    ///
    /// # Safety
    /// `src` starts a live device allocation of at least `size_of_val(dst)` bytes.
    pub(crate) unsafe fn download<T: Copy>(&self, dst: &mut [T], src: u64, op: &str) -> Result<()> {
        self.drv.host_guard(op)?;
        let bytes = std::mem::size_of_val(dst);
        if bytes == 0 {
            return Ok(());
        }
        let mut b = self.lock();
        // The download buffer is only in use inside this call (it waits).
        self.reserve(&mut b.down, bytes)?;
        // SAFETY: the buffer holds at least `bytes`; dtoh_pinned waits for the
        // copy before the bytes are read; `dst` is `bytes` long.
        unsafe {
            self.drv.dtoh_pinned(b.down.ptr, src, bytes, op)?;
            std::ptr::copy_nonoverlapping(b.down.ptr, dst.as_mut_ptr() as *mut u8, bytes);
        }
        Ok(())
    }
}

/// Where one upload goes in the pinned upload buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UploadSlot {
    /// Byte offset of the upload.
    at: usize,
    /// Wait for the last upload's fence first.
    wait: bool,
    /// Reallocate the buffer with this many bytes first (after the wait).
    grow_to: Option<usize>,
}

impl UploadSlot {
    /// `bytes` into a buffer of `cap` bytes whose first `used` bytes queued
    /// copies may still read, unless `idle` (the last fence passed): after
    /// those bytes (16-byte aligned) when they fit, without waiting; from the
    /// start when the buffer is idle; else wait, and grow the buffer to hold
    /// the whole run of uploads (`used` and these bytes) next time.
    fn place(used: usize, cap: usize, bytes: usize, idle: bool) -> Self {
        let used = if idle { 0 } else { used };
        let at = used.next_multiple_of(16);
        if at + bytes <= cap {
            return UploadSlot {
                at,
                wait: false,
                grow_to: None,
            };
        }
        UploadSlot {
            at: 0,
            wait: !idle,
            grow_to: Some(at + bytes),
        }
    }
}

/// Most copies [`Staging::download_all`] batches into one wait.
pub(crate) const MAX_BATCH: usize = 8;

impl Staging {
    /// Copies each `(dst, src)` (`dst.len()` bytes from the device at `src`)
    /// through the pinned download buffer with ONE wait for the stream: a
    /// decode step's search results come back together.
    ///
    /// # Safety
    /// Each `src` starts a live device allocation of at least `dst.len()` bytes.
    pub(crate) unsafe fn download_all(
        &self,
        parts: &mut [(&mut [u8], u64)],
        op: &str,
    ) -> Result<()> {
        self.drv.host_guard(op)?;
        if parts.len() > MAX_BATCH {
            return Err(Error::Invalid(format!(
                "{op}: {} copies in one batch, at most {MAX_BATCH}",
                parts.len()
            )));
        }
        // 256-byte aligned slots, like the device's allocations.
        let mut at = [0usize; MAX_BATCH];
        let mut total = 0usize;
        for (i, (dst, _)) in parts.iter().enumerate() {
            at[i] = total;
            total += dst.len().next_multiple_of(256);
        }
        if total == 0 {
            return Ok(());
        }
        let mut b = self.lock();
        self.reserve(&mut b.down, total)?;
        for (i, (dst, src)) in parts.iter().enumerate() {
            // SAFETY: slot i of the buffer holds dst.len() bytes; the buffer
            // is only read after the sync below; src per the contract.
            unsafe {
                self.drv
                    .dtoh_pinned_queued(b.down.ptr.add(at[i]), *src, dst.len(), op)?
            };
        }
        self.drv.sync(op)?;
        for (i, (dst, _)) in parts.iter_mut().enumerate() {
            // SAFETY: the copies finished (sync); slot i holds dst.len() bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(b.down.ptr.add(at[i]), dst.as_mut_ptr(), dst.len())
            };
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let b = self.bufs.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = b.up_fence.take() {
            let _ = f.wait();
        }
        for p in [&mut b.up, &mut b.down] {
            if !p.ptr.is_null() {
                // SAFETY: allocated by alloc_pinned(p.cap), no copy pending.
                unsafe { self.drv.free_pinned(p.ptr, p.cap) };
                p.ptr = std::ptr::null_mut();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::UploadSlot;

    fn slot(at: usize, wait: bool, grow_to: Option<usize>) -> UploadSlot {
        UploadSlot { at, wait, grow_to }
    }

    #[test]
    fn uploads_of_one_step_queue_after_each_other_without_waiting() {
        // a step's first upload: the last fence passed, from the start
        assert_eq!(UploadSlot::place(100, 4096, 8, true), slot(0, false, None));
        // the next ones go after the bytes queued copies may still read, aligned
        assert_eq!(UploadSlot::place(8, 4096, 8, false), slot(16, false, None));
        assert_eq!(
            UploadSlot::place(24, 4096, 1000, false),
            slot(32, false, None)
        );
        assert_eq!(
            UploadSlot::place(32, 4096, 4064, false),
            slot(32, false, None)
        );
        // no room left while copies may be queued: wait, grow to the whole run
        assert_eq!(
            UploadSlot::place(4000, 4096, 200, false),
            slot(0, true, Some(4200))
        );
        // idle but too small (the first upload, or a bigger one): grow, no wait
        assert_eq!(UploadSlot::place(0, 0, 8, true), slot(0, false, Some(8)));
        assert_eq!(
            UploadSlot::place(50, 4096, 5000, true),
            slot(0, false, Some(5000))
        );
    }
}
