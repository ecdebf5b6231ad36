//! `cargo xtask demo`: the whole system in one command. Installs what is missing, builds
//! vnetd and a Linux guest image, starts vnetd with two VM ports and a TAP port whose far
//! end is a network namespace playing "the host", boots two VMs under QEMU, runs ping and
//! iperf3 between the VMs and from the host to a VM, shows `vnetctl stats` and the
//! forwarding database, then stops everything it started (also on Ctrl-C).
//!
//! Addresses come from the benchmarking range 198.18.0.0/15 and stay between the VMs and
//! the namespace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use testbed::{GuestArgs, Netns, Vm, VmConfig};

use crate::{deps, util};

const NETNS: &str = "vnet-demo";
const TAP_IF: &str = "vnet-demo0";
const VM1_IP: &str = "198.18.0.1";
const VM2_IP: &str = "198.18.0.2";
const HOST_IP: &str = "198.18.0.254";
const IPERF_SECS: u32 = 3;

/// What the demo started, undone by [`Cleanup::run`] (from Drop, or from the signal
/// handler on Ctrl-C).
#[derive(Default)]
struct Cleanup {
    /// Processes to stop: (pid, SIGTERM first?).
    pids: Vec<(u32, bool)>,
    /// Deleted (with what still runs in it) when dropped.
    netns: Option<Netns>,
    dir: Option<PathBuf>,
}

impl Cleanup {
    fn run(&mut self) {
        for (pid, gentle) in self.pids.drain(..).rev() {
            let sig = if gentle { "-TERM" } else { "-KILL" };
            let _ = Command::new("kill")
                .args([sig, &pid.to_string()])
                .stderr(Stdio::null())
                .status();
            // Give a gracefully stopping process a moment to clean up (vnetd removes its
            // sockets; the kernel then deletes its TAP device).
            for _ in 0..50 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        drop(self.netns.take());
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

struct Guard(Arc<Mutex<Cleanup>>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(mut c) = self.0.lock() {
            c.run();
        }
    }
}

/// Prints a numbered step, runs it, prints how long it took.
fn step<T>(n: usize, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    println!("\n==> [{n}/7] {what}");
    let t = Instant::now();
    let r = f()?;
    println!("    done in {:.1} s", t.elapsed().as_secs_f64());
    Ok(r)
}

/// Runs the demo.
pub fn run() -> Result<()> {
    if !util::is_root() {
        bail!("the demo creates a network namespace and a TAP device: run it as root");
    }
    let cleanup = Arc::new(Mutex::new(Cleanup::default()));
    let _guard = Guard(cleanup.clone());
    on_interrupt(cleanup.clone())?;

    println!("vnet demo: two VMs and a host namespace on one vnetd switch");
    step(
        1,
        "Checking system packages (QEMU, busybox, iperf3, DPDK, ...)",
        deps::run,
    )?;
    let root = util::workspace_root();
    step(2, "Building vnetd and vnetctl (release)", || {
        util::run(util::cargo().args(["build", "--release", "-p", "vnetd", "-p", "vnetctl"]))
    })?;
    let bin = root.join("target/release");
    let image = step(
        3,
        "Building the guest image (Debian cloud kernel, busybox, iperf3)",
        || {
            let image = testbed::ensure_image(&testbed::default_target_dir())?;
            println!("    kernel {}", image.kernel_package);
            Ok(image)
        },
    )?;

    let dir = std::env::temp_dir().join(format!("vnet-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    lock(&cleanup).dir = Some(dir.clone());
    let ctl = dir.join("ctl.sock");
    step(
        4,
        "Starting vnetd: ports vm1, vm2 (vhost-user) and host0 (TAP into namespace vnet-demo)",
        || {
            // IPv6 off in the namespace: only the demo's traffic moves.
            lock(&cleanup).netns = Some(Netns::create(NETNS)?);
            let args = [
                "--control".to_string(),
                ctl.display().to_string(),
                "--vhost-user".into(),
                format!("name=vm1,socket={}", dir.join("vm1.sock").display()),
                "--vhost-user".into(),
                format!("name=vm2,socket={}", dir.join("vm2.sock").display()),
                "--tap".into(),
                format!("name=host0,ifname={TAP_IF},netns={NETNS}"),
            ];
            println!("    vnetd {}", args.join(" "));
            let log = std::fs::File::create(dir.join("vnetd.log"))?;
            let child: Child = Command::new(bin.join("vnetd"))
                .args(&args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("cannot start vnetd")?;
            lock(&cleanup).pids.push((child.id(), true));
            wait_path(&ctl, Duration::from_secs(10)).context("vnetd did not start; see its log")?;
            sh(&[
                "ip",
                "netns",
                "exec",
                NETNS,
                "ip",
                "addr",
                "add",
                &format!("{HOST_IP}/24"),
                "dev",
                TAP_IF,
            ])?;
            println!("    the namespace plays the host: {TAP_IF} = {HOST_IP}/24");
            Ok(())
        },
    )?;

    let (vm1, vm2) = step(5, "Booting two VMs under QEMU (software emulation)", || {
        let mut vms = Vec::new();
        for (name, ip, mac, args) in [
            (
                "vm1",
                VM1_IP,
                1u8,
                GuestArgs::server(&format!("{VM1_IP}/24")),
            ),
            (
                "vm2",
                VM2_IP,
                2u8,
                GuestArgs {
                    iperf_secs: IPERF_SECS,
                    stay: true,
                    ..GuestArgs::client(
                        &format!("{VM2_IP}/24"),
                        VM1_IP,
                        &["ping", "iperf_tx", "iperf_rx"],
                    )
                },
            ),
        ] {
            let mut cfg = VmConfig::new(name, &image, dir.join(format!("{name}.sock")), &dir);
            cfg.mac = testbed::MacAddr([0x52, 0x54, 0x00, 0x18, 0x00, mac]);
            cfg.cmdline = args.to_cmdline();
            let vm = Vm::boot(&cfg)?;
            lock(&cleanup).pids.push((vm.pid(), false));
            println!("    {name}: {ip}/24, mac {}", cfg.mac);
            vms.push(vm);
        }
        let mut it = vms.into_iter();
        let (mut a, mut b) = (it.next().context("vm1")?, it.next().context("vm2")?);
        for vm in [&mut a, &mut b] {
            let ready = vm.wait_ready(Duration::from_secs(120))?;
            let t = vm
                .boot_time()
                .map_or(String::from("?"), |d| format!("{:.1} s", d.as_secs_f64()));
            println!(
                "    {} booted in {t}: eth0 {} link {}",
                vm.name(),
                ready.ip,
                ready.operstate
            );
        }
        Ok((a, b))
    })?;

    let (results, host_rtt, host_gbps) = step(
        6,
        "Traffic: vm2 pings vm1, iperf3 both ways, then the host pings and sends to vm1",
        || {
            let results = vm2.wait_done(Duration::from_secs(180))?;
            for r in &results {
                println!("    vm2 {}", r.line.trim_start_matches("VNET-RESULT "));
            }
            let ping = ns(&["ping", "-c", "5", "-i", "0.2", "-W", "3", VM1_IP])?;
            let host_rtt = parse_ping_avg(&ping);
            println!(
                "    host -> vm1 ping: avg {}",
                host_rtt.map_or("?".into(), |v| format!("{v:.2} ms"))
            );
            let iperf = ns(&[
                "iperf3",
                "-c",
                VM1_IP,
                "-t",
                &IPERF_SECS.to_string(),
                "-f",
                "g",
            ])?;
            let host_gbps = parse_iperf_receiver(&iperf);
            println!(
                "    host -> vm1 iperf3: {}",
                host_gbps.map_or("?".into(), |v| format!("{v:.2} Gbit/s"))
            );
            Ok((results, host_rtt, host_gbps))
        },
    )?;

    let switched = step(7, "What vnetd saw: vnetctl stats and fdb", || {
        let vnetctl = bin.join("vnetctl");
        for args in [["stats"], ["fdb"]] {
            let out = Command::new(&vnetctl)
                .arg("--control")
                .arg(&ctl)
                .args(args)
                .output()?;
            println!("    $ vnetctl {}", args.join(" "));
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                println!("    {line}");
            }
        }
        let out = Command::new(&vnetctl)
            .arg("--control")
            .arg(&ctl)
            .args(["stats", "--json"])
            .output()?;
        Ok(sum_rx_packets(&String::from_utf8_lossy(&out.stdout)))
    })?;
    drop((vm1, vm2));

    let get = |name: &str, key: &str| {
        results
            .iter()
            .find(|r| r.name == name && r.ok)
            .and_then(|r| r.number(key))
    };
    let fmt =
        |v: Option<f64>, unit: &str| v.map_or("failed".to_string(), |v| format!("{v:.2} {unit}"));
    println!("\n==> Summary");
    println!(
        "    VM to VM latency (ping avg):       {}",
        fmt(get("ping", "rtt_avg_ms"), "ms")
    );
    println!(
        "    VM to VM TCP, vm2 -> vm1 (iperf3): {}",
        fmt(get("iperf_tx", "gbps"), "Gbit/s")
    );
    println!(
        "    VM to VM TCP, vm1 -> vm2 (iperf3): {}",
        fmt(get("iperf_rx", "gbps"), "Gbit/s")
    );
    println!(
        "    host to VM latency (ping avg):     {}",
        fmt(host_rtt, "ms")
    );
    println!(
        "    host to VM TCP (iperf3):           {}",
        fmt(host_gbps, "Gbit/s")
    );
    println!(
        "    frames switched by vnetd:          {}",
        switched.map_or("?".into(), |n| n.to_string())
    );
    println!("    (the VMs run under QEMU's software emulation here, so these figures measure");
    println!("     the emulated guests more than vnetd: see `cargo xtask bench` for the switch)");
    println!("\n==> Stopping vnetd and the VMs, removing the namespace and sockets");
    drop(_guard);
    println!("    nothing left running");
    if results.iter().any(|r| !r.ok) || host_rtt.is_none() {
        bail!("some demo traffic failed (see above)");
    }
    Ok(())
}

fn lock(c: &Arc<Mutex<Cleanup>>) -> std::sync::MutexGuard<'_, Cleanup> {
    c.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// On Ctrl-C or SIGTERM: clean up, then exit.
fn on_interrupt(cleanup: Arc<Mutex<Cleanup>>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            eprintln!("\ninterrupted: stopping everything the demo started");
            lock(&cleanup).run();
            std::process::exit(130);
        }
    });
    Ok(())
}

fn sh(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs a command in the demo namespace and returns its stdout.
fn ns(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", NETNS])
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "{} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_path(p: &Path, timeout: Duration) -> Result<()> {
    let t = Instant::now();
    while !p.exists() {
        if t.elapsed() > timeout {
            bail!("{} did not appear", p.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `rtt min/avg/max/mdev = 0.1/0.2/0.3/0.0 ms` -> 0.2.
fn parse_ping_avg(out: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.contains("min/avg/max"))?;
    line.split('=')
        .nth(1)?
        .trim()
        .split('/')
        .nth(1)?
        .parse()
        .ok()
}

/// The receiver's rate in an `iperf3 -f g` report.
fn parse_iperf_receiver(out: &str) -> Option<f64> {
    let line = out.lines().rev().find(|l| l.contains("receiver"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "Gbits/sec")?;
    words.get(i.checked_sub(1)?)?.parse().ok()
}

/// Sum of `rx_packets` over the ports in `vnetctl stats --json`.
fn sum_rx_packets(json: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut found = false;
    for part in json.split("\"rx_packets\":").skip(1) {
        let digits: String = part
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        total += digits.parse::<u64>().ok()?;
        found = true;
    }
    found.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tool_output() {
        assert_eq!(
            parse_ping_avg("5 packets\nrtt min/avg/max/mdev = 0.912/1.250/2.1/0.3 ms\n"),
            Some(1.25)
        );
        let iperf = "[  5]   0.00-3.00   sec   450 MBytes  1.26 Gbits/sec    0             sender\n\
                     [  5]   0.00-3.04   sec   449 MBytes  1.24 Gbits/sec                  receiver\n";
        assert_eq!(parse_iperf_receiver(iperf), Some(1.24));
        assert_eq!(
            sum_rx_packets(r#"[{"name":"a","rx_packets":3},{"rx_packets": 4}]"#),
            Some(7)
        );
        assert_eq!(sum_rx_packets("[]"), None);
    }
}
