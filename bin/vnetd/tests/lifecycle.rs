//! Port lifecycle: client mode (vnetd connects to the VMM's socket, retrying with no
//! deadline, and reconnects after the VMM goes away), kicks sent before a ring is
//! enabled, ring stop/restart.

#![allow(clippy::cast_possible_truncation)] // test data is made of deliberate truncations

mod common;

use std::os::unix::net::UnixListener;
use std::time::Duration;

use common::*;
use frontend::{Frontend, FrontendConfig};
use virtio_net::NetHdr;

const WAIT: Duration = Duration::from_secs(5);

fn ping(from: &mut Frontend, to: &mut Frontend, dst: MacAddr, src: MacAddr, tag: u8) {
    pass_frame(from, to, dst, src, tag, WAIT);
}

#[test]
fn client_mode_waits_for_the_vmm_and_reconnects() {
    let dir = test_dir("vnet-client");
    let (sa, sb) = (dir.join("a.sock"), dir.join("b.sock"));
    let args: Vec<String> = vec![
        "--control".into(),
        dir.join("ctl.sock").display().to_string(),
        "--vhost-user".into(),
        format!("name=a,socket={},client", sa.display()),
        "--vhost-user".into(),
        format!("name=b,socket={},client", sb.display()),
    ];
    let v = Vnetd::start_with(dir.clone(), &args, vec![]);
    // The "VMM" appears only after vnetd has been retrying for a while.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        v.log_text().contains("waiting for the VMM's socket"),
        "{}",
        v.log_text()
    );
    let la = UnixListener::bind(&sa).unwrap();
    let lb = UnixListener::bind(&sb).unwrap();
    let cfg = |p: &std::path::Path| FrontendConfig::new(p);
    let mut a = Frontend::accept(cfg(&sa), &la).unwrap();
    let mut b = Frontend::accept(cfg(&sb), &lb).unwrap();
    v.wait_ports("up", |p| p.iter().all(|p| p.state == api::PortState::Up));
    assert!(v.ports().iter().all(|p| p.mode == api::PortMode::Client));
    ping(&mut a, &mut b, MacAddr::BROADCAST, mac(1), 1);
    ping(&mut b, &mut a, mac(1), mac(2), 2);
    // The VMM of b restarts: vnetd sees the hang-up and connects again by itself.
    drop(b);
    v.wait_ports("b down", |p| {
        p.iter()
            .any(|p| p.name == "b" && p.state != api::PortState::Up)
    });
    let mut b = Frontend::accept(cfg(&sb), &lb).unwrap();
    v.wait_ports("b up", |p| p.iter().all(|p| p.state == api::PortState::Up));
    ping(&mut a, &mut b, MacAddr::BROADCAST, mac(1), 3);
    ping(&mut b, &mut a, mac(1), mac(2), 4);
    // On SIGTERM vnetd exits cleanly and does not delete sockets it did not create.
    let mut v = v;
    assert!(v.terminate().success(), "{}", v.log_text());
    assert!(sa.exists() && sb.exists());
    assert!(
        !dir.join("ctl.sock").exists(),
        "its own control socket is removed"
    );
}

#[test]
fn sigterm_removes_server_sockets() {
    let mut v = Vnetd::start(&["a"]);
    let a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    v.wait_ports("up", |p| p.iter().all(|p| p.state == api::PortState::Up));
    assert!(v.terminate().success(), "{}", v.log_text());
    assert!(!v.sock("a").exists() && !v.dir.join("ctl.sock").exists());
    assert!(v.log_text().contains("vnetd stopping"));
    drop(a);
}

#[test]
fn kick_before_enable_is_not_lost() {
    let v = Vnetd::start(&["a", "b"]);
    let mut b = connect(&v.sock("b"), frontend::DEFAULT_FEATURES);
    let mut a = Frontend::connect(FrontendConfig {
        defer_enable: true,
        ..FrontendConfig::new(v.sock("a"))
    })
    .unwrap();
    let x = frame(MacAddr::BROADCAST, mac(1), 200, 9);
    // Queued and kicked while vnetd must not touch the ring yet.
    a.send(0, &NetHdr::default(), &x).unwrap();
    assert!(
        b.recv(0, Duration::from_millis(300)).unwrap().is_none(),
        "ring not enabled yet"
    );
    a.enable_rings().unwrap();
    assert_eq!(
        b.recv(0, WAIT).unwrap().expect("delivered after enable").1,
        x
    );
}
