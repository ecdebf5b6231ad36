//! One QEMU guest on a vhost-user socket, its serial console and its monitor.
//!
//! QEMU runs under TCG (`-accel tcg,thread=multi`), so the tests need no KVM; the guest RAM
//! is a shared memfd so vnetd can map it. The serial console goes to `<log_dir>/<name>.serial`
//! and QEMU's own output to `<log_dir>/<name>.qemu.log`; the HMP monitor listens on
//! `<log_dir>/<name>.monitor`.
//!
//! The console is read by polling the serial file; a wait fails early when QEMU exits or the
//! guest kernel panics. After [`Vm::reset`] waits and results look at the new boot only.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{io, Error, Result};
use crate::image::GuestImage;
use crate::MacAddr;

/// The QEMU binary; `VNET_QEMU` overrides it.
pub const QEMU: &str = "qemu-system-x86_64";

/// How often the console file is read while waiting.
const POLL: Duration = Duration::from_millis(50);

/// How a VM is started.
#[derive(Debug, Clone)]
pub struct VmConfig<'a> {
    /// A short name for file names and messages (`vm1`).
    pub name: String,
    /// The guest kernel and initramfs.
    pub image: &'a GuestImage,
    /// The vhost-user socket.
    pub vhost_user_socket: PathBuf,
    /// QEMU listens on the socket (`server=on,wait=off`) and vnetd connects (vnetd's
    /// `client` port option); otherwise QEMU connects to vnetd's socket.
    pub server: bool,
    /// The guest's MAC address (virtio-net-pci `mac=`).
    pub mac: MacAddr,
    /// Extra `virtio-net-pci` properties, comma separated, e.g.
    /// `csum=off,guest_csum=off,mrg_rxbuf=off` or `host_mtu=9000`.
    pub netdev_opts: String,
    /// `vnet.*` kernel parameters for the init script (see [`crate::GuestArgs`]).
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub mem_mib: u32,
    /// Virtual CPUs.
    pub smp: u32,
    /// Queue pairs of the virtio-net device: more than one gives QEMU's netdev `queues=N`
    /// and the device `mq=on` (the guest enables one pair per vCPU, up to N).
    pub queue_pairs: u16,
    /// Where the console, QEMU log and monitor socket go.
    pub log_dir: PathBuf,
}

impl<'a> VmConfig<'a> {
    /// A VM with 512 MiB and 2 vCPUs connecting to `socket`, no extra options.
    pub fn new(
        name: &str,
        image: &'a GuestImage,
        socket: impl Into<PathBuf>,
        log_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            name: name.to_string(),
            image,
            vhost_user_socket: socket.into(),
            server: false,
            mac: MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
            netdev_opts: String::new(),
            cmdline: String::new(),
            mem_mib: 512,
            smp: 2,
            queue_pairs: 1,
            log_dir: log_dir.into(),
        }
    }

    /// The QEMU command line (without the program).
    pub fn args(&self, monitor: &Path, serial: &Path) -> Vec<String> {
        let mem = format!("{}M", self.mem_mib);
        let mut chardev = format!(
            "socket,id=vnet0,path={}",
            escape_opt(&self.vhost_user_socket.to_string_lossy())
        );
        if self.server {
            chardev.push_str(",server=on,wait=off");
        }
        // Debian's QEMU 7.2 crashes with vhost-user + TCG + MSI-X: legacy INTx (vectors=0).
        let mut device = format!("virtio-net-pci,netdev=net0,mac={},vectors=0", self.mac);
        let mut netdev = String::from("vhost-user,id=net0,chardev=vnet0");
        if self.queue_pairs > 1 {
            netdev.push_str(&format!(",queues={}", self.queue_pairs));
            device.push_str(",mq=on");
        }
        if !self.netdev_opts.is_empty() {
            device.push(',');
            device.push_str(&self.netdev_opts);
        }
        let mut append = String::from("console=ttyS0 quiet panic=-1");
        if !self.cmdline.is_empty() {
            append.push(' ');
            append.push_str(&self.cmdline);
        }
        [
            "-name",
            &self.name,
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-smp",
            &self.smp.to_string(),
            "-m",
            &mem,
            "-nodefaults",
            "-display",
            "none",
            "-serial",
            &format!("file:{}", serial.display()),
            "-monitor",
            &format!("unix:{},server=on,wait=off", monitor.display()),
            "-object",
            &format!("memory-backend-memfd,id=mem0,size={mem},share=on"),
            "-machine",
            "q35,memory-backend=mem0",
            "-kernel",
            &self.image.kernel.to_string_lossy(),
            "-initrd",
            &self.image.initrd.to_string_lossy(),
            "-append",
            &append,
            "-chardev",
            &chardev,
            "-netdev",
            &netdev,
            "-device",
            &device,
        ]
        .iter()
        .map(ToString::to_string)
        .collect()
    }
}

/// QEMU option values double commas.
fn escape_opt(value: &str) -> String {
    value.replace(',', ",,")
}

/// A guest's `VNET-READY` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// The whole line.
    pub line: String,
    /// The `mac=` field, when it is a MAC address.
    pub mac: Option<MacAddr>,
    /// The `ip=` field.
    pub ip: String,
    /// The `mtu=` field.
    pub mtu: String,
    /// The `operstate=` field: `up` once the device reports the link up (it goes down
    /// when the vhost-user backend drops QEMU's connection).
    pub operstate: String,
}

impl Ready {
    /// Whether the guest saw its link up.
    pub fn link_up(&self) -> bool {
        self.operstate == "up"
    }
}

/// One `VNET-RESULT <name> ok|fail key=value ...` line.
#[derive(Debug, Clone, PartialEq)]
pub struct TestResult {
    /// The test's name (`ping`, `iperf_tx`, ...).
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// The `key=value` fields.
    pub fields: Vec<(String, String)>,
    /// The whole line.
    pub line: String,
}

impl TestResult {
    /// Parses the part of a line from `VNET-RESULT` on.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line[line.find("VNET-RESULT ")?..].strip_prefix("VNET-RESULT ")?;
        let mut words = rest.split_whitespace();
        let name = words.next()?.to_string();
        let ok = match words.next()? {
            "ok" => true,
            "fail" => false,
            _ => return None,
        };
        let fields = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        Some(Self {
            name,
            ok,
            fields,
            line: line.trim().to_string(),
        })
    }

    /// A field's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A numeric field (`rtt_avg_ms`, `gbps`), a trailing `%` ignored.
    pub fn number(&self, key: &str) -> Option<f64> {
        self.get(key)?.trim_end_matches('%').parse().ok()
    }
}

/// A running QEMU; killed on drop (its console is printed if the thread is panicking).
#[derive(Debug)]
pub struct Vm {
    name: String,
    child: Mutex<Child>,
    serial: PathBuf,
    qemu_log: PathBuf,
    monitor: PathBuf,
    started: Instant,
    /// Byte offset in the console file where the current boot starts.
    boot_offset: usize,
    boot_time: Option<Duration>,
    command: String,
}

impl Vm {
    /// Starts QEMU. Returns once the process runs; [`Vm::wait_ready`] waits for the guest.
    pub fn boot(cfg: &VmConfig) -> Result<Vm> {
        fs::create_dir_all(&cfg.log_dir).map_err(io("cannot create", &cfg.log_dir))?;
        let serial = cfg.log_dir.join(format!("{}.serial", cfg.name));
        let qemu_log = cfg.log_dir.join(format!("{}.qemu.log", cfg.name));
        let monitor = cfg.log_dir.join(format!("{}.monitor", cfg.name));
        for p in [&serial, &monitor] {
            if p.exists() {
                fs::remove_file(p).map_err(io("cannot remove", p))?;
            }
        }
        let program = std::env::var("VNET_QEMU").unwrap_or_else(|_| QEMU.to_string());
        let args = cfg.args(&monitor, &serial);
        let command = format!("{program} {}", args.join(" "));
        let log = fs::File::create(&qemu_log).map_err(io("cannot create", &qemu_log))?;
        let log2 = log.try_clone().map_err(io("cannot dup", &qemu_log))?;
        let started = Instant::now();
        let child = Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|source| Error::Spawn {
                command: command.clone(),
                source,
            })?;
        Ok(Vm {
            name: cfg.name.clone(),
            child: Mutex::new(child),
            serial,
            qemu_log,
            monitor,
            started,
            boot_offset: 0,
            boot_time: None,
            command,
        })
    }

    /// The VM's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.lock_child().id()
    }

    /// The QEMU command line, for messages.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The serial console file.
    pub fn serial_path(&self) -> &Path {
        &self.serial
    }

    /// Time from starting QEMU (or the last [`Vm::reset`]) to `VNET-READY`, once
    /// [`Vm::wait_ready`] has seen it.
    pub fn boot_time(&self) -> Option<Duration> {
        self.boot_time
    }

    /// Waits for `VNET-READY` of the current boot and records the boot time.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Ready> {
        let line = self.wait_for("VNET-READY", timeout)?;
        self.boot_time = Some(self.started.elapsed());
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_default()
                .to_string()
        };
        Ok(Ready {
            mac: field("mac=").parse().ok(),
            ip: field("ip="),
            mtu: field("mtu="),
            operstate: field("operstate="),
            line,
        })
    }

    /// Waits for `VNET-DONE` of the current boot and returns the results.
    pub fn wait_done(&self, timeout: Duration) -> Result<Vec<TestResult>> {
        self.wait_for("VNET-DONE", timeout)?;
        Ok(self.results())
    }

    /// Waits until a console line of the current boot contains `pattern` and returns it.
    /// Fails at once when QEMU exits, the guest kernel panics or, unless `pattern` is a
    /// `VNET-ERROR`, the init script reports an error before the line shows up.
    pub fn wait_for(&self, pattern: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            // Read the console before checking for an exit, so output written just before
            // QEMU exited is seen.
            let text = self.boot_text();
            for line in complete_lines(&text) {
                if line.contains(pattern) {
                    return Ok(line.to_string());
                }
                if line.contains("Kernel panic") {
                    return Err(Error::Panic {
                        vm: self.name.clone(),
                        line: line.to_string(),
                    });
                }
                if line.contains("VNET-ERROR") && !pattern.contains("VNET-ERROR") {
                    return Err(Error::Guest {
                        vm: self.name.clone(),
                        line: line.to_string(),
                    });
                }
            }
            if let Some(status) = self.exit_status() {
                return Err(Error::Exited {
                    vm: self.name.clone(),
                    status,
                    pattern: pattern.to_string(),
                    qemu_log: self.qemu_log(),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    vm: self.name.clone(),
                    pattern: pattern.to_string(),
                    timeout,
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// The `VNET-RESULT` lines of the current boot so far.
    pub fn results(&self) -> Vec<TestResult> {
        complete_lines(&self.boot_text())
            .filter_map(TestResult::parse)
            .collect()
    }

    /// The result of test `name` in the current boot, if it has been printed.
    pub fn result(&self, name: &str) -> Option<TestResult> {
        self.results().into_iter().find(|r| r.name == name)
    }

    /// The whole serial console so far (every boot).
    pub fn console(&self) -> String {
        let bytes = fs::read(&self.serial).unwrap_or_default();
        String::from_utf8_lossy(&bytes).replace('\r', "")
    }

    /// QEMU's own output (errors, warnings).
    pub fn qemu_log(&self) -> String {
        fs::read_to_string(&self.qemu_log).unwrap_or_default()
    }

    /// The console and the QEMU log, for a failure message.
    pub fn report(&self) -> String {
        format!(
            "--- {} console ({}) ---\n{}\n--- {} QEMU log ---\n{}\n--- {} command ---\n{}\n",
            self.name,
            self.serial.display(),
            self.console().trim_end(),
            self.name,
            self.qemu_log().trim_end(),
            self.name,
            self.command
        )
    }

    /// Whether QEMU is still running.
    pub fn running(&self) -> bool {
        self.exit_status().is_none()
    }

    /// Waits up to `timeout` for QEMU to exit by itself (the guest powers off after
    /// `VNET-DONE`); returns whether it did.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.running() {
                return true;
            }
            std::thread::sleep(POLL);
        }
        !self.running()
    }

    /// Sends one HMP command on the monitor socket and returns its output.
    pub fn monitor(&self, command: &str) -> Result<String> {
        let fail = |message: String| Error::Monitor {
            vm: self.name.clone(),
            command: command.to_string(),
            message,
        };
        let mut s =
            UnixStream::connect(&self.monitor).map_err(|e| fail(format!("connect: {e}")))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| fail(e.to_string()))?;
        // The banner ends with the first prompt.
        read_until_prompt(&mut s).map_err(|e| fail(format!("banner: {e}")))?;
        s.write_all(format!("{command}\n").as_bytes())
            .map_err(|e| fail(format!("write: {e}")))?;
        let out = read_until_prompt(&mut s).map_err(|e| fail(format!("reply: {e}")))?;
        // The monitor echoes the command line (with terminal escapes) before the output.
        let text: Vec<&str> = out
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.contains(command))
            .collect();
        Ok(text.join("\n"))
    }

    /// Resets the VM (`system_reset`, like pressing the reset button): the guest boots
    /// again, its virtio-net driver resets the device and negotiates anew. Afterwards
    /// waits, results and the boot time refer to the new boot.
    pub fn reset(&mut self) -> Result<()> {
        // The guest is expected to be idle (after VNET-DONE with vnet.after=stay): lines
        // after this offset belong to the new boot.
        let offset = fs::metadata(&self.serial).map_or(0, |m| m.len());
        self.monitor("system_reset")?;
        self.boot_offset = usize::try_from(offset).unwrap_or(usize::MAX);
        self.started = Instant::now();
        self.boot_time = None;
        Ok(())
    }

    /// Kills QEMU (SIGKILL) and reaps it.
    pub fn kill(&self) {
        let mut child = self.lock_child();
        let _ = child.kill();
        let _ = child.wait();
    }

    fn boot_text(&self) -> String {
        let bytes = fs::read(&self.serial).unwrap_or_default();
        let from = self.boot_offset.min(bytes.len());
        String::from_utf8_lossy(&bytes[from..]).into_owned()
    }

    fn exit_status(&self) -> Option<String> {
        match self.lock_child().try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown: {e}")),
        }
    }

    fn lock_child(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.report());
        }
        let _ = fs::remove_file(&self.monitor);
    }
}

/// Lines that end with a newline (the last one may still be being written), without `\r`.
fn complete_lines(text: &str) -> impl Iterator<Item = &str> {
    let end = text.rfind('\n').map_or(0, |i| i + 1);
    text[..end].lines().map(|l| l.trim_end_matches('\r'))
}

/// Reads from the monitor until its `(qemu) ` prompt.
fn read_until_prompt(s: &mut UnixStream) -> std::io::Result<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "monitor closed the connection",
            ));
        }
        out.extend_from_slice(&buf[..n]);
        if out.ends_with(b"(qemu) ") {
            out.truncate(out.len() - b"(qemu) ".len());
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_result_lines() {
        let r = TestResult::parse(
            "[  3.1] VNET-RESULT ping ok rtt_avg_ms=0.812 loss=0% sent=10 received=10\r",
        )
        .unwrap();
        assert_eq!(r.name, "ping");
        assert!(r.ok);
        assert_eq!(r.number("rtt_avg_ms"), Some(0.812));
        assert_eq!(r.number("loss"), Some(0.0));
        assert_eq!(r.get("received"), Some("10"));
        let r = TestResult::parse("VNET-RESULT iperf_tx fail error=\"no result\"").unwrap();
        assert!(!r.ok);
        assert_eq!(r.get("error"), Some("no"));
        assert!(TestResult::parse("VNET-RESULT ping maybe").is_none());
        assert!(TestResult::parse("VNET-READY ip=x").is_none());
    }

    #[test]
    fn only_complete_lines() {
        let v: Vec<&str> = complete_lines("a\r\nb\nhalf").collect();
        assert_eq!(v, ["a", "b"]);
        assert_eq!(complete_lines("half").count(), 0);
    }

    #[test]
    fn command_line_has_the_vhost_user_pieces() {
        let image = GuestImage {
            kernel: "/k".into(),
            initrd: "/i".into(),
            kernel_package: "linux-image-x".into(),
        };
        let mut cfg = VmConfig::new("vm1", &image, "/run/a,b.sock", "/tmp/logs");
        cfg.server = true;
        cfg.mac = MacAddr([0x52, 0x54, 0, 0, 0, 0x0a]);
        cfg.netdev_opts = "mrg_rxbuf=off".into();
        cfg.cmdline = "vnet.ip=198.18.0.1/24".into();
        let args = cfg.args(Path::new("/tmp/m"), Path::new("/tmp/s")).join(" ");
        assert!(args.contains("-chardev socket,id=vnet0,path=/run/a,,b.sock,server=on,wait=off"));
        assert!(args.contains(
            "-device virtio-net-pci,netdev=net0,mac=52:54:00:00:00:0a,vectors=0,mrg_rxbuf=off"
        ));
        assert!(args.contains("memory-backend-memfd,id=mem0,size=512M,share=on"));
        assert!(args.contains("panic=-1 vnet.ip=198.18.0.1/24"));
        assert!(args.contains("-nodefaults"));
        // The only network device is the vhost-user one.
        assert!(!args.contains("-nic "));
        assert_eq!(args.matches("-netdev ").count(), 1);
        assert_eq!(args.matches("-device ").count(), 1);
    }
}
