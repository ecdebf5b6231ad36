//! Network namespaces that tests and benches create, and delete again: the only places
//! their traffic goes besides loopback (addresses from 198.18.0.0/15).
//!
//! A [`Netns`] is made with `ip netns add` (its name under `/run/netns`), starts with IPv6
//! off so that nothing but the test's own frames moves, and on drop stops whatever still
//! runs in it and deletes it, and with it every TAP or veth device in it. Names carry the
//! creating process's PID, so that one left by a killed process can be told from a live
//! one ([`sweep_stale`]).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::Result;
use crate::image::run_output;

/// A network namespace, deleted (with what runs in it) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` (one of the same name left behind is deleted first), with
    /// IPv6 off.
    pub fn create(name: &str) -> Result<Netns> {
        kill(name);
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.sysctl(&[
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ])?;
        Ok(ns)
    }

    /// A namespace for a test: `vnet-<tag>-<pid>`.
    pub fn for_test(tag: &str) -> Result<Netns> {
        Self::create(&format!("vnet-{tag}-{}", std::process::id()))
    }

    /// Its name (under `/run/netns`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `args` as a command run inside the namespace (`ip netns exec NAME args...`).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// `cmd` (program, arguments and environment) run inside the namespace. `ip netns
    /// exec` execs it: the child's PID is the program's.
    pub fn wrap(&self, cmd: &Command) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(v) => c.env(key, v),
                None => c.env_remove(key),
            };
        }
        c
    }

    /// Runs `args` in the namespace; its stdout, or an error when it fails.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        run_output(self.command(args).stdin(Stdio::null()))
    }

    /// Sets sysctls (`key=value`) in the namespace.
    pub fn sysctl(&self, settings: &[&str]) -> Result<()> {
        let mut args = vec!["sysctl", "-qw"];
        args.extend(settings);
        self.run(&args).map(drop)
    }

    /// Whether process `pid` lives in this namespace.
    pub fn holds(&self, pid: u32) -> bool {
        let ours = std::fs::metadata(Path::new("/run/netns").join(&self.name));
        let theirs = std::fs::metadata(format!("/proc/{pid}/ns/net"));
        matches!((ours, theirs), (Ok(a), Ok(b)) if a.ino() == b.ino() && a.dev() == b.dev())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill(&self.name);
    }
}

/// `ip ARGS`, failing with its message.
pub fn ip(args: &[&str]) -> Result<()> {
    run_output(Command::new("ip").args(args).stdin(Stdio::null())).map(drop)
}

/// Stops every process left in namespace `name` (SIGKILL) and deletes it; nothing happens
/// when there is none.
pub fn kill(name: &str) {
    if let Ok(out) = Command::new("ip")
        .args(["netns", "pids", name])
        .stderr(Stdio::null())
        .output()
    {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill")
                .args(["-KILL", pid])
                .stderr(Stdio::null())
                .status();
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

/// The names of the namespaces under `/run/netns`.
pub fn names() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The name under `/run/netns` of the namespace this process runs in, if it has one.
pub fn current() -> Option<String> {
    let me = std::fs::metadata("/proc/self/ns/net").ok()?;
    std::fs::read_dir("/run/netns")
        .ok()?
        .flatten()
        .find(|e| {
            std::fs::metadata(e.path()).is_ok_and(|m| m.ino() == me.ino() && m.dev() == me.dev())
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
}

/// The PID in a name made of `tag`, a PID and optionally `-` and more: `vnet-bench-42`,
/// `vnet-bench-42-ovs`.
pub fn owner_pid(tag: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(tag)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let after = &rest[digits.len()..];
    if after.is_empty() || after.starts_with('-') {
        digits.parse().ok()
    } else {
        None
    }
}

/// Deletes the namespaces named `<tag><pid>...` (among those `pick` keeps) whose process
/// is gone; returns their names.
pub fn sweep_stale(tag: &str, pick: impl Fn(&str) -> bool) -> Vec<String> {
    let mut removed = Vec::new();
    for name in names() {
        if !pick(&name) {
            continue;
        }
        let Some(pid) = owner_pid(tag, &name) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            kill(&name);
            removed.push(name);
        }
    }
    removed
}

/// Whether this process can create namespaces and TAP devices: root, `/dev/net/tun` and
/// iproute2; otherwise what is missing.
pub fn tap_unavailable() -> Option<String> {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let ok = root
        && Path::new("/dev/net/tun").exists()
        && Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
    (!ok).then(|| "TAP tests need root, /dev/net/tun and iproute2".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_of_names() {
        assert_eq!(owner_pid("vnet-bench-", "vnet-bench-42"), Some(42));
        assert_eq!(owner_pid("vnet-bench-", "vnet-bench-42-ovs"), Some(42));
        assert_eq!(owner_pid("vnet-bench-", "vnet-bench-42x"), None);
        assert_eq!(owner_pid("vnet-bench-", "vnet-test-42"), None);
    }

    #[test]
    fn wrapped_commands_keep_their_environment() {
        let ns = Netns {
            name: "vnet-none".into(),
        };
        let mut cmd = Command::new("cat");
        cmd.arg("-u").env("X", "1");
        let c = ns.wrap(&cmd);
        let args: Vec<_> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args, ["netns", "exec", "vnet-none", "cat", "-u"]);
        assert_eq!(c.get_envs().count(), 1);
        // Not created: dropping it must not touch anything.
        std::mem::forget(ns);
    }
}
