//! Word-sized stores of byte fields.
//!
//! A load that spans several narrower stores still in the store buffer
//! cannot take its data from them: it waits until they reach the cache,
//! tens of cycles. The kernel's jhash reads a map key in 32-bit words and
//! the pipeline compares addresses in words, so the bytes they read are
//! written as whole, aligned words: an IPv4 address as one word, a key's
//! family and protocol bytes as one, its two ports as one. Each word is
//! built with `from_ne_bytes` and stored natively, so its bytes land in
//! memory in the order given, whatever the byte order.

/// Four `u32` words as the 16 bytes they are in memory.
#[inline(always)]
pub fn bytes(w: [u32; 4]) -> [u8; 16] {
    // SAFETY: both are 16 bytes of plain data; every bit pattern is valid.
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(w) }
}

/// Stores `b` at `dst` as one 32-bit word.
///
/// # Safety
/// `dst` must be valid for a 4-byte write and 4-byte aligned, and the four
/// bytes there must be plain data (fields of `u8`/`u16`, padding included).
#[inline(always)]
pub unsafe fn store(dst: *mut u8, b: [u8; 4]) {
    // SAFETY: the caller's promise.
    unsafe { dst.cast::<u32>().write(u32::from_ne_bytes(b)) }
}

/// Two `u16` values as the four bytes of one word, `a` first.
#[inline(always)]
pub fn pair(a: u16, b: u16) -> [u8; 4] {
    let (a, b) = (a.to_ne_bytes(), b.to_ne_bytes());
    [a[0], a[1], b[0], b[1]]
}
