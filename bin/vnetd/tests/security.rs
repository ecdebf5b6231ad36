//! The hardened daemon: least privilege (`--user`, no capabilities, no_new_privs, seccomp
//! on every thread), socket ownership and peer checks, and hostile VMM inputs that must
//! neither block the control plane nor spin a worker.

#![allow(clippy::cast_possible_truncation)] // test data is made of deliberate truncations

mod common;

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use common::*;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

const WAIT: Duration = Duration::from_secs(5);
/// A fresh frontend's handshake and a control request must finish within this while
/// another peer misbehaves (issue: "within 1 s").
const PROMPT: Duration = Duration::from_secs(1);

/// `Key:\tvalue` of every thread of `pid`.
fn thread_status(pid: u32, key: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let status = std::fs::read_to_string(t.join("status")).unwrap_or_default();
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .unwrap_or("")
            .trim()
            .to_string();
        if let Some(v) = status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
        {
            out.push((name, v.trim().to_string()));
        }
    }
    out
}

#[test]
fn runs_as_the_user_with_no_capabilities_and_seccomp_on_every_thread() {
    let dir = test_dir("vnet-user");
    let mut args: Vec<String> = vec![
        "--control".into(),
        dir.join("ctl.sock").display().to_string(),
        "--user".into(),
        "nobody".into(),
        "--workers".into(),
        "2".into(),
    ];
    for p in ["a", "b"] {
        args.push("--vhost-user".into());
        args.push(format!(
            "name={p},socket={}",
            dir.join(format!("{p}.sock")).display()
        ));
    }
    let tap = netns::can_use_tap();
    let ifname = format!("vnsec{}", std::process::id() % 10000);
    if tap {
        args.push("--tap".into());
        args.push(format!("name=host,ifname={ifname}"));
    }
    let v = Vnetd::start_with(dir, &args, vec!["a.sock".into(), "b.sock".into()]);
    let mut a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    let mut b = connect(&v.sock("b"), frontend::DEFAULT_FEATURES);
    v.wait_ports("a, b up", |p| {
        p.iter().filter(|p| p.state == api::PortState::Up).count() >= 2
    });
    pass_frame(&mut a, &mut b, mac(2), mac(1), 1, WAIT);
    pass_frame(&mut b, &mut a, mac(1), mac(2), 2, WAIT);
    // Every thread, the connection threads spawned after the switch included.
    let pid = v.pid();
    let uids = thread_status(pid, "Uid");
    assert!(uids.len() >= 5, "main, 2 workers, 2 connections: {uids:?}");
    for (name, uid) in &uids {
        assert!(
            uid.split_whitespace().all(|u| u == "65534"),
            "{name}: Uid {uid}"
        );
    }
    for (name, caps) in thread_status(pid, "CapEff") {
        assert_eq!(caps, "0000000000000000", "{name}");
    }
    for (name, nnp) in thread_status(pid, "NoNewPrivs") {
        assert_eq!(nnp, "1", "{name}");
    }
    for (name, mode) in thread_status(pid, "Seccomp") {
        assert_eq!(mode, "2", "{name}: seccomp filter mode");
    }
    assert!(
        v.log_text().contains("running as uid 65534"),
        "{}",
        v.log_text()
    );
    if tap {
        let ports = v.ports();
        let host = ports.iter().find(|p| p.name == "host").unwrap();
        assert_eq!(host.state, api::PortState::Up, "{host:?}");
    }
}

/// A persistent TAP, deleted on drop.
struct PersistentTap(String);

impl Drop for PersistentTap {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["tuntap", "del", "dev", &self.0, "mode", "tap"])
            .status();
    }
}

fn ip(args: &[&str]) {
    let st = std::process::Command::new("ip")
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "ip {args:?}");
}

#[test]
fn a_persistent_tap_owned_by_the_user_attaches_without_any_capability() {
    if !netns::can_use_tap() {
        return;
    }
    let ifname = format!("vnpt{}", std::process::id() % 100_000);
    ip(&[
        "tuntap", "add", "dev", &ifname, "mode", "tap", "user", "nobody", "vnet_hdr",
    ]);
    let _tap = PersistentTap(ifname.clone());
    ip(&["link", "set", &ifname, "mtu", "1500", "up"]);
    let dir = test_dir("vnet-nocaps");
    nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let args: Vec<String> = vec![
        "--control".into(),
        dir.join("ctl.sock").display().to_string(),
        "--vhost-user".into(),
        format!("name=a,socket={}", dir.join("a.sock").display()),
        "--tap".into(),
        format!("name=host,ifname={ifname},mtu=1500"),
    ];
    // vnetd never has a capability: started as nobody, with none to inherit.
    let wrapper = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ];
    let v = Vnetd::start_wrapped(&wrapper, dir, &args, vec!["a.sock".into()]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", v.pid())).unwrap();
    assert!(status.contains("CapPrm:\t0000000000000000"), "{status}");
    assert!(status.contains("Uid:\t65534"), "{status}");
    v.wait_ports("TAP up", |p| {
        p.iter()
            .any(|p| p.name == "host" && p.state == api::PortState::Up)
    });
    // A broadcast from the guest reaches the host through the TAP.
    let mut a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    let deadline = Instant::now() + WAIT;
    while v.port_stats("host").tx_packets == 0 {
        assert!(Instant::now() < deadline, "nothing reached the TAP");
        a.send(
            0,
            &virtio_net::NetHdr::default(),
            &frame(MacAddr::BROADCAST, mac(1), 60, 1),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn socket_modes_groups_and_allowed_peers() {
    let dir = test_dir("vnet-sockmode");
    let args: Vec<String> = vec![
        "--control".into(),
        dir.join("ctl.sock").display().to_string(),
        "--control-group".into(),
        "daemon".into(),
        "--socket-mode".into(),
        "0660".into(),
        "--socket-group".into(),
        "kvm".into(),
        "--vhost-user".into(),
        format!("name=a,socket={}", dir.join("a.sock").display()),
        "--vhost-user".into(),
        format!(
            "name=b,socket={},mode=0600,group=0,uids=4242",
            dir.join("b.sock").display()
        ),
    ];
    let v = Vnetd::start_with(dir.clone(), &args, vec!["a.sock".into(), "b.sock".into()]);
    let md = |f: &str| std::fs::metadata(dir.join(f)).unwrap();
    let gid = |name: &str| {
        nix::unistd::Group::from_name(name)
            .unwrap()
            .map_or(u32::MAX, |g| g.gid.as_raw())
    };
    assert_eq!(md("a.sock").permissions().mode() & 0o777, 0o660);
    assert_eq!(md("a.sock").gid(), gid("kvm"));
    assert_eq!(md("b.sock").permissions().mode() & 0o777, 0o600);
    assert_eq!(md("b.sock").gid(), 0);
    assert_eq!(md("ctl.sock").permissions().mode() & 0o777, 0o660);
    assert_eq!(md("ctl.sock").gid(), gid("daemon"));
    // Port b accepts only uid 4242: we (root) are refused, port a serves us.
    let mut s = UnixStream::connect(v.sock("b")).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        std::io::Read::read(&mut s, &mut buf).unwrap(),
        0,
        "refused peers are hung up on"
    );
    assert!(v
        .log_text()
        .contains("port b: refusing a peer with uid 0: not in the port's uids"));
    let _a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    v.wait_ports("a up", |p| {
        p.iter()
            .any(|p| p.name == "a" && p.state == api::PortState::Up)
    });
}

#[test]
fn a_second_vnetd_on_the_same_path_fails_and_the_first_keeps_serving() {
    let v = Vnetd::start(&["a", "b"]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vnetd"))
        .args([
            "--control",
            &v.dir.join("ctl2.sock").display().to_string(),
            "--vhost-user",
            &format!("name=a,socket={}", v.sock("a").display()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is in use: another process"), "{err}");
    assert!(v.sock("a").exists(), "the first vnetd's socket stays");
    let mut a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    let mut b = connect(&v.sock("b"), frontend::DEFAULT_FEATURES);
    pass_frame(&mut a, &mut b, mac(2), mac(1), 1, WAIT);
}

#[test]
fn sockets_in_directories_others_may_write_are_refused() {
    let dir = test_dir("vnet-shared");
    let open = dir.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let sock = open.join("a.sock");
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vnetd"))
            .args([
                "--control",
                &dir.join("ctl.sock").display().to_string(),
                "--vhost-user",
                &format!("name=a,socket={}", sock.display()),
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mode 1777) is writable by its group and other users")
            && err.contains("--allow-shared-socket-dir"),
        "{err}"
    );
    // With the operator's consent it starts (and is stopped by the timeout below).
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vnetd"))
        .args([
            "--control",
            &dir.join("ctl.sock").display().to_string(),
            "--vhost-user",
            &format!("name=a,socket={}", sock.display()),
            "--allow-shared-socket-dir",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(sock.exists());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- hostile VMMs and control clients

/// Sends one vhost-user message with `fds` attached.
fn send(s: &UnixStream, code: u32, body: &[u8], fds: &[RawFd]) {
    let mut m = Vec::new();
    m.extend_from_slice(&code.to_le_bytes());
    m.extend_from_slice(&1u32.to_le_bytes());
    m.extend_from_slice(&(body.len() as u32).to_le_bytes());
    m.extend_from_slice(body);
    s.send_with_fds(&[&m[..]], fds).unwrap();
}

/// Waits until the peer hangs up (vnetd dropped the connection); false on timeout.
fn hung_up(s: &mut UnixStream) -> bool {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match std::io::Read::read(s, &mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// Port b completes a handshake, and `vnetctl ports` answers, both within [`PROMPT`].
fn others_stay_prompt(v: &Vnetd) -> frontend::Frontend {
    let t = Instant::now();
    let b = connect(&v.sock("b"), frontend::DEFAULT_FEATURES);
    let handshake = t.elapsed();
    let t = Instant::now();
    let ports = api::call(&v.dir.join("ctl.sock"), &api::Request::Ports, PROMPT);
    let control = t.elapsed();
    assert!(ports.is_ok(), "vnetctl ports: {ports:?}");
    assert!(handshake < PROMPT, "port b handshake took {handshake:?}");
    assert!(control < PROMPT, "control request took {control:?}");
    b
}

/// CPU seconds the datapath workers of `pid` used so far.
fn worker_cpu(pid: u32) -> f64 {
    let tick = 100.0; // USER_HZ
    let mut total = 0.0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let comm = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
        if !comm.starts_with("vnet-worker") {
            continue;
        }
        let stat = std::fs::read_to_string(t.join("stat")).unwrap_or_default();
        // Fields after the command name: state is 3rd, utime 14th, stime 15th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
        total += ticks / tick;
    }
    total
}

/// The workers idle (event mode, no traffic) use well under a core: none spins.
fn no_worker_spins(v: &Vnetd) {
    let before = worker_cpu(v.pid());
    std::thread::sleep(Duration::from_secs(1));
    let used = worker_cpu(v.pid()) - before;
    assert!(
        used < 0.5,
        "workers used {used:.2} s of CPU in 1 s idle: one spins"
    );
}

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe().unwrap()
}

const SET_OWNER: u32 = 3;
const SET_MEM_TABLE: u32 = 5;
const SET_VRING_KICK: u32 = 12;
const SET_VRING_CALL: u32 = 13;
const SET_VRING_ERR: u32 = 14;

#[test]
fn notification_fds_that_are_not_eventfds_are_refused() {
    let v = Vnetd::start(&["a", "b"]);
    let (r, w) = pipe();
    let (r_eof, w_eof) = pipe();
    drop(w_eof);
    let memfd = vring::mem::memfd(c"notify", 8).unwrap();
    // A call fd that is a pipe nobody reads, a kick fd at EOF, a memfd as err.
    for (code, fd, what) in [
        (
            SET_VRING_CALL,
            w.as_raw_fd(),
            "call fd of ring 0 refused: fd is not an eventfd but pipe:",
        ),
        (
            SET_VRING_KICK,
            r_eof.as_raw_fd(),
            "kick fd of ring 0 refused: fd is not an eventfd but pipe:",
        ),
        (
            SET_VRING_ERR,
            memfd.as_raw_fd(),
            "err fd of ring 0 refused: fd is not an eventfd but /memfd:",
        ),
    ] {
        let mut s = UnixStream::connect(v.sock("a")).unwrap();
        send(&s, SET_OWNER, &[], &[]);
        send(&s, code, &0u64.to_le_bytes(), &[fd]);
        assert!(hung_up(&mut s), "{what}");
        assert!(
            v.log_text().contains(&format!("port a: {what}")),
            "{what}:\n{}",
            v.log_text()
        );
        let _b = others_stay_prompt(&v);
        no_worker_spins(&v);
    }
    drop(r);
    // Port a serves the next correct frontend.
    let mut a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    let mut b = connect(&v.sock("b"), frontend::DEFAULT_FEATURES);
    pass_frame(&mut a, &mut b, mac(2), mac(1), 1, WAIT);
}

#[test]
fn memory_from_pipes_sockets_or_over_max_mem_is_refused() {
    let v = Vnetd::start_ports(&[("a", "max-mem=64M"), ("b", "")]);
    let region = |size: u64| {
        // VhostUserMemory header (num_regions, padding) and one region.
        let mut b = Vec::new();
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for x in [0u64, size, 0x7f00_0000_0000, 0] {
            b.extend_from_slice(&x.to_le_bytes());
        }
        b
    };
    let (r, _w) = pipe();
    let (sock, _peer) = UnixStream::pair().unwrap();
    let big = vring::mem::memfd(c"big", 128 << 20).unwrap();
    for (fd, size, what) in [
        (
            r.as_raw_fd(),
            1 << 20,
            "fd is a pipe, not a memfd, hugetlbfs or regular file",
        ),
        (sock.as_raw_fd(), 1 << 20, "fd is a socket, not a memfd"),
        (
            big.as_raw_fd(),
            128 << 20,
            "over this port's limit of 67108864 (max-mem)",
        ),
    ] {
        let mut s = UnixStream::connect(v.sock("a")).unwrap();
        send(&s, SET_OWNER, &[], &[]);
        send(&s, SET_MEM_TABLE, &region(size), &[fd]);
        assert!(hung_up(&mut s), "{what}");
        assert!(v.log_text().contains(what), "{what}:\n{}", v.log_text());
    }
    let mut a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    let mut b = connect(&v.sock("b"), frontend::DEFAULT_FEATURES);
    pass_frame(&mut a, &mut b, mac(2), mac(1), 1, WAIT);
}

#[test]
fn a_dribbling_vmm_or_control_client_holds_nobody_up() {
    let v = Vnetd::start(&["a", "b"]);
    // A VMM on port a sends a message one byte per second.
    let dribbler = {
        let path = v.sock("a");
        std::thread::spawn(move || {
            let mut s = UnixStream::connect(path).unwrap();
            let mut msg = Vec::new();
            for w in [1u32, 1, 0] {
                msg.extend_from_slice(&w.to_le_bytes());
            }
            let mut sent = 0;
            for byte in msg {
                if s.write_all(&[byte]).is_err() {
                    break;
                }
                sent += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            sent
        })
    };
    // A control client sends a huge request slowly.
    let huge = {
        let path = v.dir.join("ctl.sock");
        std::thread::spawn(move || {
            let mut s = UnixStream::connect(path).unwrap();
            let chunk = [b'x'; 1024];
            let mut sent = 0;
            for _ in 0..64 {
                if s.write_all(&chunk).is_err() {
                    break;
                }
                sent += chunk.len();
                std::thread::sleep(Duration::from_millis(100));
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut b = others_stay_prompt(&v);
    no_worker_spins(&v);
    // The dribbler is cut off after the per-message deadline, the huge request at its
    // size limit or its deadline.
    assert!(
        dribbler.join().unwrap() < 12,
        "the dribbling VMM was not dropped"
    );
    assert!(
        huge.join().unwrap() < 64 * 1024,
        "the huge request was not cut"
    );
    assert!(
        v.log_text().contains("message not complete within 1000 ms"),
        "{}",
        v.log_text()
    );
    let mut a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    pass_frame(&mut a, &mut b, mac(2), mac(1), 1, WAIT);
}

#[test]
fn a_client_mode_peer_with_a_full_backlog_blocks_nothing() {
    let dir = test_dir("vnet-backlog");
    let vmm = dir.join("vmm.sock");
    // A "VMM" that listens but never accepts, its backlog filled.
    let l = UnixListener::bind(&vmm).unwrap();
    let mut fill = Vec::new();
    for _ in 0..4096 {
        match vmm_stream_nonblocking(&vmm) {
            Some(s) => fill.push(s),
            None => break,
        }
    }
    let args: Vec<String> = vec![
        "--control".into(),
        dir.join("ctl.sock").display().to_string(),
        "--vhost-user".into(),
        format!("name=a,socket={},client", vmm.display()),
        "--vhost-user".into(),
        format!("name=b,socket={}", dir.join("b.sock").display()),
    ];
    let mut v = Vnetd::start_with(dir, &args, vec!["b.sock".into()]);
    std::thread::sleep(Duration::from_millis(1200));
    let _b = others_stay_prompt(&v);
    no_worker_spins(&v);
    assert!(v.alive(), "{}", v.log_text());
    drop(l);
}

/// A non-blocking connect to `path` (None once the backlog is full).
fn vmm_stream_nonblocking(path: &std::path::Path) -> Option<UnixStream> {
    control::sockets::connect_nonblocking(path).ok()
}
