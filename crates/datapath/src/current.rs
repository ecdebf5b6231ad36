//! Which port a worker is working on, for the panic message: vnetd aborts on a panic (a
//! bug of ours, never a guest's doing), and the message names the thread and this port.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::types::PortId;

thread_local! {
    static CURRENT: Cell<Option<PortId>> = const { Cell::new(None) };
}

/// Port names by id (written when ports are added, read only by the panic hook).
static NAMES: Mutex<BTreeMap<u16, String>> = Mutex::new(BTreeMap::new());

/// The calling worker now works on port `id` (one thread-local store per burst).
#[inline]
pub(crate) fn set(id: Option<PortId>) {
    CURRENT.with(|c| c.set(id));
}

/// Remembers a port's name for [`port_name`].
pub(crate) fn register(id: PortId, name: &str) {
    if let Ok(mut n) = NAMES.lock() {
        n.insert(id.0, name.to_string());
    }
}

/// The port the calling thread was working on, by name (for a panic hook; never blocks).
pub fn port_name() -> Option<String> {
    let id = CURRENT.with(Cell::get)?;
    let names = NAMES.try_lock().ok()?;
    Some(
        names
            .get(&id.0)
            .cloned()
            .unwrap_or_else(|| format!("#{}", id.0)),
    )
}
