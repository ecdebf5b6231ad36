//! The raw loads, stores and copies on guest memory. Every function here takes host
//! addresses that the caller obtained from [`crate::mem::GuestMemory`] range checks.
//!
//! Payload bytes are moved with `copy_nonoverlapping` (memcpy): the guest may write its
//! own buffers while we copy them, which can only garble that guest's own data, the same
//! contract Linux vhost and DPDK have. Ring indexes use atomics with explicit ordering.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

/// Copies `dst.len()` bytes from guest memory at `src`.
///
/// # Safety
/// `src..src+dst.len()` lies inside a live guest mapping.
#[inline]
pub(crate) unsafe fn copy_from_guest(src: NonNull<u8>, dst: &mut [u8]) {
    // SAFETY: the caller guarantees the source range is mapped; `dst` is a Rust buffer that
    // cannot overlap the guest mapping.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr(), dst.len()) }
}

/// Copies `src` into guest memory at `dst`.
///
/// # Safety
/// `dst..dst+src.len()` lies inside a live, writable guest mapping.
#[inline]
pub(crate) unsafe fn copy_to_guest(dst: NonNull<u8>, src: &[u8]) {
    // SAFETY: the caller guarantees the destination range is mapped; `src` is a Rust buffer
    // that cannot overlap the guest mapping.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_ptr(), src.len()) }
}

/// Copies `n` bytes between two guest mappings (one guest's TX buffer into another's RX
/// buffer: the one copy of VM-to-VM switching).
///
/// # Safety
/// Both ranges lie inside live guest mappings.
#[inline(always)]
pub(crate) unsafe fn copy_guest_to_guest(src: NonNull<u8>, dst: NonNull<u8>, n: usize) {
    // Small frames (the copy of a 64-byte frame is 50 bytes after its header) with a
    // few inlined wide moves instead of a call: every load before any store, so
    // overlapping ranges copy like memmove.
    if (16..=64).contains(&n) {
        // SAFETY: as below; `n >= 16`, so both 16-byte halves lie inside the ranges.
        unsafe { copy_16_to_64(src, dst, n) };
        return;
    }
    // SAFETY: both ranges are mapped (caller). They may alias if a guest hands the same
    // memory as TX and RX buffer, so use the overlap-tolerant `copy` (memmove).
    unsafe { std::ptr::copy(src.as_ptr(), dst.as_ptr(), n) }
}

/// Copies `n` bytes, 16 <= n <= 64: the first and last 16 (n <= 32) or 32 bytes, loaded
/// before anything is stored (overlap-safe), possibly overlapping each other.
///
/// # Safety
/// `src..src+n` and `dst..dst+n` lie inside live guest mappings; 16 <= n <= 64.
#[inline(always)]
unsafe fn copy_16_to_64(src: NonNull<u8>, dst: NonNull<u8>, n: usize) {
    let (s, d) = (src.as_ptr(), dst.as_ptr());
    if n <= 32 {
        // SAFETY: 16 <= n, so `[0, 16)` and `[n - 16, n)` lie in both ranges.
        unsafe {
            let a = std::ptr::read_unaligned(s.cast::<[u8; 16]>());
            let b = std::ptr::read_unaligned(s.add(n - 16).cast::<[u8; 16]>());
            std::ptr::write_unaligned(d.cast::<[u8; 16]>(), a);
            std::ptr::write_unaligned(d.add(n - 16).cast::<[u8; 16]>(), b);
        }
    } else {
        // SAFETY: 32 < n <= 64, so `[0, 32)` and `[n - 32, n)` lie in both ranges.
        unsafe {
            let a = std::ptr::read_unaligned(s.cast::<[u8; 32]>());
            let b = std::ptr::read_unaligned(s.add(n - 32).cast::<[u8; 32]>());
            std::ptr::write_unaligned(d.cast::<[u8; 32]>(), a);
            std::ptr::write_unaligned(d.add(n - 32).cast::<[u8; 32]>(), b);
        }
    }
}

/// Copies `N` bytes out of guest memory with a fixed-size (inlined) copy.
///
/// # Safety
/// `src..src+N` lies inside a live guest mapping.
#[inline(always)]
pub(crate) unsafe fn read_array<const N: usize>(src: NonNull<u8>) -> [u8; N] {
    // SAFETY: the caller guarantees the range is mapped; an unaligned read of a byte array
    // has no alignment requirement and copies the bytes once.
    unsafe { std::ptr::read_unaligned(src.as_ptr().cast::<[u8; N]>()) }
}

/// Copies `N` bytes into guest memory with a fixed-size (inlined) copy.
///
/// # Safety
/// `dst..dst+N` lies inside a live, writable guest mapping.
#[inline(always)]
pub(crate) unsafe fn write_array<const N: usize>(dst: NonNull<u8>, v: &[u8; N]) {
    // SAFETY: the caller guarantees the range is mapped and writable.
    unsafe { std::ptr::write_unaligned(dst.as_ptr().cast::<[u8; N]>(), *v) }
}

/// Loads a little-endian u16 with Acquire ordering.
///
/// # Safety
/// `p` is 2-byte aligned and inside a live guest mapping.
#[inline]
pub(crate) unsafe fn load_u16_acquire(p: NonNull<u8>) -> u16 {
    // SAFETY: aligned and mapped (caller); an atomic view of shared memory is the sound way
    // to read a location the guest writes concurrently.
    u16::from_le(unsafe { AtomicU16::from_ptr(p.as_ptr().cast()) }.load(Ordering::Acquire))
}

/// Loads a little-endian u16 (no ordering beyond the surrounding fences).
///
/// # Safety
/// `p` is 2-byte aligned and inside a live guest mapping.
#[inline]
pub(crate) unsafe fn load_u16(p: NonNull<u8>) -> u16 {
    // SAFETY: aligned and mapped (caller).
    u16::from_le(unsafe { AtomicU16::from_ptr(p.as_ptr().cast()) }.load(Ordering::Relaxed))
}

/// Stores a little-endian u16 with Release ordering.
///
/// # Safety
/// `p` is 2-byte aligned and inside a live guest mapping.
#[inline]
pub(crate) unsafe fn store_u16_release(p: NonNull<u8>, v: u16) {
    // SAFETY: aligned and mapped (caller).
    unsafe { AtomicU16::from_ptr(p.as_ptr().cast()) }.store(v.to_le(), Ordering::Release)
}

/// Stores a little-endian u16.
///
/// # Safety
/// `p` is 2-byte aligned and inside a live guest mapping.
#[inline]
pub(crate) unsafe fn store_u16(p: NonNull<u8>, v: u16) {
    // SAFETY: aligned and mapped (caller).
    unsafe { AtomicU16::from_ptr(p.as_ptr().cast()) }.store(v.to_le(), Ordering::Relaxed)
}

/// Stores a used-ring element `{ id: u32, len: u32 }`.
///
/// # Safety
/// `p` is 8-byte aligned and `p..p+8` is inside a live guest mapping.
#[inline]
pub(crate) unsafe fn store_used_elem(p: NonNull<u8>, id: u32, len: u32) {
    let v = u64::from(id.to_le()) | (u64::from(len.to_le()) << 32);
    // SAFETY: aligned and mapped (caller); published later by the Release store of used.idx.
    unsafe { std::ptr::write_volatile(p.as_ptr().cast::<u64>(), v) }
}

/// A descriptor as read from guest memory: copied once, then validated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Desc {
    /// Guest physical address of the buffer.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// `VIRTQ_DESC_F_*`.
    pub flags: u16,
    /// Next descriptor index when `flags & NEXT`.
    pub next: u16,
}

/// Reads one 16-byte descriptor.
///
/// # Safety
/// `p` is 8-byte aligned and `p..p+16` is inside a live guest mapping.
#[inline]
pub(crate) unsafe fn read_desc(p: NonNull<u8>) -> Desc {
    let q = p.as_ptr().cast::<[u64; 2]>();
    // SAFETY: aligned and mapped (caller); each word is read exactly once (no double fetch).
    let [w0, w1] = unsafe { std::ptr::read_volatile(q) };
    let w1 = u64::from_le(w1);
    Desc {
        addr: u64::from_le(w0),
        len: (w1 & 0xffff_ffff) as u32,
        flags: ((w1 >> 32) & 0xffff) as u16,
        next: (w1 >> 48) as u16,
    }
}
