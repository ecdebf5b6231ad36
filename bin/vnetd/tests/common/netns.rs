//! Network namespaces the tests create (testbed's [`Netns`]), processes living in them,
//! and whether TAP tests can run here.

use std::process::Child;

#[allow(unused_imports)] // not every test file uses it
pub use testbed::Netns;

/// A process in the namespace (`ip netns exec` execs it, so the child is the process
/// itself), killed on drop.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether we are root with /dev/net/tun and iproute2; if not, skip (or fail under
/// `VNET_REQUIRE_TAP`).
pub fn can_use_tap() -> bool {
    match testbed::netns::tap_unavailable() {
        None => true,
        Some(why) => {
            testbed::skip("VNET_REQUIRE_TAP", &why);
            false
        }
    }
}
