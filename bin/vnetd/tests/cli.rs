//! vnetd and vnetctl from the command line: clear errors naming what is wrong, and the
//! control socket answering `vnetctl`.

#![allow(clippy::cast_possible_truncation)] // test data is made of deliberate truncations

mod common;

use std::process::Command;

use common::*;

fn vnetd(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vnetd"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_options_name_the_problem() {
    for (args, needle) in [
        (
            vec!["--vhost-user", "name=vm1,socket2=/tmp/x.sock"],
            "socket2",
        ),
        (vec!["--vhost-user", "name=vm1"], "socket"),
        (
            vec![
                "--vhost-user",
                "name=vm1,socket=/tmp/x.sock,mac=52:54:zz:00:00:01",
            ],
            "52:54:zz:00:00:01",
        ),
        (
            vec![
                "--vhost-user",
                "name=vm1,socket=/tmp/x.sock,mac=01:00:5e:00:00:01",
            ],
            "01:00:5e:00:00:01",
        ),
        (
            vec![
                "--vhost-user",
                "name=vm1,socket=/tmp/x.sock",
                "--vhost-user",
                "name=vm1,socket=/tmp/y.sock",
            ],
            "vm1",
        ),
        (
            vec!["--vhost-user", "name=vm1,socket=/tmp/x.sock,queues=0"],
            "queue",
        ),
        (
            vec!["--config", "/nonexistent/vnet.toml"],
            "/nonexistent/vnet.toml",
        ),
        (vec!["--bogus"], "--bogus"),
    ] {
        let (ok, err) = vnetd(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(
            err.contains(needle),
            "{args:?}: error should name {needle:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn config_file_errors_have_line_numbers() {
    let dir = test_dir("vnet-cli");
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[[vhost_user]]\nname = \"vm1\"\nsocket = \"/tmp/a.sock\"\nmac = \"zz\"\n",
    )
    .unwrap();
    let (ok, err) = vnetd(&["--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("bad.toml") && err.contains("zz"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_file_starts_ports() {
    let dir = test_dir("vnet-cfg");
    let cfg = dir.join("vnet.toml");
    std::fs::write(
        &cfg,
        format!(
            "control = \"{d}/ctl.sock\"\n[[vhost_user]]\nname = \"vm1\"\nsocket = \"{d}/vm1.sock\"\nmac = \"52:54:00:00:00:11\"\n[fdb]\ncapacity = 64\naging_secs = 60\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let v = Vnetd::start_with(
        dir.clone(),
        &["--config".into(), cfg.display().to_string()],
        vec!["vm1.sock".into()],
    );
    let ports = v.ports();
    assert_eq!(ports.len(), 1);
    assert_eq!(
        ports[0].mac.map(|m| m.to_string()).as_deref(),
        Some("52:54:00:00:00:11")
    );
    assert_eq!(ports[0].state, api::PortState::Down);
}

#[test]
fn vnetctl_shows_ports_stats_and_fdb() {
    let v = Vnetd::start(&["a", "b"]);
    let mut a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    let mut b = connect(&v.sock("b"), frontend::DEFAULT_FEATURES);
    v.wait_ports("up", |p| p.iter().all(|p| p.state == api::PortState::Up));
    a.send(
        0,
        &Default::default(),
        &frame(MacAddr::BROADCAST, mac(1), 60, 0),
    )
    .unwrap();
    b.recv(0, std::time::Duration::from_secs(3))
        .unwrap()
        .unwrap();
    let ctl = v.dir.join("ctl.sock");
    let run = |args: &[&str]| {
        let out = Command::new(workspace_bin("vnetctl"))
            .arg("--control")
            .arg(&ctl)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let ports = run(&["ports"]);
    assert!(ports.contains("a") && ports.contains("up"), "{ports}");
    let stats: serde_json::Value = serde_json::from_str(&run(&["stats", "--json"])).unwrap();
    let a_stats = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "a")
        .unwrap();
    assert_eq!(a_stats["rx_packets"], 1, "{stats}");
    let fdb = run(&["fdb"]);
    assert!(fdb.contains("52:54:00:00:00:01"), "{fdb}");
    let _ = a;
}

#[test]
fn readme_config_example_parses() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme
        .find("```toml\n")
        .expect("a TOML example in the README")
        + 8;
    let len = readme[start..].find("```").unwrap();
    let cfg =
        control::config::Config::from_toml_str(&readme[start..start + len], "README.md").unwrap();
    assert_eq!(cfg.ports.len(), 3);
}

#[test]
fn logs_as_json_at_the_level_asked() {
    let dir = common::test_dir("vnet-logjson");
    let args = vec![
        "--control".to_string(),
        dir.join("ctl.sock").display().to_string(),
        "--log-format".to_string(),
        "json".to_string(),
        "--log-level".to_string(),
        "trace".to_string(),
        "--vhost-user".to_string(),
        format!("name=a,socket={}", dir.join("a.sock").display()),
    ];
    let v = common::Vnetd::start_with(dir, &args, vec!["a.sock".into()]);
    let _a = common::connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    v.wait_ports("a up", |p| p.iter().all(|p| p.state == api::PortState::Up));
    let log = v.log_text();
    let mut lines = 0;
    for line in log.lines() {
        let j: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            j["level"].is_string() && j["fields"]["message"].is_string(),
            "{line}"
        );
        lines += 1;
    }
    // The vhost-user messages are logged at trace level.
    assert!(log.contains("\"level\":\"TRACE\""), "{log}");
    assert!(lines > 3, "{log}");
    let (ok, err) = vnetd(&[
        "--log-level",
        "vnet=[",
        "--vhost-user",
        "name=a,socket=/tmp/x/a.sock",
    ]);
    assert!(!ok && err.contains("bad log level `vnet=[`"), "{err}");
    let (ok, err) = vnetd(&["--log-format", "xml"]);
    assert!(!ok && err.contains("xml"), "{err}");
}

/// Output without ANSI escape sequences (CSI ... final byte) and carriage returns.
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

#[test]
fn vnetctl_top_shows_rates_under_a_terminal_and_quits_on_q() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let v = Vnetd::start(&["a", "b"]);
    let mut a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    let mut b = connect(&v.sock("b"), frontend::DEFAULT_FEATURES);
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut tag = 0u8;
            while !stop.load(Ordering::Relaxed) {
                pass_frame(
                    &mut a,
                    &mut b,
                    mac(2),
                    mac(1),
                    tag,
                    std::time::Duration::from_secs(5),
                );
                tag = tag.wrapping_add(1);
            }
        })
    };
    // `script` gives vnetctl a pseudo-terminal; what we write to it is what a user types.
    let cmd = format!(
        "{} --control {} top --interval 0.2",
        workspace_bin("vnetctl").display(),
        v.dir.join("ctl.sock").display()
    );
    let mut child = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let screen = Arc::new(Mutex::new(String::new()));
    let reader = {
        let screen = screen.clone();
        let mut out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                screen
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = strip_ansi(&screen.lock().unwrap());
        // Port a's row with a non-zero RX_PPS: rates appear.
        let a_moving = text.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first() == Some(&"a") && f.get(1).is_some_and(|pps| *pps != "0")
        });
        if text.contains("vnetctl top: 2 port(s)") && text.contains("RX_PPS") && a_moving {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no rates shown:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.stdin.as_mut().unwrap().write_all(b"q").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "q did not quit vnetctl top"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    reader.join().unwrap();
}
