//! The libvirt recipe of README ("Attaching libvirt domains"): a transient libvirt domain
//! with `<interface type='vhostuser'>` and shared memfd memory boots the test guest on
//! vnetd; QEMU runs as libvirt's unprivileged user, so vnetd's socket is 0660 for the
//! `kvm` group. The guest pings a userspace frontend on another port of the switch.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::guest::guest_image;
use common::*;
use wire::Ipv4Addr;

const GUEST_MAC: &str = "52:54:00:1b:00:01";
const PEER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

fn virsh(args: &[&str]) -> (bool, String) {
    let out = Command::new("virsh")
        .args(["-c", "qemu:///system"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The daemons this test started (stopped on drop); none when libvirtd already ran.
struct Daemons(Vec<&'static str>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for d in &self.0 {
            if let Ok(pid) = std::fs::read_to_string(format!("/run/{d}.pid")) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
}

/// A running libvirtd: the system's, or one started here (no systemd needed) and stopped
/// when the returned guard goes.
fn libvirtd() -> Option<Daemons> {
    if virsh(&["version"]).0 {
        return Some(Daemons(Vec::new()));
    }
    let mut started = Daemons(Vec::new());
    for d in ["virtlogd", "libvirtd"] {
        if Command::new(d)
            .arg("-d")
            .status()
            .is_ok_and(|s| s.success())
        {
            started.0.push(d);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if virsh(&["version"]).0 {
            return Some(started);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// Destroys the domain whatever happens.
struct Domain(String);

impl Drop for Domain {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.0]);
    }
}

/// The domain of README's recipe, for the test guest's kernel and initrd.
fn domain_xml(name: &str, socket: &std::path::Path, kernel: &str, initrd: &str) -> String {
    format!(
        r#"<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <memory unit='MiB'>512</memory>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <vcpu>2</vcpu>
  <cpu mode='maximum'/>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 vnet.ip=198.18.0.1/24 vnet.role=client vnet.peer=198.18.0.2 vnet.tests=ping vnet.wait=60 vnet.after=stay</cmdline>
  </os>
  <devices>
    <interface type='vhostuser'>
      <alias name='ua-vnet0'/>
      <mac address='{GUEST_MAC}'/>
      <source type='unix' path='{socket}' mode='client'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'/>
  </devices>
  <qemu:override>
    <qemu:device alias='ua-vnet0'>
      <qemu:frontend>
        <qemu:property name='vectors' type='unsigned' value='0'/>
      </qemu:frontend>
    </qemu:device>
  </qemu:override>
</domain>
"#,
        socket = socket.display()
    )
}

#[test]
fn a_libvirt_domain_with_a_vhostuser_interface_pings_through_vnetd() {
    let Some(image) = guest_image() else { return };
    let have =
        testbed::dpdk::which("virsh").is_some() && testbed::dpdk::which("libvirtd").is_some();
    let Some(_daemons) = have.then(libvirtd).flatten() else {
        testbed::skip(
            "VNET_REQUIRE_GUESTS",
            "libvirt test: no running libvirtd (run `cargo xtask deps`)",
        );
        return;
    };
    // libvirt's QEMU runs as libvirt-qemu (group kvm): the socket is 0660 for kvm. The
    // guest's port is added at runtime, as `vnetctl add-port` does.
    let v = Vnetd::start_ports_args(
        &[("fe", "")],
        &["--socket-mode", "0660", "--socket-group", "kvm"],
    );
    match v.call(api::Request::AddPort {
        kind: api::PortKind::VhostUser,
        spec: format!("name=lv,socket={}", v.sock("lv").display()),
    }) {
        api::Response::Done { .. } => {}
        other => panic!("{other:?}"),
    }
    let fe = connect(&v.sock("fe"), frontend::DEFAULT_FEATURES);
    let stop = Arc::new(AtomicBool::new(false));
    let echoes = Arc::new(AtomicU64::new(0));
    let responder = {
        let (stop, echoes) = (stop.clone(), echoes.clone());
        let mut fe = fe;
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Some((_, fr)) = fe.recv(0, Duration::from_millis(50)).unwrap() else {
                    continue;
                };
                if let Some(reply) = responder::answer(&fr, mac(2), PEER_IP) {
                    if reply.get(12..14) == Some(&[0x08, 0x00]) {
                        echoes.fetch_add(1, Ordering::Relaxed);
                    }
                    fe.send(0, &Default::default(), &reply).unwrap();
                }
            }
        })
    };
    let name = format!("vnet-test-{}", std::process::id());
    let xml = v.dir.join("domain.xml");
    std::fs::write(
        &xml,
        domain_xml(
            &name,
            &v.sock("lv"),
            &image.kernel.display().to_string(),
            &image.initrd.display().to_string(),
        ),
    )
    .unwrap();
    let (ok, out) = virsh(&["create", &xml.display().to_string()]);
    assert!(ok, "virsh create: {out}");
    let _domain = Domain(name.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    while echoes.load(Ordering::Relaxed) < 3 {
        assert!(
            Instant::now() < deadline,
            "the libvirt guest's pings never came through:\n{}",
            v.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ports = v.ports();
    let lv = ports.iter().find(|p| p.name == "lv").unwrap();
    assert_eq!(lv.state, api::PortState::Up, "{lv:?}");
    assert!(
        v.log_text().contains("port lv: frontend connected"),
        "{}",
        v.log_text()
    );
    stop.store(true, Ordering::Relaxed);
    responder.join().unwrap();
}
