//! Bounds-checked big-endian field access shared by the views.
//!
//! Reads out of range yield zero and writes out of range do nothing: the views' checked
//! constructors make that unreachable, these helpers make it impossible to panic anyway.

/// The `N` bytes at `off`, or zeros if they are not all in `b`.
pub(crate) fn array<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    b.get(off..)
        .and_then(|s| s.get(..N))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .unwrap_or([0; N])
}

pub(crate) fn u8_at(b: &[u8], off: usize) -> u8 {
    b.get(off).copied().unwrap_or(0)
}

pub(crate) fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes(array(b, off))
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(array(b, off))
}

/// Copies `v` to `b[off..off + v.len()]` if that range exists.
pub(crate) fn put(b: &mut [u8], off: usize, v: &[u8]) {
    if let Some(dst) = b.get_mut(off..).and_then(|s| s.get_mut(..v.len())) {
        dst.copy_from_slice(v);
    }
}

pub(crate) fn put_u8(b: &mut [u8], off: usize, v: u8) {
    if let Some(x) = b.get_mut(off) {
        *x = v;
    }
}

pub(crate) fn put_u16(b: &mut [u8], off: usize, v: u16) {
    put(b, off, &v.to_be_bytes());
}

pub(crate) fn put_u32(b: &mut [u8], off: usize, v: u32) {
    put(b, off, &v.to_be_bytes());
}

/// `b[from..to]`, clamped to the buffer (empty if the range is inverted or outside).
pub(crate) fn range(b: &[u8], from: usize, to: usize) -> &[u8] {
    let to = to.min(b.len());
    b.get(from..to).unwrap_or(&[])
}

/// Mutable counterpart of [`range`].
pub(crate) fn range_mut(b: &mut [u8], from: usize, to: usize) -> &mut [u8] {
    let to = to.min(b.len());
    b.get_mut(from..to).unwrap_or(&mut [])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_is_harmless() {
        let mut b = [1u8, 2, 3];
        assert_eq!(u16_at(&b, 1), 0x0203);
        assert_eq!(u16_at(&b, 2), 0);
        assert_eq!(u32_at(&b, usize::MAX), 0);
        put_u16(&mut b, 2, 0xffff);
        put_u32(&mut b, usize::MAX, 1);
        assert_eq!(b, [1, 2, 3]);
        assert_eq!(range(&b, 2, 1), &[] as &[u8]);
        assert_eq!(range(&b, 1, 99), &[2, 3]);
    }
}
