//! Surviving a frontend that shrinks its memory file under us.
//!
//! Guest memory is a mapping of a file the frontend owns (memfd, hugetlbfs). Its size is
//! checked when it is mapped, but a frontend can truncate the file afterwards; touching
//! the mapping past the new end then raises SIGBUS, which would kill vnetd and every port
//! with it. So every guest mapping is registered here, and a SIGBUS handler that finds the
//! faulting address inside one replaces that whole mapping with anonymous zero pages
//! (`mmap(MAP_FIXED)` over it) and returns: the faulting access is retried on the new
//! pages and completes. The mapping is flagged ([`Guard::hit`]), and the datapath, which
//! looks at [`hits`] once per round, marks the ports using it broken. A SIGBUS anywhere
//! else goes to the handler that was installed before ours (Rust's own), as if we were not
//! there.
//!
//! The handler only reads atomics and calls `mmap`, a plain system call on Linux that
//! takes no lock in user space; it saves and restores `errno` around it. A slot's start and
//! length are read under its sequence number (a seqlock), so the handler never pairs the
//! start of one mapping with the length of another. A mapping that finds no free slot is
//! refused by its caller ([`Guard::register`] returns `None`): a frontend's memory is
//! never mapped unguarded.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;

/// Guest mappings that can be guarded at once; beyond that, regions are refused.
pub(crate) const SLOTS: usize = 4096;

struct Slot {
    /// Even: `start`/`len` are stable (`len == 0`: free). Odd: being written.
    seq: AtomicU64,
    start: AtomicUsize,
    len: AtomicUsize,
    hit: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // the initializer of the array below
const FREE: Slot = Slot {
    seq: AtomicU64::new(0),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    hit: AtomicBool::new(false),
};

impl Slot {
    /// `(start, len)` of a registered mapping, or None for a free slot or one being
    /// written (a mapping being registered is not used yet; one being released no longer is).
    fn read(&self) -> Option<(usize, usize)> {
        // Bounded: the handler must not spin on a writer it may have interrupted.
        for _ in 0..4 {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 % 2 == 1 {
                return None;
            }
            let start = self.start.load(Ordering::Acquire);
            let len = self.len.load(Ordering::Acquire);
            // Orders the two loads above before the re-check of the sequence.
            std::sync::atomic::fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return (len != 0).then_some((start, len));
            }
        }
        None
    }
}
static GUARDS: [Slot; SLOTS] = [FREE; SLOTS];
/// Mappings the handler replaced, ever.
static HITS: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();
/// The SIGBUS action before ours (written once, before our handler is installed).
static mut PREVIOUS: Option<libc::sigaction> = None;

/// A guest mapping registered with the handler; unregistered on drop.
#[derive(Debug)]
pub(crate) struct Guard {
    slot: Option<usize>,
}

impl Guard {
    /// Registers `[start, start + len)`; None when every slot is taken.
    pub(crate) fn register(start: usize, len: usize) -> Option<Guard> {
        INSTALL.call_once(install);
        for (i, s) in GUARDS.iter().enumerate() {
            let seq = s.seq.load(Ordering::Acquire);
            if seq % 2 == 1 || s.len.load(Ordering::Acquire) != 0 {
                continue;
            }
            // Claim a free slot by making its sequence odd.
            if s.seq
                .compare_exchange(seq, seq + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            s.hit.store(false, Ordering::Relaxed);
            s.start.store(start, Ordering::Release);
            s.len.store(len, Ordering::Release);
            // Release: a reader that sees the even sequence sees start and len.
            s.seq.store(seq + 2, Ordering::Release);
            return Some(Guard { slot: Some(i) });
        }
        tracing::warn!(
            "{SLOTS} guest memory mappings already guarded against truncation: refusing another"
        );
        None
    }

    /// Whether the frontend truncated the file under this mapping (now zero pages).
    pub(crate) fn hit(&self) -> bool {
        self.slot
            .is_some_and(|i| GUARDS[i].hit.load(Ordering::Acquire))
    }
}

impl Guard {
    /// Unregisters now (before the mapping is unmapped, so no later mapping at the same
    /// address is mistaken for this one).
    pub(crate) fn release(&mut self) {
        if let Some(i) = self.slot.take() {
            let s = &GUARDS[i];
            // Only the owner writes a claimed slot: odd while it changes, then even.
            s.seq.fetch_add(1, Ordering::AcqRel);
            s.len.store(0, Ordering::Release);
            s.start.store(0, Ordering::Release);
            s.seq.fetch_add(1, Ordering::Release);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.release();
    }
}

/// How many guest mappings the handler has replaced since vnetd started: the datapath
/// compares it with the last value it saw to know when to look for broken memories.
pub fn hits() -> u64 {
    HITS.load(Ordering::Acquire)
}

fn install() {
    // SAFETY: zeroed `sigaction` is a valid (empty) value to fill in.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_sigbus as extern "C" fn(_, _, _) as usize;
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: `sa.sa_mask` is a valid sigset to initialize.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    // SAFETY: zeroed `sigaction` is a valid out-parameter.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid; PREVIOUS is written here, once (inside `Once`),
    // before the handler that reads it exists.
    unsafe {
        if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) == 0 {
            PREVIOUS = Some(old);
        }
        if libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()) != 0 {
            tracing::warn!(
                "cannot install the SIGBUS handler: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    let errno = unsafe { *libc::__errno_location() };
    handle_sigbus(sig, info, ctx);
    // SAFETY: as above; the interrupted code finds errno as it left it.
    unsafe { *libc::__errno_location() = errno };
}

fn handle_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    for s in &GUARDS {
        let Some((start, len)) = s.read() else {
            continue;
        };
        if start == 0 || addr.wrapping_sub(start) >= len {
            continue;
        }
        // SAFETY: `[start, start + len)` is a live guest mapping of ours (registered until
        // its Mapping is unmapped); replacing it with private anonymous pages of the same
        // size keeps every address the datapath holds valid, now reading zeros.
        let p = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            s.hit.store(true, Ordering::Release);
            HITS.fetch_add(1, Ordering::AcqRel);
            return;
        }
    }
    // Not a guest mapping: whoever handled SIGBUS before us does.
    // SAFETY: PREVIOUS was written before this handler was installed and never after.
    let prev = unsafe { *std::ptr::addr_of!(PREVIOUS) };
    match prev {
        Some(old) if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN => {
            if old.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: an SA_SIGINFO handler has this signature.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(old.sa_sigaction) };
                f(sig, info, ctx);
            } else {
                // SAFETY: a plain handler takes the signal number.
                let f: extern "C" fn(libc::c_int) =
                    unsafe { std::mem::transmute(old.sa_sigaction) };
                f(sig);
            }
        }
        _ => {
            // Default action: restore it and return, so the access faults again and the
            // process dies as it would have without us.
            // SAFETY: resetting a signal disposition.
            unsafe { libc::signal(libc::SIGBUS, libc::SIG_DFL) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::{memfd, GuestMemory, RegionSpec};

    #[test]
    fn a_truncated_memory_file_reads_zeros_and_is_flagged() {
        let size = 1 << 20;
        let file = memfd(c"sigbus-test", size).unwrap();
        let keep = file.try_clone().unwrap();
        let mem = GuestMemory::map(vec![RegionSpec {
            gpa: 0,
            size,
            uaddr: 0x7000_0000,
            mmap_offset: 0,
            file,
        }])
        .unwrap();
        assert!(mem.write(4096, b"hello"));
        let mut buf = [0u8; 5];
        assert!(mem.read(4096, &mut buf));
        assert_eq!(&buf, b"hello");
        assert!(!mem.truncated());
        let before = hits();
        // The frontend shrinks its file: the pages behind the mapping are gone.
        keep.set_len(0).unwrap();
        assert!(mem.read(8192, &mut buf), "no SIGBUS kills the process");
        assert_eq!(buf, [0; 5], "the mapping is now zero pages");
        assert!(mem.truncated());
        assert!(hits() > before);
        assert!(mem.write(100, b"still writable"));
    }
}
