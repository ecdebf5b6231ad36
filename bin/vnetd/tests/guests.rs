//! Real Linux guests on vnetd: Debian's cloud kernel with a busybox initramfs in QEMU (TCG),
//! attached with QEMU's vhost-user netdev (crates/testbed builds the image and runs the VMs).
//!
//! 1. `two_guests_ping`: a server guest (198.18.0.1) and a client guest (198.18.0.2) on
//!    ports vm1 and vm2; the client pings the server through the switch (ARP is flooded,
//!    then unicast), and vnetd's FDB holds both guests' MACs on their ports.
//! 2. `guest_reset_pings_again`: the client pings, is reset through the QEMU monitor (its
//!    driver resets the device and negotiates again with vnetd), boots again and pings
//!    again.
//!
//! Without QEMU or what the image is built from (`cargo xtask deps` installs them), the tests
//! print why and pass, unless `VNET_REQUIRE_GUESTS=1` (which `cargo xtask test` sets).
//! On a failure the guests' consoles, QEMU's output and vnetd's log are printed.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use api::{PortState, Request, Response};
use common::*;
use testbed::{mac_string, GuestArgs, GuestImage, Ready, TestResult, Vm, VmConfig};

/// Guests under TCG are CPU-heavy: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// From starting QEMU to `VNET-READY` (a few seconds when the machine is idle).
const BOOT: Duration = Duration::from_secs(120);
/// From `VNET-READY` to `VNET-DONE` of a client.
const DONE: Duration = Duration::from_secs(120);
/// How long a client waits for its peer to answer a ping.
const PEER_WAIT_SECS: u32 = 60;

const IP_1: &str = "198.18.0.1";
const IP_2: &str = "198.18.0.2";
const MAC_1: [u8; 6] = [0x52, 0x54, 0x00, 0x18, 0x00, 0x01];
const MAC_2: [u8; 6] = [0x52, 0x54, 0x00, 0x18, 0x00, 0x02];

/// The guest image, or None (with a message) when the tests should be skipped.
fn guest_image() -> Option<GuestImage> {
    let required = std::env::var("VNET_REQUIRE_GUESTS").is_ok_and(|v| v == "1");
    let missing = testbed::missing_prerequisites();
    let why = if missing.is_empty() {
        match testbed::ensure_image(&testbed::default_target_dir()) {
            Ok(image) => return Some(image),
            Err(err) => format!("the guest image cannot be built: {err}"),
        }
    } else {
        format!("missing {}", missing.join(", "))
    };
    assert!(!required, "VNET_REQUIRE_GUESTS=1 but {why}");
    eprintln!("skipping the guest test: {why} (run `cargo xtask guest-image`)");
    None
}

/// Unwraps a testbed result; the panic makes the VMs and vnetd print their logs on drop.
fn ok<T>(what: &str, r: testbed::Result<T>) -> T {
    r.unwrap_or_else(|err| panic!("{what}: {err}"))
}

/// Waits for a guest's `VNET-READY` and checks its MAC and link.
fn ready(vm: &mut Vm, mac: [u8; 6]) -> Ready {
    let r = ok(&format!("{} ready", vm.name()), vm.wait_ready(BOOT));
    assert_eq!(r.mac, mac_string(mac), "{}", r.line);
    assert!(
        r.link_up(),
        "{}: link down at boot (did vnetd drop QEMU's vhost-user connection? see its log): {}",
        vm.name(),
        r.line
    );
    r
}

/// The named result among `results`, which must have passed.
fn passed<'a>(results: &'a [TestResult], name: &str) -> &'a TestResult {
    let r = results
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no {name} result: {results:?}"));
    assert!(r.ok, "{}", r.line);
    r
}

/// The server guest on vm1 and the client's configuration on vm2: the client pings.
fn configs<'a>(v: &Vnetd, image: &'a GuestImage, client: GuestArgs) -> [VmConfig<'a>; 2] {
    let logs = v.dir.join("guests");
    let mut c1 = VmConfig::new("vm1", image, v.sock("vm1"), &logs);
    c1.mac = MAC_1;
    c1.cmdline = GuestArgs::server(&format!("{IP_1}/24")).to_cmdline();
    let mut c2 = VmConfig::new("vm2", image, v.sock("vm2"), &logs);
    c2.mac = MAC_2;
    c2.cmdline = GuestArgs {
        wait_secs: PEER_WAIT_SECS,
        ..client
    }
    .to_cmdline();
    [c1, c2]
}

#[test]
fn two_guests_ping() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(image) = guest_image() else { return };
    let v = Vnetd::start(&["vm1", "vm2"]);
    // The client stays up after its tests: a guest that powers off takes its port down,
    // and vnetd forgets the MACs learned there.
    let client = GuestArgs {
        stay: true,
        ..GuestArgs::client(&format!("{IP_2}/24"), IP_1, &["ping"])
    };
    let [c1, c2] = configs(&v, &image, client);

    // Both boot at once; the client waits until the server answers pings.
    let mut vm1 = ok("boot vm1", Vm::boot(&c1));
    let mut vm2 = ok("boot vm2", Vm::boot(&c2));
    ready(&mut vm1, MAC_1);
    ready(&mut vm2, MAC_2);

    let results = ok("vm2 tests", vm2.wait_done(DONE));
    let ping = passed(&results, "ping");
    eprintln!(
        "guests booted in {:.1} s and {:.1} s; {}",
        vm1.boot_time().unwrap_or_default().as_secs_f64(),
        vm2.boot_time().unwrap_or_default().as_secs_f64(),
        ping.line
    );

    // The switch learned each guest on its own port.
    let fdb = match v.call(Request::Fdb) {
        Response::Fdb(entries) => entries,
        r => panic!("unexpected {r:?}"),
    };
    for (mac, port) in [(MAC_1, "vm1"), (MAC_2, "vm2")] {
        let mac = mac_string(mac);
        assert!(
            fdb.iter()
                .any(|e| e.mac.eq_ignore_ascii_case(&mac) && e.port == port),
            "{mac} not learned on {port}: {fdb:?}"
        );
    }
}

#[test]
fn guest_reset_pings_again() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(image) = guest_image() else { return };
    let v = Vnetd::start(&["vm1", "vm2"]);
    let client = GuestArgs {
        stay: true,
        ..GuestArgs::client(&format!("{IP_2}/24"), IP_1, &["ping"])
    };
    let [c1, c2] = configs(&v, &image, client);

    let mut vm1 = ok("boot vm1", Vm::boot(&c1));
    let mut vm2 = ok("boot vm2", Vm::boot(&c2));
    ready(&mut vm1, MAC_1);
    ready(&mut vm2, MAC_2);
    let first = ok("vm2 tests", vm2.wait_done(DONE));
    passed(&first, "ping");

    // A reset: the guest's driver resets the device; QEMU stops the rings (GET_VRING_BASE)
    // and, once the new kernel's driver is up, sets features, memory and rings again.
    ok("vm2 reset", vm2.reset());
    ready(&mut vm2, MAC_2);
    let second = ok("vm2 tests after the reset", vm2.wait_done(DONE));
    let ping = passed(&second, "ping");
    eprintln!(
        "vm2 booted again in {:.1} s; {}",
        vm2.boot_time().unwrap_or_default().as_secs_f64(),
        ping.line
    );
    v.wait_ports("both ports up", |ports| {
        ports.iter().all(|p| p.state == PortState::Up)
    });
}
