//! Test support for this crate's unit tests and the fuzz harnesses (`vnet-fuzz-harness`);
//! built only for tests or with the `test-util` feature.

use std::fs::File;

use crate::{QueueControl, ReadyQueue};

pub use crate::sys::eventfd;

/// A [`QueueControl`] that builds the ring like the datapath and keeps it.
#[derive(Debug, Default)]
pub struct RingBuilder {
    rings: Vec<(u16, vring::Ring)>,
    /// Rings started.
    pub started: usize,
    /// Rings whose configuration `vring` refused.
    pub refused: usize,
}

impl RingBuilder {
    /// Indexes of the rings running now, in start order.
    pub fn running(&self) -> Vec<u16> {
        self.rings.iter().map(|(i, _)| *i).collect()
    }
}

impl QueueControl for RingBuilder {
    fn start_queue(&mut self, q: ReadyQueue) {
        match vring::Ring::new(q.mem, &q.cfg) {
            Ok(mut r) => {
                let _ = vring::DeviceRing::refresh_avail(&mut r);
                self.rings.push((q.index, r));
                self.started += 1;
            }
            Err(_) => self.refused += 1,
        }
    }

    fn stop_queue(&mut self, index: u16) -> Option<u32> {
        let i = self.rings.iter().position(|(x, _)| *x == index)?;
        Some(self.rings.swap_remove(i).1.base())
    }

    fn set_call(&mut self, _index: u16, _call: Option<File>) {}
}
