//! Prometheus metrics: a real Prometheus server (Debian's `prometheus`, a private instance
//! on loopback started here with its own scrape configuration and storage) scrapes
//! vnetd's `/metrics`, and its HTTP API returns `vnet_port_rx_packets_total` of a port
//! with traffic.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A free loopback port (bound and released: good enough for a test).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:port: the body, or None.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_string())
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_prometheus_server_scrapes_port_counters() {
    if testbed::dpdk::which("prometheus").is_none() {
        testbed::skip(
            "VNET_REQUIRE_PROMETHEUS",
            "metrics test: no `prometheus` (run `cargo xtask deps`)",
        );
        return;
    }
    let metrics = free_port();
    let v = Vnetd::start_ports_args(
        &[("a", ""), ("b", "")],
        &["--metrics", &format!("127.0.0.1:{metrics}")],
    );
    let mut a = connect(&v.sock("a"), frontend::DEFAULT_FEATURES);
    let mut b = connect(&v.sock("b"), frontend::DEFAULT_FEATURES);
    for tag in 0..10 {
        pass_frame(&mut a, &mut b, mac(2), mac(1), tag, Duration::from_secs(5));
    }
    // Our own scrape first: the exposition as vnetd serves it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let body = loop {
        if let Some(b) = http_get(metrics, "/metrics") {
            if b.contains("vnet_port_rx_packets_total{port=\"a\",kind=\"vhost-user\"} 10") {
                break b;
            }
        }
        assert!(Instant::now() < deadline, "no counters at /metrics");
        std::thread::sleep(Duration::from_millis(50));
    };
    for want in [
        "vnet_port_tx_packets_total{port=\"b\",kind=\"vhost-user\"} 10",
        "vnet_port_up{port=\"a\",kind=\"vhost-user\",state=\"up\"} 1",
        "vnet_fdb_entries{worker=\"0\"}",
        "vnet_worker_busy_seconds_total{worker=\"0\"}",
        "vnet_port_drops_total{port=\"a\",kind=\"vhost-user\",reason=\"spoofed\"} 0",
    ] {
        assert!(body.contains(want), "{want} missing:\n{body}");
    }

    // A real Prometheus scrapes it every second.
    let dir = v.dir.join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: vnetd\n    \
             static_configs:\n      - targets: ['127.0.0.1:{metrics}']\n"
        ),
    )
    .unwrap();
    let web = free_port();
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let query = "/api/v1/query?query=vnet_port_rx_packets_total%7Bport%3D%22a%22%7D";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(body) = http_get(web, query) {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let result = &v["data"]["result"];
            if let Some(sample) = result.get(0) {
                assert_eq!(sample["metric"]["job"], "vnetd", "{body}");
                assert_eq!(sample["metric"]["kind"], "vhost-user", "{body}");
                assert_eq!(sample["value"][1], "10", "{body}");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never returned the counter:\n{}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
