//! Reading parameters off fuzz input.

/// Reads little-endian values off the input, yielding zeros once it runs out.
#[derive(Debug)]
pub(crate) struct Input<'a>(pub(crate) &'a [u8]);

impl Input<'_> {
    pub(crate) fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub(crate) fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// The low bit of the next byte.
    pub(crate) fn bit(&mut self) -> bool {
        self.u8() & 1 != 0
    }

    /// Whether the input is used up.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
