//! Recycled buffers for reading uploads off the data connection.
//!
//! An upload reads its data connection into [`BUFFER_SIZE`] buffers that
//! travel on as `Bytes` inside its parts and are freed once the part is
//! stored: a part's worth at once, on another thread than the one reading
//! (the blocking pool, an HTTP connection's task). The allocator keeps such
//! memory in the freeing thread's heap and returns it to the system after
//! its purge delay (20 ms, `src/main.rs`), so the reading thread often maps
//! fresh pages for the next part: a page fault and a zeroed page per 4 KiB
//! received. A buffer now comes back here when the last `Bytes` pointing
//! into it is dropped, and the next read takes it again; beyond
//! [`POOL_BYTES`] buffers are freed as before. Local 1 GiB STOR without
//! SHA-256: 0.80–0.96 s of CPU per GiB without the pool, 0.60–0.88 with it
//! (at a purge delay of 0, 1.36 against 0.65–0.90; docs/benchmarks.md,
//! "Every buffer a fresh page").
//!
//! The pool keeps buffers only while an upload runs ([`uploading`]): when
//! the last one ends it is emptied, so an idle process holds nothing more
//! than it did, and a download after an upload does not carry the upload's
//! buffers in its RSS.
//!
//! The pool is one per process: a global free list is the place both the
//! reading and the freeing threads reach.

use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Bytes per buffer. A part holds slices of these, and a buffer lives until
/// its last slice is freed, so each upload carries about two of them beyond
/// its parts (the one being filled, and the one shared across a part
/// boundary). 32 concurrent uploads peaked at 636 MiB with 1 MiB, 588 with
/// 256 KiB and 556 with 64 KiB (docs/benchmarks.md); a socket read rarely
/// returns more anyway.
pub(crate) const BUFFER_SIZE: usize = 64 * 1024;

/// Most bytes the pool keeps between a buffer's return and its next use:
/// two parts of the default size, enough that one upload at full speed
/// never allocates after its first parts. Memory sizing
/// (docs/operations.md) counts it beside the budget.
pub(crate) const POOL_BYTES: usize = 16 << 20;

/// The process's pool.
static POOL: Pool = Pool::new(POOL_BYTES / BUFFER_SIZE);

/// An empty buffer with room for [`BUFFER_SIZE`] bytes: a recycled one when
/// the pool has one.
pub(crate) fn take() -> Vec<u8> {
    POOL.take()
}

/// The filled part of `buffer` as `Bytes`; the buffer goes back to the
/// pool when the last of its clones and slices is dropped.
pub(crate) fn freeze(buffer: Vec<u8>) -> Bytes {
    POOL.freeze(buffer)
}

/// Marks an upload as running for as long as the guard lives: returned
/// buffers are kept only while one is.
pub(crate) fn uploading() -> Uploading {
    POOL.uploading()
}

/// An upload in progress (see [`uploading`]).
pub(crate) struct Uploading {
    pool: &'static Pool,
}

impl Drop for Uploading {
    fn drop(&mut self) {
        if self.pool.uploads.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last upload ended: what it returned is not needed until
            // the next one, which allocates afresh. A buffer returned by an
            // upload that starts meanwhile is freed here too: harmless.
            if let Ok(mut free) = self.pool.free.lock() {
                *free = Vec::new();
            }
        }
    }
}

/// A bounded free list of buffers.
struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
    max_buffers: usize,
    /// Uploads running now.
    uploads: AtomicUsize,
}

impl Pool {
    const fn new(max_buffers: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            max_buffers,
            uploads: AtomicUsize::new(0),
        }
    }

    fn uploading(&'static self) -> Uploading {
        self.uploads.fetch_add(1, Ordering::AcqRel);
        Uploading { pool: self }
    }

    fn take(&self) -> Vec<u8> {
        let recycled = self.free.lock().ok().and_then(|mut free| free.pop());
        recycled.unwrap_or_else(|| Vec::with_capacity(BUFFER_SIZE))
    }

    fn freeze(&'static self, buffer: Vec<u8>) -> Bytes {
        Bytes::from_owner(Recycled { buffer, pool: self })
    }

    fn give_back(&self, mut buffer: Vec<u8>) {
        // A buffer that grew (or never had the size) would make the pool's
        // bound a lie, and with no upload running nothing will take it:
        // freed instead.
        if buffer.capacity() != BUFFER_SIZE || self.uploads.load(Ordering::Acquire) == 0 {
            return;
        }
        buffer.clear();
        if let Ok(mut free) = self.free.lock() {
            if free.len() < self.max_buffers {
                free.push(buffer);
            }
        }
    }
}

/// A buffer on its way back to its pool.
struct Recycled {
    buffer: Vec<u8>,
    pool: &'static Pool,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buffer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pooled(pool: &Pool) -> usize {
        pool.free.lock().map(|free| free.len()).unwrap_or(0)
    }

    #[test]
    fn a_buffer_comes_back_only_when_its_last_slice_is_dropped() {
        static POOL: Pool = Pool::new(4);
        let _upload = POOL.uploading();
        let mut buffer = POOL.take();
        buffer.extend_from_slice(b"hello, pool");
        let address = buffer.as_ptr();
        let bytes = POOL.freeze(buffer);
        let slice = bytes.slice(7..);
        drop(bytes);
        assert_eq!(&slice[..], b"pool", "a slice keeps the buffer alive");
        assert_eq!(pooled(&POOL), 0);
        drop(slice);
        assert_eq!(pooled(&POOL), 1);
        let again = POOL.take();
        assert_eq!(again.as_ptr(), address, "the same buffer, recycled");
        assert!(again.is_empty());
        assert_eq!(again.capacity(), BUFFER_SIZE);
    }

    #[test]
    fn the_pool_never_holds_more_than_its_bound() {
        static POOL: Pool = Pool::new(3);
        let _upload = POOL.uploading();
        let buffers: Vec<Bytes> = (0..10)
            .map(|_| {
                let mut buffer = POOL.take();
                buffer.push(1);
                POOL.freeze(buffer)
            })
            .collect();
        drop(buffers);
        assert_eq!(pooled(&POOL), 3);
    }

    #[test]
    fn a_buffer_of_another_size_is_freed_not_kept() {
        static POOL: Pool = Pool::new(3);
        let _upload = POOL.uploading();
        drop(POOL.freeze(vec![0u8; 10]));
        assert_eq!(pooled(&POOL), 0);
    }

    #[test]
    fn the_pool_is_emptied_when_the_last_upload_ends() {
        static POOL: Pool = Pool::new(8);
        let first = POOL.uploading();
        let second = POOL.uploading();
        let returned = |n| {
            for _ in 0..n {
                let mut buffer = POOL.take();
                buffer.push(1);
                // Taken from the pool or new: either way it comes back.
                drop(POOL.freeze(buffer));
            }
        };
        returned(2);
        assert_eq!(pooled(&POOL), 1, "one buffer went round twice");
        drop(first);
        assert_eq!(pooled(&POOL), 1, "an upload still runs");
        drop(second);
        assert_eq!(pooled(&POOL), 0, "none runs: nothing kept");
        let mut late = Vec::with_capacity(BUFFER_SIZE);
        late.push(1);
        drop(POOL.freeze(late));
        assert_eq!(pooled(&POOL), 0, "a buffer returned after the end is freed");
    }
}
