//! OVS-DPDK as a second anchor of the VM-to-VM scenarios of `cargo xtask bench`: the
//! [`Switch::Ovs`] runs.
//!
//! Every run starts a private, throwaway Open vSwitch, not the system's service: its own
//! database (`ovsdb-tool create` from the package's `vswitch.ovsschema`) in the run's
//! directory under `/tmp/vnet-bench-<pid>/`, an `ovsdb-server` listening there on a unix
//! socket only, and the DPDK build of `ovs-vswitchd` (`openvswitch-switch-dpdk`, run by its
//! path: the system's `ovs-vswitchd` alternative is left alone) with `dpdk-init=true`, its
//! DPDK lcore and its one PMD thread on the switch CPU (`dpdk-lcore-mask`, `pmd-cpu-mask`;
//! the whole process, its other threads included, under `taskset`), [`OVS_MEM_MB`] of
//! hugepages and `--file-prefix=vnet-bench-<pid>-<run> --no-pci`. Its bridge `br0` is
//! `datapath_type=netdev` with two `dpdkvhostuserclient` ports, `a` (OpenFlow port 1) and
//! `b` (2), and two flows, `in_port=1,actions=output:2` and `in_port=2,actions=output:1`,
//! in place of the default `NORMAL` one. OVS is the vhost-user *client* of these ports:
//! the generator's virtio-user ports are the servers (`server=1`) and OVS connects to them
//! (it retries every second until the sockets exist).
//!
//! A userspace (netdev) bridge creates TAP devices of its own (`ovs-netdev`, and `br0`, the
//! bridge's internal port): `ovs-vswitchd` runs in a network namespace of its own,
//! `vnet-bench-<pid>-ovs`, so that they appear there and nowhere else, and go with it.
//! Everything is a guard: on success, error or panic, `ovs-vswitchd` and `ovsdb-server`
//! are stopped, the namespace deleted, the run's directory (database, sockets, control
//! sockets) removed, and DPDK's runtime directory with it (OVS runs DPDK `--in-memory`:
//! no hugepage files). A namespace left by a killed bench goes with the next bench.
//!
//! Whether OVS can run here is found out once, before the first run ([`add_anchor`]): when
//! it cannot (not installed and not installable, too few hugepages, DPDK does not start),
//! the bench says why and goes on without the OVS rows.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use testbed::dpdk::free_hugepages;
use testbed::netns::{self, Netns};

use super::ctx::Ctx;
use super::proc::{sleep, Proc, TempDir};
use super::runner::Switch;
use super::vm2vm::{self, Case, RunResult};
use super::{Args, Only, TAG, TESTPMD_MEM_MB};
use crate::deps;
use crate::util::{has_command, is_root, warn};

/// The OVS anchor in the JSON's method.
pub(super) const DESCRIPTION: &str = "OVS-DPDK (ovs-vswitchd-dpdk, private ovsdb), bridge \
    datapath_type=netdev, 2 dpdkvhostuserclient ports (generator virtio-user server=1), \
    flows in_port=1,actions=output:2 and in_port=2,actions=output:1, lcore and 1 PMD on the \
    switch CPU";
/// The DPDK build of ovs-vswitchd (`openvswitch-switch-dpdk`), unless [`VSWITCHD_ENV`] says
/// another.
const VSWITCHD: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
/// The environment variable naming another DPDK-enabled ovs-vswitchd to run.
const VSWITCHD_ENV: &str = "VNET_BENCH_OVS_VSWITCHD";
/// The database schema (`openvswitch-common`).
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
const PKGDATADIR: &str = "/usr/share/openvswitch";
/// Hugepage memory of OVS's DPDK, MiB (`dpdk-socket-mem`, also its limit): what the DPDK
/// anchor's testpmd gets (`-m`). OVS sizes its shared mbuf pool down until it fits.
const OVS_MEM_MB: u32 = TESTPMD_MEM_MB;
/// The bridge and its ports (OpenFlow port numbers 1 and 2).
const BRIDGE: &str = "br0";
const PORTS: [(&str, u16); 2] = [("a", 1), ("b", 2)];
/// The flows: each port's frames go out of the other; no learning, no `NORMAL`.
const FLOWS: [&str; 2] = ["in_port=1,actions=output:2", "in_port=2,actions=output:1"];
/// What `ovs-vsctl` waits for ovs-vswitchd at most.
const VSCTL_TIMEOUT_SECS: u32 = 30;

/// Adds [`Switch::Ovs`] to `switches` when a VM-to-VM scenario runs, `--only` does not
/// exclude the anchors, and a private OVS-DPDK starts here (installed by `cargo xtask
/// deps` if missing and we are root). Returns why the OVS rows are left out, if they are
/// (also said on stderr); None when OVS is in or was not asked for.
pub(super) fn add_anchor(ctx: &Ctx, args: &Args, switches: &mut Vec<Switch>) -> Option<String> {
    let vm2vm = args
        .scenarios
        .iter()
        .any(|s| s.vm2vm_queue_pairs().is_some());
    if !vm2vm || args.only == Some(Only::Vnetd) || switches.contains(&Switch::Ovs) {
        return None;
    }
    for name in netns::sweep_stale(TAG, |name| name.ends_with("-ovs")) {
        eprintln!("removed network namespace {name} (left by a bench process that is gone)");
    }
    match probe(ctx) {
        Ok(()) => {
            switches.push(Switch::Ovs);
            None
        }
        Err(err) => {
            let why = format!("{err:#}");
            warn(format!("OVS-DPDK cannot run here, no ovs-dpdk rows: {why}"));
            Some(why)
        }
    }
}

/// Installs OVS-DPDK if missing, checks the hugepages, then starts a private OVS with its
/// bridge, ports and flows and stops it again.
fn probe(ctx: &Ctx) -> Result<()> {
    if !installed() && is_root() && std::env::var_os(VSWITCHD_ENV).is_none() {
        deps::run().context("cannot install openvswitch-switch-dpdk (cargo xtask deps)")?;
    }
    if !installed() {
        bail!(
            "{} or the OVS tools (ovsdb-tool, ovsdb-server, ovs-vsctl, ovs-ofctl, ovs-appctl) \
             or the schema {SCHEMA} are missing: install openvswitch-switch-dpdk (`cargo \
             xtask deps`, as root)",
            vswitchd().display()
        );
    }
    let version = output(Command::new(vswitchd()).arg("--version"))?;
    if !version.contains("DPDK") {
        bail!(
            "{} is not built with DPDK: {}",
            vswitchd().display(),
            version.lines().next().unwrap_or("").trim()
        );
    }
    let need = u64::from(OVS_MEM_MB + TESTPMD_MEM_MB) / 2;
    let free = free_hugepages();
    if free < need {
        bail!("{free} hugepages are free; OVS and the generator need {need}");
    }
    let name = ctx.next("ovs-dpdk-probe");
    let dir = TempDir::create(ctx.sock_dir.0.join(&name))?;
    let mut ovs = Ovs::start(ctx, &dir.0, &name)?;
    ovs.stop();
    Ok(())
}

/// The ovs-vswitchd to run: [`VSWITCHD`], or what [`VSWITCHD_ENV`] names.
fn vswitchd() -> PathBuf {
    std::env::var_os(VSWITCHD_ENV).map_or_else(|| PathBuf::from(VSWITCHD), PathBuf::from)
}

/// Whether the programs of a private OVS-DPDK are there.
fn installed() -> bool {
    vswitchd().is_file()
        && Path::new(SCHEMA).is_file()
        && [
            "ovsdb-tool",
            "ovsdb-server",
            "ovs-vsctl",
            "ovs-ofctl",
            "ovs-appctl",
            "ip",
        ]
        .iter()
        .all(|p| has_command(p))
}

/// One run with OVS-DPDK as the switch: as the DPDK anchor's, with the generator's ports
/// vhost-user servers.
pub(super) fn run(ctx: &Ctx, case: &Case, idle_check: bool) -> Result<RunResult> {
    let name = ctx.next(&Switch::Ovs.label());
    let dir = TempDir::create(ctx.sock_dir.0.join(&name))?;
    let mut ovs = Ovs::start(ctx, &dir.0, &name)?;
    // OVS is the vhost-user client: the generator listens (`server=1`); its ports wait for
    // OVS to connect (OVS tries every second) before testpmd gives its prompt.
    let mut gen_case = case.clone();
    gen_case.devargs = match case.extra_devargs() {
        "" => "server=1".into(),
        extra => format!("{extra},server=1"),
    };
    let (sa, sb) = (dir.0.join("a.sock"), dir.0.join("b.sock"));
    let mut gen = ctx.start_generator(&format!("{name}-gen"), [&sa, &sb], &gen_case)?;
    ovs.wait_ports_up()?;

    let mut result = RunResult::default();
    let window = vm2vm::measure(ctx, &mut gen, &ovs.vswitchd, None, case)?;
    gen.send_wait("stop")?;
    if idle_check {
        result.rec.idle_cpu = Some(ctx.idle_cpu(&ovs.vswitchd)?);
    }
    // Over the whole run, warm-up included (`tx_first` puts more frames in flight than the
    // rings hold): like the DPDK anchor's drops, not an anomaly.
    let mut dropped = 0;
    let mut features = Vec::new();
    for (port, _) in PORTS {
        let stats = ovs.interface_map(port, "statistics")?;
        dropped += ["rx_dropped", "tx_dropped"]
            .iter()
            .filter_map(|k| stats.get(*k)?.parse::<u64>().ok())
            .sum::<u64>();
        let status = ovs.interface_map(port, "status")?;
        features.push(format!(
            "{port}: {}",
            status.get("features").map_or("?", String::as_str)
        ));
    }
    ovs.save_pmd_stats();
    gen.quit()?;

    if let Err(err) = ovs.exit() {
        result.rec.anomalies.push(format!("{err:#}"));
    }
    let complaints = ovs.complaints();
    if !complaints.is_empty() {
        result.rec.anomalies.push(format!(
            "{} error line(s) in {}: {}",
            complaints.len(),
            ovs.vswitchd.log.display(),
            complaints[0].trim()
        ));
    }
    result.rec.anchor_drops = Some(dropped);
    result.rec.features = features.join("; ");
    result.fill(ctx, &window);
    Ok(result)
}

/// A private OVS-DPDK: its ovsdb-server and ovs-vswitchd (in namespace `netns`), with the
/// bridge, the two ports (clients of `<dir>/a.sock` and `<dir>/b.sock`) and the flows.
/// Dropping it stops both and deletes the namespace; the caller's [`TempDir`] `dir` goes
/// after it.
#[derive(Debug)]
struct Ovs {
    ctx_logs: PathBuf,
    name: String,
    dir: PathBuf,
    /// Declared (so dropped) before the database server.
    vswitchd: Proc,
    ovsdb: Proc,
    /// Last: whatever is still in it when it goes is killed.
    _netns: Netns,
}

impl Ovs {
    /// Creates the database, starts ovsdb-server and ovs-vswitchd (DPDK initialised), the
    /// bridge, its ports and flows.
    fn start(ctx: &Ctx, dir: &Path, name: &str) -> Result<Ovs> {
        let mask = cpu_mask(ctx.cpu_switch);
        let cpu = ctx.cpu_switch.to_string();
        let db = dir.join("conf.db");
        let mut create = env(Command::new("ovsdb-tool"), dir);
        create.arg("create").arg(&db).arg(SCHEMA);
        output(&mut create)?;

        let mut cmd = env(Command::new("taskset"), dir);
        cmd.args(["-c", &cpu, "ovsdb-server"])
            .arg(&db)
            .arg(format!("--remote=punix:{}", dir.join("db.sock").display()))
            .arg(format!("--unixctl={}", dir.join("ovsdb.ctl").display()))
            .arg("--no-chdir");
        let log = ctx.logs.join(format!("{name}-ovsdb.log"));
        let mut ovsdb = Proc::spawn("ovsdb-server", cmd, &log, None)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dir.join("db.sock").exists() {
            ovsdb.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "ovsdb-server did not create its socket; see {}",
                    log.display()
                );
            }
            sleep(Duration::from_millis(10));
        }

        // DPDK's settings before ovs-vswitchd starts: it initialises DPDK once, at start.
        let prefix = format!("{TAG}{}-{name}", std::process::id());
        let extra =
            format!("--file-prefix={prefix} --no-pci --no-telemetry --single-file-segments");
        let vsctl = |args: &[&str]| -> Result<String> {
            let mut c = env(Command::new("ovs-vsctl"), dir);
            c.arg(format!("--db=unix:{}", dir.join("db.sock").display()))
                .arg(format!("--timeout={VSCTL_TIMEOUT_SECS}"))
                .args(args);
            output(&mut c)
        };
        vsctl(&["--no-wait", "init"])?;
        let mem = OVS_MEM_MB.to_string();
        vsctl(&[
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            "other_config:dpdk-init=true",
            &format!("other_config:dpdk-lcore-mask={mask}"),
            &format!("other_config:pmd-cpu-mask={mask}"),
            &format!("other_config:dpdk-socket-mem={mem}"),
            &format!("other_config:dpdk-socket-limit={mem}"),
            &format!("other_config:dpdk-extra={extra}"),
        ])?;

        // The TAPs of its userspace datapath and bridge appear in this namespace only.
        let netns = Netns::create(&format!("{TAG}{}-ovs", std::process::id()))?;
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &cpu])
            .arg(vswitchd())
            .arg(format!("unix:{}", dir.join("db.sock").display()))
            .arg(format!("--unixctl={}", dir.join("vswitchd.ctl").display()))
            .arg("--no-chdir");
        let cmd = env(netns.wrap(&cmd), dir);
        let log = ctx.logs.join(format!("{name}-vswitchd.log"));
        let vswitchd = Proc::spawn("ovs-vswitchd", cmd, &log, Some(prefix))?;
        let mut ovs = Ovs {
            ctx_logs: ctx.logs.clone(),
            name: name.to_string(),
            dir: dir.to_path_buf(),
            _netns: netns,
            vswitchd,
            ovsdb,
        };

        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            ovs.vswitchd.check_alive().context("ovs-vswitchd")?;
            let ready = vsctl(&["get", "Open_vSwitch", ".", "dpdk_initialized"]);
            if ready.is_ok_and(|s| s.trim() == "true") {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "ovs-vswitchd did not initialise DPDK within 60 s; see {}",
                    log.display()
                );
            }
            sleep(Duration::from_millis(100));
        }

        let mut args: Vec<String> = vec![
            "add-br".into(),
            BRIDGE.into(),
            "--".into(),
            "set".into(),
            "Bridge".into(),
            BRIDGE.into(),
            "datapath_type=netdev".into(),
        ];
        for (port, ofport) in PORTS {
            let sock = dir.join(format!("{port}.sock"));
            args.extend(
                [
                    "--",
                    "add-port",
                    BRIDGE,
                    port,
                    "--",
                    "set",
                    "Interface",
                    port,
                    "type=dpdkvhostuserclient",
                ]
                .map(String::from),
            );
            args.push(format!("options:vhost-server-path={}", sock.display()));
            args.push(format!("ofport_request={ofport}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        vsctl(&args).context("cannot create the bridge")?;
        for (port, ofport) in PORTS {
            let got = vsctl(&["get", "Interface", port, "ofport"])?;
            if got.trim() != ofport.to_string() {
                bail!(
                    "OVS port {port} is OpenFlow port {}, not {ofport}",
                    got.trim()
                );
            }
        }
        ovs.ofctl(&["del-flows"])?;
        for flow in FLOWS {
            ovs.ofctl(&["add-flow", flow])?;
        }
        let flows = ovs.ofctl(&["dump-flows"])?;
        let n = flows
            .lines()
            .filter(|l| l.contains("actions=output:"))
            .count();
        if n != FLOWS.len() {
            bail!("OVS has {n} flow(s), not {}:\n{flows}", FLOWS.len());
        }
        Ok(ovs)
    }

    /// `ovs-vsctl ARGS` against this OVS's database.
    fn vsctl(&self, args: &[&str]) -> Result<String> {
        let mut c = env(Command::new("ovs-vsctl"), &self.dir);
        c.arg(format!("--db=unix:{}", self.dir.join("db.sock").display()))
            .arg(format!("--timeout={VSCTL_TIMEOUT_SECS}"))
            .args(args);
        output(&mut c)
    }

    /// `ovs-ofctl COMMAND unix:<dir>/br0.mgmt ARGS`.
    fn ofctl(&self, args: &[&str]) -> Result<String> {
        let mgmt = format!("unix:{}", self.dir.join(format!("{BRIDGE}.mgmt")).display());
        let mut c = env(Command::new("ovs-ofctl"), &self.dir);
        c.arg(args[0]).arg(mgmt).args(&args[1..]);
        output(&mut c)
    }

    /// `ovs-appctl -t <dir>/<target> ARGS`.
    fn appctl(&self, target: &str, args: &[&str]) -> Result<String> {
        let mut c = env(Command::new("ovs-appctl"), &self.dir);
        c.arg(format!("--target={}", self.dir.join(target).display()))
            .arg("--timeout=10")
            .args(args);
        output(&mut c)
    }

    /// A map column of a port's Interface row (`statistics`, `status`), as strings.
    fn interface_map(&self, port: &str, column: &str) -> Result<BTreeMap<String, String>> {
        let text = self.vsctl(&["get", "Interface", port, column])?;
        Ok(parse_map(&text))
    }

    /// Waits until both ports have their guest (link up).
    fn wait_ports_up(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.vswitchd.check_alive()?;
            let mut up = true;
            for (port, _) in PORTS {
                let state = self.vsctl(&["get", "Interface", port, "link_state"])?;
                up &= state.trim() == "up";
            }
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "OVS's ports did not come up; see {}",
                    self.vswitchd.log.display()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Keeps the PMD thread's counters (EMC / megaflow hits, cycles per packet) in the logs.
    fn save_pmd_stats(&self) {
        let mut text = String::new();
        for what in ["dpif-netdev/pmd-stats-show", "dpif-netdev/pmd-perf-show"] {
            text += &format!("$ ovs-appctl {what}\n");
            match self.appctl("vswitchd.ctl", &[what]) {
                Ok(out) => text += &out,
                Err(err) => text += &format!("{err:#}\n"),
            }
        }
        for (port, _) in PORTS {
            if let Ok(s) = self.vsctl(&["get", "Interface", port, "statistics"]) {
                text += &format!("$ ovs-vsctl get Interface {port} statistics\n{s}");
            }
        }
        let path = self.ctx_logs.join(format!("{}-pmd-stats.log", self.name));
        let _ = fs::write(path, text);
    }

    /// Stops ovs-vswitchd (`exit --cleanup`) and says how it went.
    fn exit(&mut self) -> Result<()> {
        self.appctl("vswitchd.ctl", &["exit", "--cleanup"])
            .context("ovs-appctl exit")?;
        let status = self.vswitchd.wait_exit(Duration::from_secs(20))?;
        if !status.success() {
            bail!("ovs-vswitchd exited with {status}");
        }
        Ok(())
    }

    /// Error and emergency lines of ovs-vswitchd's log.
    fn complaints(&self) -> Vec<String> {
        let out = self.vswitchd.output() + &self.vswitchd.errors();
        out.lines()
            .filter(|l| l.contains("|ERR|") || l.contains("|EMER|"))
            .map(str::to_string)
            .collect()
    }

    /// Stops everything now (what dropping does, with a clean exit first).
    fn stop(&mut self) {
        let _ = self.exit();
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        // ovs-vswitchd first (SIGTERM if `exit` did not stop it), then the database.
        for proc in [&mut self.vswitchd, &mut self.ovsdb] {
            if proc.child.is_some() {
                let _ = proc.terminate(Duration::from_secs(5));
            }
        }
        // The Procs' own drops kill what is left; the namespace goes after them.
    }
}

/// `cmd` with OVS's directories all in `dir` (and the package's data where it is).
fn env(mut cmd: Command, dir: &Path) -> Command {
    for var in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
        cmd.env(var, dir);
    }
    cmd.env("OVS_PKGDATADIR", PKGDATADIR);
    cmd
}

/// Runs `cmd` to completion; its stdout, or an error with its stderr.
fn output(cmd: &mut Command) -> Result<String> {
    let shown = crate::util::display(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An OVSDB map as `ovs-vsctl get` prints it: `{a=1, b="x y"}`.
fn parse_map(text: &str) -> BTreeMap<String, String> {
    let inner = text.trim().trim_start_matches('{').trim_end_matches('}');
    let mut map = BTreeMap::new();
    let mut rest = inner;
    while !rest.trim().is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_matches('"').to_string();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            let next = quoted[end..].trim_start_matches('"');
            (quoted[..end].to_string(), next)
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        map.insert(key, value);
        rest = next.trim_start().trim_start_matches(',');
    }
    map
}

/// The `dpdk-lcore-mask` / `pmd-cpu-mask` of one CPU.
fn cpu_mask(cpu: usize) -> String {
    format!("{:#x}", 1u64 << cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ovsdb_maps() {
        let m = parse_map(
            "{rx_bytes=1000, rx_dropped=0, tx_dropped=7, \"key x\"=\"a, b\", ovs_rx_qos_drops=0}\n",
        );
        assert_eq!(m["rx_bytes"], "1000");
        assert_eq!(m["tx_dropped"], "7");
        assert_eq!(m["key x"], "a, b");
        assert_eq!(m["ovs_rx_qos_drops"], "0");
        assert!(parse_map("{}\n").is_empty());
        let s = parse_map("{features=\"0x0000000150208182\", mode=client, status=connected}");
        assert_eq!(s["features"], "0x0000000150208182");
        assert_eq!(s["mode"], "client");
    }

    #[test]
    fn masks_and_names() {
        assert_eq!(cpu_mask(1), "0x2");
        assert_eq!(cpu_mask(0), "0x1");
        assert_eq!(netns::owner_pid(TAG, "vnet-bench-42-ovs"), Some(42));
        assert_eq!(Switch::Ovs.label(), "ovs-dpdk");
    }
}
