//! Helpers of the real-guest tests (QEMU guests from crates/testbed).

use std::time::{Duration, Instant};

use testbed::{GuestImage, TestResult, Vm};

use super::Vnetd;

/// How long a guest's tests may take.
pub const DONE: Duration = Duration::from_secs(120);

/// The guest image, or None (with a message) when the tests should be skipped.
pub fn guest_image() -> Option<GuestImage> {
    let missing = testbed::missing_prerequisites();
    let why = if missing.is_empty() {
        match testbed::ensure_image(&testbed::default_target_dir()) {
            Ok(image) => return Some(image),
            Err(err) => format!("the guest image cannot be built: {err}"),
        }
    } else {
        format!("missing {}", missing.join(", "))
    };
    testbed::skip(
        "VNET_REQUIRE_GUESTS",
        &format!("guest tests: {why} (run `cargo xtask guest-image`)"),
    );
    None
}

/// Unwraps a testbed result; the panic makes the VMs and vnetd print their logs on drop.
pub fn ok<T>(what: &str, r: testbed::Result<T>) -> T {
    r.unwrap_or_else(|err| panic!("{what}: {err}"))
}

/// Waits for `VNET-DONE` of `vm`, failing at once (instead of at the timeout) when vnetd
/// exits meanwhile, e.g. crashes: the guest's iperf3 would wait for it forever.
pub fn wait_done(vm: &Vm, v: &mut Vnetd) -> Vec<TestResult> {
    let deadline = Instant::now() + DONE;
    loop {
        match vm.wait_done(Duration::from_secs(1)) {
            Ok(results) => return results,
            Err(testbed::Error::Timeout { .. }) if Instant::now() < deadline => {
                assert!(
                    v.alive(),
                    "vnetd exited while {} ran its tests (see its log below)",
                    vm.name()
                );
            }
            Err(err) => panic!("{} tests: {err}", vm.name()),
        }
    }
}

/// The named result among `results`, which must have passed.
/// The iperf3 results `names` (one per direction): each passed and moved data.
pub fn iperf_passed<'a>(results: &'a [TestResult], names: [&str; 2]) -> [&'a TestResult; 2] {
    names.map(|name| {
        let r = passed(results, name);
        assert!(r.number("gbps").unwrap_or_default() > 0.0, "{}", r.line);
        r
    })
}

pub fn passed<'a>(results: &'a [TestResult], name: &str) -> &'a TestResult {
    let r = results
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no {name} result: {results:?}"));
    assert!(r.ok, "{}", r.line);
    r
}
