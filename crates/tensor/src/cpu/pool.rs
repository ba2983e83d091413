//! Shared primitive: a cache of freed f32/f64 buffers. Training allocates the same tensor sizes step after step;
//! taking those buffers from the allocator each time costs page faults and page zeroing in the
//! kernel (a quarter of a UNet step, measured). Storages give their buffers back here when
//! dropped, and kernels take zero-filled buffers of the same length from here.
//!
//! Buffers are keyed by exact length and only those of at least 64 KiB are kept. The cache
//! never holds more buffers of a length than were once in use at the same time (less those in
//! use now), so it does not grow past what the workload needs again; and it holds at most
//! 1 GiB per element type. Beyond that, buffers go back to the allocator.
//!
//! Kernels' work buffers ([`Scratch`]: padded images, im2col matrices) come and go within one
//! call and their lengths vary from layer to layer, so they are not keyed by length: a few
//! spare buffers are kept, and each is reused for any length (cut or grown to fit).

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::FloatElem;

const MIN_POOLED_BYTES: usize = 64 << 10;
const MAX_POOLED_BYTES: usize = 1 << 30;

/// The buffers of one length.
struct SizeClass<T> {
    free: Vec<Vec<T>>,
    /// Buffers of this length handed out and not given back yet.
    in_use: usize,
    /// The most ever in use at once.
    peak_in_use: usize,
}

struct Cache<T> {
    classes: BTreeMap<usize, SizeClass<T>>,
    bytes: usize,
    /// Spare work buffers, of any length.
    spares: Vec<Vec<T>>,
}

/// Spare work buffers kept per element type.
const MAX_SPARES: usize = 4;

pub struct BufferPool<T> {
    cache: Mutex<Cache<T>>,
}

impl<T: FloatElem> BufferPool<T> {
    pub const fn new() -> Self {
        BufferPool { cache: Mutex::new(Cache { classes: BTreeMap::new(), bytes: 0, spares: Vec::new() }) }
    }

    fn worth_pooling(len: usize) -> bool {
        len * size_of::<T>() >= MIN_POOLED_BYTES
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache<T>> {
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A cached buffer of `len` (with any contents), or a fresh zeroed one; counted as in use.
    fn take(&self, len: usize) -> (Vec<T>, bool) {
        if Self::worth_pooling(len) {
            let mut cache = self.lock();
            let class = cache.classes.entry(len).or_insert_with(|| SizeClass { free: Vec::new(), in_use: 0, peak_in_use: 0 });
            class.in_use += 1;
            class.peak_in_use = class.peak_in_use.max(class.in_use);
            if let Some(buffer) = class.free.pop() {
                cache.bytes -= len * size_of::<T>();
                return (buffer, true);
            }
        }
        (vec![T::zero(); len], false)
    }

    /// A buffer of `len` zeros, recycled when one of that length is cached.
    pub fn zeroed(&self, len: usize) -> Vec<T> {
        let (mut buffer, recycled) = self.take(len);
        if recycled {
            buffer.fill(T::zero());
        }
        buffer
    }

    /// A buffer of `len` values to be overwritten entirely: a cached one keeps whatever it
    /// held (any bit pattern is a valid float), which saves the zeroing pass.
    pub fn for_overwrite(&self, len: usize) -> Vec<T> {
        self.take(len).0
    }

    /// Keeps `buffer` for reuse, or frees it: if it is small, if no more of its length could
    /// be wanted at once than are in use and cached now, or if the cache is full.
    pub fn give_back(&self, mut buffer: Vec<T>) {
        let len = buffer.len();
        if !Self::worth_pooling(len) || buffer.capacity() != len {
            return;
        }
        let mut cache = self.lock();
        let Some(class) = cache.classes.get_mut(&len) else { return };
        class.in_use = class.in_use.saturating_sub(1);
        if class.free.len() + class.in_use >= class.peak_in_use {
            return;
        }
        if cache.bytes + len * size_of::<T>() > MAX_POOLED_BYTES {
            return;
        }
        let class = cache.classes.get_mut(&len).expect("present");
        class.free.push(std::mem::take(&mut buffer));
        cache.bytes += len * size_of::<T>();
    }

    /// A work buffer of `len` values (contents unspecified): the smallest spare that holds
    /// `len` values, else the largest spare grown (with zeros), else a fresh one.
    fn take_spare(&self, len: usize) -> Vec<T> {
        let spare = {
            let mut cache = self.lock();
            let fits = (0..cache.spares.len()).filter(|&i| cache.spares[i].len() >= len).min_by_key(|&i| cache.spares[i].len());
            let pick = fits.or_else(|| (0..cache.spares.len()).max_by_key(|&i| cache.spares[i].len()));
            pick.map(|i| cache.spares.swap_remove(i))
        };
        let mut buffer = spare.unwrap_or_default();
        buffer.resize(len, T::zero());
        buffer
    }

    /// Keeps a work buffer as a spare (in place of the smallest one, if there are enough).
    fn give_back_spare(&self, buffer: Vec<T>) {
        let mut cache = self.lock();
        if cache.spares.len() < MAX_SPARES {
            cache.spares.push(buffer);
        } else if let Some(smallest) = (0..cache.spares.len()).min_by_key(|&i| cache.spares[i].len())
            && cache.spares[smallest].len() < buffer.len()
        {
            cache.spares[smallest] = buffer;
        }
    }

    /// Bytes currently cached.
    pub fn cached_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Frees every cached buffer (and forgets the sizes seen).
    pub fn clear(&self) {
        let mut cache = self.lock();
        cache.classes.clear();
        cache.bytes = 0;
        cache.spares.clear();
    }
}

impl<T: FloatElem> Default for BufferPool<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Frees every cached buffer of every element type. For after rare work whose buffer sizes
/// the steady workload does not use (a training run's sampling previews and evaluations), so
/// that the cache holds only what the next steps want; they refill it within one step.
/// With glibc, the freed memory is also handed back to the system (`malloc_trim`), which glibc
/// otherwise keeps in its heaps for later allocations.
pub fn release_cached() {
    f32::pool().clear();
    f64::pool().clear();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            /// glibc: returns free memory at the top of the heaps (and whole free pages
            /// inside them) to the system; 0 = keep no padding.
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes no pointers and only rearranges glibc's own free lists.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// `len` zeros of `T`, from the cache when possible.
pub fn zeroed<T: FloatElem>(len: usize) -> Vec<T> {
    T::pool().zeroed(len)
}

/// `len` values of `T` that the caller will overwrite entirely (see
/// [`BufferPool::for_overwrite`]).
pub fn for_overwrite<T: FloatElem>(len: usize) -> Vec<T> {
    T::pool().for_overwrite(len)
}

/// A kernel's work buffer, from the spares, that returns there when dropped.
pub struct Scratch<T: FloatElem>(Vec<T>);

impl<T: FloatElem> Scratch<T> {
    pub fn zeroed(len: usize) -> Self {
        let mut buffer = T::pool().take_spare(len);
        buffer.fill(T::zero());
        Scratch(buffer)
    }
    /// A work buffer the caller overwrites before reading.
    pub fn for_overwrite(len: usize) -> Self {
        Scratch(T::pool().take_spare(len))
    }
}

impl<T: FloatElem> std::ops::Deref for Scratch<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

impl<T: FloatElem> std::ops::DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.0
    }
}

impl<T: FloatElem> Drop for Scratch<T> {
    fn drop(&mut self) {
        T::pool().give_back_spare(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEN: usize = 1 << 16; // 256 KiB of f32, worth pooling

    #[test]
    fn the_cache_keeps_no_more_buffers_of_a_length_than_were_in_use_at_once() {
        let pool = BufferPool::<f32>::new();
        // a length never asked of the pool is not kept
        pool.give_back(vec![1.0; LEN]);
        assert_eq!(pool.cached_bytes(), 0);
        // two in use at once: both come back, and a third buffer of that length (made
        // elsewhere) is freed rather than cached
        let (a, b) = (pool.for_overwrite(LEN), pool.for_overwrite(LEN));
        pool.give_back(a);
        pool.give_back(b);
        pool.give_back(vec![2.0; LEN]);
        assert_eq!(pool.cached_bytes(), 2 * LEN * 4);
        // recycled buffers: `zeroed` clears them, and the cache empties as they go out
        let (c, d) = (pool.zeroed(LEN), pool.zeroed(LEN));
        assert!(c.iter().chain(&d).all(|&v| v == 0.0));
        assert_eq!(pool.cached_bytes(), 0);
        // small buffers are never kept
        let small = pool.for_overwrite(16);
        pool.give_back(small);
        assert_eq!(pool.cached_bytes(), 0);
    }

    #[test]
    fn spare_work_buffers_are_reused_for_any_length_and_bounded_in_number() {
        let pool = BufferPool::<f32>::new();
        let mut big = pool.take_spare(1000);
        big.fill(7.0);
        let big_ptr = big.as_ptr();
        pool.give_back_spare(big);
        // a shorter request reuses the spare in place (no allocation, contents kept)
        let short = pool.take_spare(10);
        assert_eq!((short.as_ptr(), short.len()), (big_ptr, 10));
        assert!(short.iter().all(|&v| v == 7.0));
        pool.give_back_spare(short);
        // a longer one grows it, zero-filling the new part
        let long = pool.take_spare(2000);
        assert_eq!(long.len(), 2000);
        assert!(long[1000..].iter().all(|&v| v == 0.0));
        pool.give_back_spare(long);
        for len in 1..=2 * MAX_SPARES {
            pool.give_back_spare(vec![0.0; len]);
        }
        let cache = pool.lock();
        assert_eq!(cache.spares.len(), MAX_SPARES);
        assert!(cache.spares.iter().any(|b| b.len() == 2000), "the largest is kept");
    }
}
