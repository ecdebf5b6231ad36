//! Ports at runtime: vnetd starts with none, `vnetctl add-port` adds vhost-user and TAP
//! ports while others forward, `vnetctl del-port` removes them and leaves nothing behind
//! (socket file, guest memory mapping, FDB entries, TAP interface).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(5);

/// Runs `vnetctl --control CTL args...`: (success, stdout + stderr).
fn vnetctl(v: &Vnetd, args: &[&str]) -> (bool, String) {
    let out = Command::new(workspace_bin("vnetctl"))
        .arg("--control")
        .arg(v.dir.join("ctl.sock"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn add_vhost_user(v: &Vnetd, name: &str, extra: &str) {
    let spec = format!("name={name},socket={}{extra}", v.sock(name).display());
    let (ok, out) = vnetctl(v, &["add-port", "--vhost-user", &spec]);
    assert!(ok, "{out}");
    assert_eq!(out, format!("port {name} added\n"));
    assert!(v.sock(name).exists());
}

fn fdb_has(v: &Vnetd, mac: MacAddr) -> bool {
    match v.call(api::Request::Fdb) {
        api::Response::Fdb(rows) => rows.iter().any(|r| r.mac == mac),
        other => panic!("{other:?}"),
    }
}

fn link_exists(ifname: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", ifname])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn ports_come_and_go_while_the_others_forward() {
    let dir = test_dir("vnet-runtime");
    let args = vec![
        "--control".to_string(),
        dir.join("ctl.sock").display().to_string(),
    ];
    let v = Vnetd::start_with(dir, &args, vec![]);
    assert!(v.ports().is_empty());
    assert!(v.log_text().contains("no ports yet"), "{}", v.log_text());

    add_vhost_user(&v, "a", "");
    add_vhost_user(&v, "b", ",mac=52:54:00:00:00:02");
    let tap = netns::can_use_tap();
    let ifname = format!("vnrt{}", std::process::id() % 100_000);
    if tap {
        let (ok, out) = vnetctl(
            &v,
            &["add-port", "--tap", &format!("name=host,ifname={ifname}")],
        );
        assert!(ok, "{out}");
        assert!(link_exists(&ifname));
    }
    let mut a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    let mut b = connect(&v.sock("b"), frontend::DEFAULT_FEATURES);
    v.wait_ports("a, b up", |p| {
        p.iter().filter(|p| p.state == api::PortState::Up).count() == if tap { 3 } else { 2 }
    });
    pass_frame(&mut b, &mut a, mac(1), mac(2), 1, WAIT);
    assert!(fdb_has(&v, mac(2)));
    assert_eq!(v.guest_mappings(), 2, "each frontend's memory is mapped");

    // Refused changes name what is wrong and change nothing.
    let (ok, out) = vnetctl(
        &v,
        &[
            "add-port",
            "--vhost-user",
            &format!("name=a,socket={}", v.sock("x").display()),
        ],
    );
    assert!(
        !ok && out.contains("add-port") && out.contains("`a`"),
        "{out}"
    );
    let (ok, out) = vnetctl(&v, &["add-port", "--vhost-user", "name=c,sockett=/x"]);
    assert!(!ok && out.contains("unknown key `sockett`"), "{out}");
    let (ok, out) = vnetctl(&v, &["del-port", "nope"]);
    assert!(!ok && out.contains("no port named `nope`"), "{out}");

    // Removing b: its socket, its guest memory and its stations go; a keeps forwarding.
    let (ok, out) = vnetctl(&v, &["del-port", "b"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("port b removed") && out.contains("socket"),
        "{out}"
    );
    assert!(!v.sock("b").exists());
    assert!(!fdb_has(&v, mac(2)), "b's FDB entry is gone");
    let deadline = std::time::Instant::now() + WAIT;
    while v.guest_mappings() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "b's memory still mapped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(b);
    add_vhost_user(&v, "c", "");
    let mut c = connect(&v.sock("c"), frontend::DEFAULT_FEATURES);
    pass_frame(&mut a, &mut c, mac(3), mac(1), 2, WAIT);
    pass_frame(&mut c, &mut a, mac(1), mac(3), 3, WAIT);
    // The same name can come back.
    add_vhost_user(&v, "b", "");
    if tap {
        let (ok, out) = vnetctl(&v, &["del-port", "host"]);
        assert!(ok, "{out}");
        assert!(!link_exists(&ifname), "the TAP vnetd created is gone");
    }
    let names: Vec<String> = v.ports().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["a", "c", "b"]);
}

#[test]
fn adding_and_removing_a_port_many_times_never_stops_the_others() {
    let v = Vnetd::start(&["a", "b"]);
    let mut a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    let mut b = connect(&v.sock("b"), frontend::DEFAULT_FEATURES);
    for round in 0..100u32 {
        let tag = (round % 250) as u8;
        add_vhost_user(&v, "x", "");
        if round % 10 == 0 {
            // Now and then with a frontend attached when it goes.
            let _x = connect(&v.sock("x"), frontend::DEFAULT_FEATURES);
            let (ok, out) = vnetctl(&v, &["del-port", "x"]);
            assert!(ok, "{out}");
        } else {
            let (ok, out) = vnetctl(&v, &["del-port", "x"]);
            assert!(ok, "{out}");
        }
        pass_frame(&mut a, &mut b, mac(2), mac(1), tag, WAIT);
    }
    assert!(!v.sock("x").exists());
    assert_eq!(v.ports().len(), 2);
}
