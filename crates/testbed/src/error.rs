//! The crate's error type.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong building the guest image or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "cannot read".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A program could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The error.
        source: std::io::Error,
    },
    /// A program exited with a failure.
    #[error("`{command}` failed ({status}){}", tail(stderr))]
    Command {
        /// The command line.
        command: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// The end of its standard error.
        stderr: String,
    },
    /// Something the image needs was not found.
    #[error("guest image: {0}")]
    Image(String),
    /// The archive could not be written.
    #[error(transparent)]
    Cpio(#[from] crate::cpio::CpioError),
    /// A line did not show up on a VM's console in time.
    #[error("VM {vm}: no console line containing {pattern:?} within {timeout:?}")]
    Timeout {
        /// The VM's name.
        vm: String,
        /// What was awaited.
        pattern: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// QEMU exited while we were waiting for the guest.
    #[error(
        "VM {vm}: QEMU exited ({status}) while waiting for {pattern:?}{}",
        tail(qemu_log)
    )]
    Exited {
        /// The VM's name.
        vm: String,
        /// How QEMU exited.
        status: String,
        /// What was awaited.
        pattern: String,
        /// QEMU's own output (stderr).
        qemu_log: String,
    },
    /// The guest kernel panicked.
    #[error("VM {vm}: guest kernel panic: {line}")]
    Panic {
        /// The VM's name.
        vm: String,
        /// The panic line.
        line: String,
    },
    /// The guest init reported an error.
    #[error("VM {vm}: guest error: {line}")]
    Guest {
        /// The VM's name.
        vm: String,
        /// The `VNET-ERROR` line.
        line: String,
    },
    /// The QEMU monitor did not answer as expected.
    #[error("VM {vm}: monitor command {command:?}: {message}")]
    Monitor {
        /// The VM's name.
        vm: String,
        /// The HMP command.
        command: String,
        /// What happened.
        message: String,
    },
}

/// The last lines of `text` after a colon and newline, or nothing when it is empty.
fn tail(text: &str) -> String {
    let text = text.trim_end();
    if text.is_empty() {
        return String::new();
    }
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(20);
    format!(":\n{}", lines[start..].join("\n"))
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an I/O error with what was being done to which file.
pub(crate) fn io(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { what, path, source }
}
