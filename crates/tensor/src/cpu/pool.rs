//! A cache of freed f32/f64 buffers. Training allocates the same tensor sizes step after step;
//! taking those buffers from the allocator each time costs page faults and page zeroing in the
//! kernel (a quarter of a UNet step, measured). Storages give their buffers back here when
//! dropped, and kernels take zero-filled buffers of the same length from here.
//!
//! Buffers are keyed by exact length, only those of at least 64 KiB are kept, and the cache
//! holds at most 1 GiB per element type; beyond that, buffers go back to the allocator.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::FloatElem;

const MIN_POOLED_BYTES: usize = 64 << 10;
const MAX_POOLED_BYTES: usize = 1 << 30;

pub struct BufferPool<T> {
    free: Mutex<(BTreeMap<usize, Vec<Vec<T>>>, usize)>,
}

impl<T: FloatElem> BufferPool<T> {
    pub const fn new() -> Self {
        BufferPool { free: Mutex::new((BTreeMap::new(), 0)) }
    }

    fn worth_pooling(len: usize) -> bool {
        len * size_of::<T>() >= MIN_POOLED_BYTES
    }

    /// A buffer of `len` zeros, recycled when one of that length is cached.
    pub fn zeroed(&self, len: usize) -> Vec<T> {
        if Self::worth_pooling(len) {
            let recycled = {
                let mut guard = self.free.lock().unwrap();
                let (free, bytes) = &mut *guard;
                let buffer = free.get_mut(&len).and_then(Vec::pop);
                if buffer.is_some() {
                    *bytes -= len * size_of::<T>();
                }
                buffer
            };
            if let Some(mut buffer) = recycled {
                buffer.fill(T::zero());
                return buffer;
            }
        }
        vec![T::zero(); len]
    }

    /// A buffer of `len` values to be overwritten entirely: a cached one keeps whatever it
    /// held (any bit pattern is a valid float), which saves the zeroing pass.
    pub fn for_overwrite(&self, len: usize) -> Vec<T> {
        if Self::worth_pooling(len) {
            let mut guard = self.free.lock().unwrap();
            let (free, bytes) = &mut *guard;
            if let Some(buffer) = free.get_mut(&len).and_then(Vec::pop) {
                *bytes -= len * size_of::<T>();
                return buffer;
            }
        }
        vec![T::zero(); len]
    }

    /// Keeps `buffer` for reuse (or frees it, if small or the cache is full).
    pub fn give_back(&self, mut buffer: Vec<T>) {
        let len = buffer.len();
        if !Self::worth_pooling(len) || buffer.capacity() != len {
            return;
        }
        let mut guard = self.free.lock().unwrap();
        let (free, bytes) = &mut *guard;
        if *bytes + len * size_of::<T>() > MAX_POOLED_BYTES {
            return;
        }
        *bytes += len * size_of::<T>();
        free.entry(len).or_default().push(std::mem::take(&mut buffer));
    }

    /// Bytes currently cached.
    pub fn cached_bytes(&self) -> usize {
        self.free.lock().unwrap().1
    }

    /// Frees every cached buffer.
    pub fn clear(&self) {
        let mut guard = self.free.lock().unwrap();
        guard.0.clear();
        guard.1 = 0;
    }
}

impl<T: FloatElem> Default for BufferPool<T> {
    fn default() -> Self {
        Self::new()
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

/// A scratch buffer that returns to the cache when dropped (per-thread work buffers).
pub struct Scratch<T: FloatElem>(Vec<T>);

impl<T: FloatElem> Scratch<T> {
    pub fn zeroed(len: usize) -> Self {
        Scratch(zeroed(len))
    }
    /// A scratch buffer the caller overwrites before reading.
    pub fn for_overwrite(len: usize) -> Self {
        Scratch(for_overwrite(len))
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
        T::pool().give_back(std::mem::take(&mut self.0));
    }
}
