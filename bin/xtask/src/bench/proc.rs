//! Process supervision: every child of the bench is a [`Proc`] guard with its output
//! captured and logged, stopped (and its DPDK files removed) on drop, also on errors and
//! panics; [`TempDir`] removes a run's sockets directory the same way.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::testpmd::{parse_blocks, BlockKind};
use crate::util;

/// A child process with its output captured (and logged), stopped and cleaned up on drop.
#[derive(Debug)]
pub(super) struct Proc {
    pub(super) name: String,
    pub(super) child: Option<Child>,
    pub(super) pid: u32,
    pub(super) stdin: Option<ChildStdin>,
    /// What it wrote to stdout and to stderr, kept apart: testpmd writes its prompt one
    /// character at a time, and its stderr must not land in the middle.
    pub(super) stdout: Arc<Mutex<String>>,
    pub(super) stderr: Arc<Mutex<String>>,
    pub(super) log: PathBuf,
    /// The `--file-prefix` of a DPDK process: its runtime and hugepage files go on drop.
    pub(super) dpdk_prefix: Option<String>,
}

impl Proc {
    pub(super) fn spawn(
        name: &str,
        mut cmd: Command,
        log: &Path,
        dpdk_prefix: Option<String>,
    ) -> Result<Proc> {
        let shown = util::display(&cmd);
        let mut file =
            File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        writeln!(file, "$ {shown}")?;
        let file = Arc::new(Mutex::new(file));
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let streams: [(Box<dyn Read + Send>, _); 2] = [
            (
                Box::new(child.stdout.take().context("no stdout")?),
                stdout.clone(),
            ),
            (
                Box::new(child.stderr.take().context("no stderr")?),
                stderr.clone(),
            ),
        ];
        for (mut stream, output) in streams {
            let file = file.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]);
                    lock(&output).push_str(&text);
                    let _ = lock(&file).write_all(text.as_bytes());
                }
            });
        }
        Ok(Proc {
            name: name.to_string(),
            pid: child.id(),
            stdin: child.stdin.take(),
            child: Some(child),
            stdout,
            stderr,
            log: log.to_path_buf(),
            dpdk_prefix,
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// What it wrote to stdout so far.
    pub(super) fn output(&self) -> String {
        lock(&self.stdout).clone()
    }

    /// What it wrote to stderr so far.
    pub(super) fn errors(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// The end of both its outputs, for error messages.
    pub(super) fn tail(&self) -> String {
        format!(
            "{}
(stderr:)
{}",
            tail(&self.output(), 15),
            tail(&self.errors(), 10)
        )
    }

    /// Writes `line` and a newline to its stdin.
    pub(super) fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .with_context(|| format!("cannot write to {}", self.name))
    }

    /// Fails (with the end of its output) if it exited.
    pub(super) fn check_alive(&mut self) -> Result<()> {
        let child = self.child.as_mut().context("already stopped")?;
        if let Some(status) = child.try_wait()? {
            bail!(
                "{} exited early with {status}; the end of its output ({}):\n{}",
                self.name,
                self.log.display(),
                self.tail()
            );
        }
        Ok(())
    }

    /// Waits until its output from byte `from` on satisfies `done`, and returns that part.
    pub(super) fn wait_output(
        &mut self,
        from: usize,
        timeout: Duration,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.output();
            let new = out.get(from..).unwrap_or("");
            if done(new) {
                return Ok(new.to_string());
            }
            self.check_alive()
                .with_context(|| format!("waiting for {what}"))?;
            if Instant::now() > deadline {
                bail!(
                    "{} gave no {what} within {timeout:?}; the end of its output ({}):\n{}",
                    self.name,
                    self.log.display(),
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Says `quit` on its stdin and waits (20 s) for a clean exit; `what` names it in the
    /// error.
    pub(super) fn quit(&mut self, what: &str) -> Result<()> {
        self.send("quit")?;
        let status = self.wait_exit(Duration::from_secs(20))?;
        if !status.success() {
            bail!(
                "the {what} exited with {status}; see {}",
                self.log.display()
            );
        }
        Ok(())
    }

    /// Waits for it to exit.
    pub(super) fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().context("already stopped")?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                // Let the reader threads catch up with the last output.
                sleep(Duration::from_millis(50));
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{} does not exit", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits for the exit.
    pub(super) fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        signal(self.pid, "TERM");
        self.wait_exit(timeout)
    }

    /// Waits (up to 10 s) until this vnetd has created its sockets `socks`; its log is `log`.
    pub(super) fn wait_sockets(&mut self, socks: &[&Path], log: &Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socks.iter().all(|p| p.exists()) {
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!("vnetd did not create its sockets; see {}", log.display());
            }
            sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Waits until this anchor testpmd forwards.
    pub(super) fn wait_forwarding(&mut self) -> Result<String> {
        self.wait_output(0, Duration::from_secs(60), "anchor forwarding", |out| {
            out.contains("Press enter to exit")
        })
    }

    /// Stops this vnetd with SIGTERM, its frontends gone: it should be quiet, then exit
    /// cleanly. Returns what was not right, as anomalies: its exit status, warning and error
    /// lines in its log `log`.
    pub(super) fn stop_vnetd(&mut self, log: &Path) -> Result<Vec<String>> {
        let mut anomalies = Vec::new();
        let status = self.terminate(Duration::from_secs(10))?;
        if !status.success() {
            anomalies.push(format!("vnetd exited with {status} on SIGTERM"));
        }
        let complaints: Vec<String> = self
            .errors()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains("ERROR") || l.contains("panicked"))
            .map(str::to_string)
            .collect();
        if !complaints.is_empty() {
            anomalies.push(format!(
                "{} warning/error line(s) in {}: {}",
                complaints.len(),
                log.display(),
                complaints[0].trim()
            ));
        }
        Ok(anomalies)
    }

    /// Stops this anchor testpmd (enter at its prompt). Returns the frames it dropped over
    /// the whole run, warm-up included (its forward statistics), and, as anomalies, an
    /// unclean exit.
    pub(super) fn stop_anchor(&mut self) -> Result<(u64, Vec<String>)> {
        let mut anomalies = Vec::new();
        let from = self.output().len();
        self.send("")?;
        let status = self.wait_exit(Duration::from_secs(20))?;
        if !status.success() {
            anomalies.push(format!("anchor testpmd exited with {status}"));
        }
        let out = self.output();
        let dropped: u64 = parse_blocks(&out[from.min(out.len())..])
            .iter()
            .filter(|b| b.kind == BlockKind::Fwd)
            .map(|b| b.get("RX-dropped") + b.get("TX-dropped"))
            .sum();
        Ok((dropped, anomalies))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // testpmd exits on EOF, vnetd on SIGTERM; whatever is left, SIGKILL.
            drop(self.stdin.take());
            let exited = |child: &mut Child, wait: Duration| {
                let deadline = Instant::now() + wait;
                while Instant::now() < deadline {
                    if child.try_wait().ok().flatten().is_some() {
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                false
            };
            if !exited(&mut child, Duration::from_secs(2)) {
                signal(self.pid, "TERM");
                if !exited(&mut child, Duration::from_secs(3)) {
                    let _ = child.kill();
                }
            }
            let _ = child.wait();
        }
        if let Some(prefix) = &self.dpdk_prefix {
            testbed::dpdk::remove_files(prefix);
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sends SIGname to one process (`kill -NAME PID`).
pub(super) fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

pub(super) fn sleep(d: Duration) {
    std::thread::sleep(d);
}

pub(super) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A directory removed (with its contents) on drop.
#[derive(Debug)]
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn create(path: PathBuf) -> Result<TempDir> {
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
