//! Test harness: a vnetd process with its own socket directory, and frame builders.
#![allow(dead_code)]

pub mod guest;
pub mod netns;
pub mod responder;
pub mod testpmd;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use api::{PortStats, Request, Response};
use frontend::{Frontend, FrontendConfig};
use virtio_net::features as f;
pub use wire::MacAddr;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A running vnetd, killed (and its directory removed) on drop.
pub struct Vnetd {
    child: Child,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl Vnetd {
    /// Starts vnetd with one server-mode vhost-user port per name.
    pub fn start(ports: &[&str]) -> Vnetd {
        let specs: Vec<(&str, &str)> = ports.iter().map(|p| (*p, "")).collect();
        Self::start_ports(&specs)
    }

    /// Starts vnetd with server-mode vhost-user ports `(name, extra options)`, e.g.
    /// `("a", "mac=52:54:00:00:00:0a")`.
    pub fn start_ports(ports: &[(&str, &str)]) -> Vnetd {
        Self::start_ports_args(ports, &[])
    }

    /// [`Vnetd::start_ports`] with more daemon arguments (e.g. `--datapath poll`).
    pub fn start_ports_args(ports: &[(&str, &str)], extra: &[&str]) -> Vnetd {
        let dir = test_dir("vnet-test");
        let mut args = vec![
            "--control".to_string(),
            dir.join("ctl.sock").display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        for (p, extra) in ports {
            let sock = dir.join(format!("{p}.sock"));
            let sep = if extra.is_empty() { "" } else { "," };
            args.push("--vhost-user".into());
            args.push(format!("name={p},socket={}{sep}{extra}", sock.display()));
        }
        Self::start_with(
            dir,
            &args,
            ports.iter().map(|(p, _)| format!("{p}.sock")).collect(),
        )
    }

    /// Starts vnetd with raw arguments and waits for the named socket files in `dir`.
    pub fn start_with(dir: PathBuf, args: &[String], wait_for: Vec<String>) -> Vnetd {
        Self::start_wrapped(&[], dir, args, wait_for)
    }

    /// [`Vnetd::start_with`] through a program that execs vnetd (such as `setpriv ...`).
    pub fn start_wrapped(
        wrapper: &[&str],
        dir: PathBuf,
        args: &[String],
        wait_for: Vec<String>,
    ) -> Vnetd {
        let log = dir.join("vnetd.log");
        let vnetd = env!("CARGO_BIN_EXE_vnetd");
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(vnetd);
                c
            }
            None => Command::new(vnetd),
        };
        let child = cmd
            .args(args)
            .env("VNET_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let v = Vnetd { child, dir, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        for s in wait_for
            .iter()
            .chain(std::iter::once(&"ctl.sock".to_string()))
        {
            while !v.dir.join(s).exists() {
                assert!(
                    Instant::now() < deadline,
                    "vnetd did not create {s}:\n{}",
                    v.log_text()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        v
    }

    pub fn sock(&self, port: &str) -> PathBuf {
        self.dir.join(format!("{port}.sock"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn call(&self, req: Request) -> Response {
        api::call(&self.dir.join("ctl.sock"), &req, Duration::from_secs(5)).unwrap()
    }

    pub fn stats(&self) -> Vec<PortStats> {
        match self.call(Request::Stats) {
            Response::Stats(s) => s,
            r => panic!("unexpected {r:?}"),
        }
    }

    pub fn port_stats(&self, name: &str) -> PortStats {
        self.stats().into_iter().find(|s| s.name == name).unwrap()
    }

    pub fn ports(&self) -> Vec<api::PortInfo> {
        match self.call(Request::Ports) {
            Response::Ports(p) => p,
            r => panic!("unexpected {r:?}"),
        }
    }

    /// Waits until `cond` holds on the port list.
    pub fn wait_ports(&self, what: &str, cond: impl Fn(&[api::PortInfo]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if cond(&self.ports()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}\n{}",
                self.ports(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Mappings of frontend guest memory (memfd "vnet-frontend-*") in vnetd's address space.
    pub fn guest_mappings(&self) -> usize {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.child.id())).unwrap();
        maps.lines()
            .filter(|l| l.contains("memfd:vnet-frontend-"))
            .count()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Vnetd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- vnetd log ---\n{}", self.log_text());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh directory under the system temp dir, unique to this process and call.
pub fn test_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A feature set to run a scenario under.
#[derive(Debug, Clone, Copy)]
pub struct Feat {
    pub mrg: bool,
    pub event_idx: bool,
    pub indirect: bool,
    /// Packed virtqueues instead of split ones.
    pub packed: bool,
}

impl Feat {
    /// Every combination, split and packed rings.
    pub fn all() -> Vec<Feat> {
        let mut v = vec![];
        for packed in [false, true] {
            for mrg in [true, false] {
                for event_idx in [true, false] {
                    for indirect in [true, false] {
                        v.push(Feat {
                            mrg,
                            event_idx,
                            indirect,
                            packed,
                        });
                    }
                }
            }
        }
        v
    }

    /// The richest and the plainest feature sets, on each ring layout.
    pub fn extremes() -> Vec<Feat> {
        let mut v = vec![];
        for packed in [false, true] {
            for on in [true, false] {
                v.push(Feat {
                    mrg: on,
                    event_idx: on,
                    indirect: on,
                    packed,
                });
            }
        }
        v
    }

    pub fn features(&self) -> u64 {
        let mut x = frontend::DEFAULT_FEATURES;
        if self.packed {
            x |= f::RING_PACKED;
        }
        for (on, bit) in [
            (self.mrg, f::MRG_RXBUF),
            (self.event_idx, f::RING_EVENT_IDX),
            (self.indirect, f::RING_INDIRECT_DESC),
        ] {
            if !on {
                x &= !bit;
            }
        }
        x
    }
}

pub fn connect(path: &Path, features: u64) -> Frontend {
    let cfg = FrontendConfig {
        wanted_features: features,
        ..FrontendConfig::new(path)
    };
    Frontend::connect(cfg).unwrap()
}

pub fn mac(n: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0x00, 0x00, 0x00, n])
}

/// An Ethernet frame of `len` bytes with a recognizable payload.
pub fn frame(dst: MacAddr, src: MacAddr, len: usize, tag: u8) -> Vec<u8> {
    let mut b = vec![0u8; len.max(14)];
    b[0..6].copy_from_slice(dst.as_bytes());
    b[6..12].copy_from_slice(src.as_bytes());
    b[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental ethertype
    for (i, x) in b[14..].iter_mut().enumerate() {
        *x = tag.wrapping_add(u8::try_from(i % 256).unwrap());
    }
    b
}

/// Sends a 100-byte frame `dst` <- `src` (payload after `tag`) from `from`; `to` must
/// receive it unchanged within `wait`.
pub fn pass_frame(
    from: &mut Frontend,
    to: &mut Frontend,
    dst: MacAddr,
    src: MacAddr,
    tag: u8,
    wait: Duration,
) {
    let x = frame(dst, src, 100, tag);
    from.send(0, &virtio_net::NetHdr::default(), &x).unwrap();
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (_, got) = to.recv(0, left).unwrap().expect("frame");
        // A TAP port's host stack floods its own multicast (IPv6 MLD, router
        // solicitations) to every port: a unicast frame is what this waits for.
        if got[0] & 1 == 1 && dst.0[0] & 1 == 0 {
            continue;
        }
        assert_eq!(got, x);
        return;
    }
}

/// A binary of another workspace package, built next to this test (`cargo xtask test`
/// builds all binaries first; `cargo build --bins` does it by hand).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --bins` (cargo xtask test does)",
        p.display()
    );
    p
}
