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

fn dropped(v: &Vnetd, port: &str, reason: &str) -> u64 {
    v.port_stats(port).drops.get(reason).copied().unwrap_or(0)
}

/// `from` sends a frame `dst` <- `src`; whether `to` gets it within a short wait.
fn delivered(
    from: &mut frontend::Frontend,
    to: &mut frontend::Frontend,
    dst: MacAddr,
    src: MacAddr,
    tag: u8,
) -> bool {
    let x = frame(dst, src, 100, tag);
    from.send(0, &virtio_net::NetHdr::default(), &x).unwrap();
    matches!(to.recv(0, Duration::from_millis(300)).unwrap(), Some((_, got)) if got == x)
}

#[test]
fn set_port_changes_security_and_vlans_live() {
    let v = Vnetd::start_ports(&[("a", "mac=52:54:00:00:00:01"), ("b", "")]);
    let mut a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    let mut b = connect(&v.sock("b"), frontend::DEFAULT_FEATURES);
    // a may only send from its own MAC.
    assert!(!delivered(&mut a, &mut b, mac(2), mac(9), 1));
    assert_eq!(dropped(&v, "a", "spoofed"), 1);
    let (ok, out) = vnetctl(&v, &["set-port", "a", "spoofchk=off"]);
    assert!(ok, "{out}");
    assert_eq!(out, "port a: spoofchk changed\n");
    assert!(delivered(&mut a, &mut b, mac(2), mac(9), 2));
    // b moves to VLAN 10: untagged a no longer reaches it, until a moves too.
    let (ok, out) = vnetctl(&v, &["set-port", "b", "vlan=10"]);
    assert!(ok, "{out}");
    assert!(!delivered(&mut a, &mut b, mac(2), mac(1), 3));
    let (ok, out) = vnetctl(&v, &["set-port", "a", "vlan=10", "max-macs=4"]);
    assert!(ok, "{out}");
    assert!(delivered(&mut a, &mut b, mac(2), mac(1), 4));
    let ports = v.ports();
    let a_info = ports.iter().find(|p| p.name == "a").unwrap();
    assert_eq!(a_info.vlan.as_deref(), Some("10"), "{a_info:?}");
    assert_eq!(a_info.limits.as_deref(), Some("max-macs=4"), "{a_info:?}");
    // What cannot change live is refused, naming it; a bad value names the key.
    let (ok, out) = vnetctl(&v, &["set-port", "a", "socket=/x"]);
    assert!(
        !ok && out.contains("`socket` cannot change on a running vhost-user port"),
        "{out}"
    );
    let (ok, out) = vnetctl(&v, &["set-port", "a", "ingress-kpps=fast"]);
    assert!(!ok && out.contains("`ingress-kpps`"), "{out}");
    let (ok, out) = vnetctl(&v, &["set-port", "a", "vlan"]);
    assert!(!ok && out.contains("expected KEY=VALUE"), "{out}");
    // Nothing of a refused change was applied.
    assert!(delivered(&mut a, &mut b, mac(2), mac(1), 5));
}

fn port_names(v: &Vnetd) -> Vec<String> {
    v.ports().into_iter().map(|p| p.name).collect()
}

#[test]
fn reload_applies_the_difference_and_a_bad_file_changes_nothing() {
    let dir = test_dir("vnet-reload");
    let file = dir.join("vnetd.toml");
    let port = |name: &str, extra: &str| {
        format!(
            "[[vhost_user]]\nname = \"{name}\"\nsocket = \"{}\"\n{extra}",
            dir.join(format!("{name}.sock")).display()
        )
    };
    std::fs::write(
        &file,
        port("a", "mac = \"52:54:00:00:00:01\"\n") + &port("b", "") + &port("gone", ""),
    )
    .unwrap();
    let args = vec![
        "--control".to_string(),
        dir.join("ctl.sock").display().to_string(),
        "--config".to_string(),
        file.display().to_string(),
    ];
    let v = Vnetd::start_with(dir.clone(), &args, vec!["a.sock".into(), "b.sock".into()]);
    let mut a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    let mut b = connect(&v.sock("b"), frontend::DEFAULT_FEATURES);
    pass_frame(&mut a, &mut b, mac(2), mac(1), 1, WAIT);

    // show-config prints what vnetd reads.
    let (ok, shown) = vnetctl(&v, &["show-config"]);
    assert!(ok, "{shown}");
    let cfg = control::config::Config::from_toml_str(&shown, "show-config").unwrap();
    assert_eq!(cfg.ports.len(), 3, "{shown}");

    // a changes live (its frontend stays), `gone` goes, c comes, b stays as it is.
    std::fs::write(
        &file,
        port(
            "a",
            "mac = \"52:54:00:00:00:01\"\nspoofchk = false\nmax_macs = 3\n",
        ) + &port("b", "")
            + &port("c", ""),
    )
    .unwrap();
    let (ok, out) = vnetctl(&v, &["reload"]);
    assert!(ok, "{out}");
    assert!(out.contains("port gone removed"), "{out}");
    assert!(out.contains("port a: spoofchk, max-macs changed"), "{out}");
    assert!(out.contains("port c added"), "{out}");
    assert!(!out.contains("port b"), "{out}");
    assert_eq!(port_names(&v), ["a", "b", "c"]);
    assert!(!v.sock("gone").exists() && v.sock("c").exists());
    // a's frontend was not disconnected, and its spoofed sources now pass.
    pass_frame(&mut a, &mut b, mac(2), mac(9), 2, WAIT);

    // A file with an error changes nothing and says why, with its line.
    std::fs::write(
        &file,
        port("a", "") + "[[vhost_user]]\nname = \"d\"\nsockt = \"/x\"\n",
    )
    .unwrap();
    let (ok, out) = vnetctl(&v, &["reload"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("unknown field `sockt`") && out.contains("nothing changed"),
        "{out}"
    );
    assert_eq!(port_names(&v), ["a", "b", "c"]);

    // SIGHUP reloads too.
    std::fs::write(&file, port("a", "") + &port("b", "") + &port("d", "")).unwrap();
    let pid = v.pid().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    v.wait_ports("d added, c removed", |p| {
        p.iter().map(|p| p.name.as_str()).collect::<Vec<_>>() == ["a", "b", "d"]
    });
    pass_frame(&mut b, &mut a, mac(1), mac(2), 3, WAIT);
}

#[test]
fn a_capture_ends_when_its_port_is_removed() {
    let v = Vnetd::start(&["a", "b"]);
    let cap = Command::new(workspace_bin("vnetctl"))
        .arg("--control")
        .arg(v.dir.join("ctl.sock"))
        .args(["capture", "b", "-w"])
        .arg(v.dir.join("b.pcapng"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while !v.log_text().contains("port b: capture started") {
        assert!(std::time::Instant::now() < deadline, "{}", v.log_text());
        std::thread::sleep(Duration::from_millis(10));
    }
    let (ok, out) = vnetctl(&v, &["del-port", "b"]);
    assert!(ok, "{out}");
    // No --count and nobody stops it: the capture ends with its port.
    let out = cap.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("0 frame(s) captured, 0 lost"), "{said}");
    assert!(
        v.log_text().contains("port b: removed while captured"),
        "{}",
        v.log_text()
    );
}
