//! Least privilege once set up: switch to `--user`, keep no capabilities, set
//! `no_new_privs`, then install a seccomp allowlist on every thread: one for the datapath
//! workers (epoll, eventfd and TAP reads and writes, memory management), a wider one for
//! the control thread and the vhost-user connection threads it spawns (which inherit it):
//! sockets, guest memory mapping, thread creation.
//!
//! Privileged work (opening `/dev/net/tun`, `TUNSETIFF`, `SIOCSIF*`, `setns`, binding
//! sockets) happens before this; after it vnetd needs no capability. Consequence: a TAP
//! the daemon has not opened at start cannot be created later (a persistent TAP owned by
//! vnetd's user can still be attached, it needs none).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::config::SeccompMode;

/// Why locking down failed (vnetd then refuses to run).
#[derive(Debug, thiserror::Error)]
pub enum LockdownError {
    /// A credential or prctl call failed.
    #[error("{what}: {err}")]
    Os {
        /// What was being done.
        what: &'static str,
        /// errno.
        err: std::io::Error,
    },
    /// A filter could not be built or installed.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// Capabilities are left after switching users.
    #[error("capabilities left after switching to uid {uid}: {caps}")]
    CapsLeft {
        /// The uid switched to.
        uid: u32,
        /// What is left.
        caps: String,
    },
}

fn os(what: &'static str) -> impl FnOnce(nix::Error) -> LockdownError {
    move |e| LockdownError::Os {
        what,
        err: std::io::Error::from(e),
    }
}

/// Switches the whole process (every thread: glibc applies credential changes to all)
/// to `uid`/`gid` with no supplementary groups but `gid`, clears the capability bounding
/// set, checks no capability is left, and sets `no_new_privs`.
pub fn switch_user(uid: u32, gid: u32) -> Result<(), LockdownError> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let g = Gid::from_raw(gid);
    setgroups(&[g]).map_err(os("setgroups"))?;
    // Best effort: needs CAP_SETPCAP, which root has; no_new_privs makes it moot anyway.
    let _ = caps::clear(None, caps::CapSet::Bounding);
    setresgid(g, g, g).map_err(os("setresgid"))?;
    let u = Uid::from_raw(uid);
    setresuid(u, u, u).map_err(os("setresuid"))?;
    set_no_new_privs()?;
    if uid != 0 {
        let left = caps::read(None, caps::CapSet::Effective)
            .map_err(|e| LockdownError::Seccomp(e.to_string()))?;
        if !left.is_empty() {
            return Err(LockdownError::CapsLeft {
                uid,
                caps: format!("{left:?}"),
            });
        }
    }
    Ok(())
}

/// `PR_SET_NO_NEW_PRIVS`: nothing vnetd could exec would gain privileges.
pub fn set_no_new_privs() -> Result<(), LockdownError> {
    nix::sys::prctl::set_no_new_privs().map_err(os("prctl(PR_SET_NO_NEW_PRIVS)"))
}

/// Which thread a filter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// A datapath worker.
    Worker,
    /// The control thread and the vhost-user connection threads.
    Control,
}

/// System calls every vnetd thread makes in its steady state.
const COMMON: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_futex,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    libc::SYS_brk,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigaction,
    libc::SYS_sigaltstack,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_tgkill,
    libc::SYS_sched_yield,
    libc::SYS_getrandom,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_fcntl,
    libc::SYS_restart_syscall,
    libc::SYS_rseq,
    libc::SYS_set_robust_list,
    libc::SYS_sched_getaffinity,
    libc::SYS_statx,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_lseek,
    // Batched TAP writes: rings set up (and restricted to writev on their TAP fd) by the
    // control thread.
    libc::SYS_io_uring_enter,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_wait,
];

/// What the control thread adds: sockets, guest memory files, connection threads, and
/// what `vnetctl add-port --tap` needs (opening `/dev/net/tun` or a namespace, `setns`,
/// which without capabilities only work for what vnetd's user owns).
const CONTROL: &[i64] = &[
    libc::SYS_setns,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_register,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_accept4,
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_shutdown,
    libc::SYS_ppoll,
    libc::SYS_readlinkat,
    libc::SYS_unlinkat,
    libc::SYS_fchmodat,
    libc::SYS_fchownat,
    libc::SYS_umask,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_prctl,
    libc::SYS_set_tid_address,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_accept,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_readlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_unlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_chmod,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_chown,
];

fn arch() -> Result<TargetArch, LockdownError> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| LockdownError::Seccomp(e.to_string()))
}

/// The system calls a thread of `kind` may make.
pub fn allowlist(kind: ThreadKind) -> Vec<i64> {
    let mut v = COMMON.to_vec();
    if kind == ThreadKind::Control {
        v.extend_from_slice(CONTROL);
    }
    v
}

/// The filters for a thread of `kind` (None when seccomp is off).
pub fn filter(kind: ThreadKind, mode: SeccompMode) -> Result<Option<Filters>, LockdownError> {
    let mismatch = match mode {
        SeccompMode::Off => return Ok(None),
        SeccompMode::Enforce => SeccompAction::KillProcess,
        SeccompMode::Log => SeccompAction::Log,
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = allowlist(kind)
        .into_iter()
        .map(|nr| (nr, Vec::new()))
        .collect();
    // ioctl only to set or clear O_NONBLOCK (std's set_nonblocking) and FD_CLOEXEC, and on
    // the control thread to set up a TAP added at runtime.
    let mut requests = vec![libc::FIONBIO, libc::FIOCLEX];
    if kind == ThreadKind::Control {
        requests.extend_from_slice(TAP_IOCTLS);
    }
    let ioctl = requests
        .into_iter()
        .map(|req| {
            let c = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, req)?;
            SeccompRule::new(vec![c])
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LockdownError::Seccomp(e.to_string()))?;
    rules.insert(libc::SYS_ioctl, ioctl);
    let opens = [
        libc::SYS_openat,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_open,
    ];
    for nr in opens {
        rules.insert(nr, Vec::new());
    }
    let seccomp = |e: seccompiler::BackendError| LockdownError::Seccomp(e.to_string());
    let allow = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch()?)
        .and_then(BpfProgram::try_from)
        .map_err(seccomp)?;
    let no_open = match kind {
        ThreadKind::Control => None,
        ThreadKind::Worker => Some(
            SeccompFilter::new(
                opens.into_iter().map(|nr| (nr, Vec::new())).collect(),
                SeccompAction::Allow,
                SeccompAction::Errno(u32::try_from(libc::EACCES).unwrap_or(13)),
                arch()?,
            )
            .and_then(BpfProgram::try_from)
            .map_err(seccomp)?,
        ),
    };
    Ok(Some(Filters { allow, no_open }))
}

/// TAP set-up: `TUNSETIFF`, `TUNSETOFFLOAD`, `TUNSETVNETHDRSZ` and the interface's flags,
/// MAC and MTU (read, and set when they differ).
const TAP_IOCTLS: &[libc::c_ulong] = &[
    0x4004_54ca,
    0x4004_54d0,
    0x4004_54d8,
    libc::SIOCGIFFLAGS,
    libc::SIOCSIFFLAGS,
    libc::SIOCGIFHWADDR,
    libc::SIOCSIFHWADDR,
    libc::SIOCGIFMTU,
    libc::SIOCSIFMTU,
];

/// Installs `filters` on the calling thread.
pub fn apply(filters: &Filters) -> Result<(), LockdownError> {
    for f in filters.no_open.iter().chain([&filters.allow]) {
        seccompiler::apply_filter(f).map_err(|e| LockdownError::Seccomp(e.to_string()))?;
    }
    Ok(())
}

/// A thread's filters: the allowlist, and for workers one that fails `open`/`openat`
/// with EACCES. A worker opens no file, but glibc's malloc may look at
/// `/proc/sys/vm/overcommit_memory` when it trims an arena and copes with a refusal; the
/// kernel applies the stricter verdict of the two (errno over allow), and the allowlist
/// lets `openat` through only so that the errno filter decides. The control thread opens
/// `/dev/net/tun` and namespaces for TAP ports added at runtime.
#[derive(Debug, Clone)]
pub struct Filters {
    allow: BpfProgram,
    no_open: Option<BpfProgram>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    const VICTIM: &str = "VNET_SECCOMP_VICTIM";

    /// Does nothing on its own. Run by `a_forbidden_system_call_kills_or_is_logged` in a
    /// child process: installs a worker's filters, then opens a file (refused with EACCES)
    /// and makes a system call on no list (`getcwd`).
    #[test]
    fn victim() {
        let Ok(mode) = std::env::var(VICTIM) else {
            return;
        };
        let f = filter(ThreadKind::Worker, mode.parse().unwrap())
            .unwrap()
            .unwrap();
        apply(&f).unwrap();
        let open = std::fs::File::open("/proc/self/status").map_err(|e| e.kind());
        println!("open: {open:?}");
        let cwd = std::env::current_dir();
        println!("survived getcwd: {}", cwd.is_ok());
        std::process::exit(0);
    }

    fn run_victim(mode: &str) -> std::process::Output {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lockdown::tests::victim",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(VICTIM, mode)
            .output()
            .unwrap()
    }

    #[test]
    fn a_forbidden_system_call_kills_or_is_logged() {
        let out = run_victim("enforce");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{stdout}");
        assert!(stdout.contains("open: Err(PermissionDenied)"), "{stdout}");
        assert!(!stdout.contains("survived"), "{stdout}");
        let out = run_victim("log");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{:?}: {stdout}", out.status);
        assert!(stdout.contains("survived getcwd: true"), "{stdout}");
        assert!(filter(ThreadKind::Control, SeccompMode::Off)
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_control_list_extends_the_worker_list() {
        let w = allowlist(ThreadKind::Worker);
        let c = allowlist(ThreadKind::Control);
        assert!(w.iter().all(|nr| c.contains(nr)));
        assert!(c.contains(&libc::SYS_accept4) && !w.contains(&libc::SYS_accept4));
        assert!(!c.contains(&libc::SYS_execve) && !c.contains(&libc::SYS_ptrace));
    }
}
