//! Port ranges as the prefixes that cover them.
//!
//! The port prefix tables are over a 16-bit port, so a range becomes the fewest aligned power-of-two blocks that tile it exactly
//! (at most 30 for a 16-bit range).
use filter_common::{PortKeyData, PORT_KEY_FIXED_BITS};

/// The aligned blocks `(first port, prefix bits)` that tile `lo..=hi`,
/// in ascending order. Greedy from `lo`: take the largest block that starts
/// there and does not pass `hi`; this is the minimal cover.
pub(crate) fn port_prefixes(lo: u16, hi: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    let (mut cur, hi) = (u32::from(lo), u32::from(hi));
    while cur <= hi {
        // Largest block aligned at `cur`: limited by the trailing zeros of
        // `cur` (0 is aligned to everything) and by what is left of the range.
        let align = if cur == 0 {
            16
        } else {
            cur.trailing_zeros().min(16)
        };
        let mut size_log = align;
        while cur + (1 << size_log) - 1 > hi {
            size_log -= 1;
        }
        out.push((cur as u16, 16 - size_log as u8));
        cur += 1 << size_log;
    }
    out
}

/// The LPM key of one port block of `proto` in `table`.
pub(crate) fn port_key(table: u32, proto: u8, port: u16, bits: u8) -> (u32, PortKeyData) {
    let key = PortKeyData {
        table,
        proto,
        _pad: 0,
        port: port.to_be_bytes(),
    };
    (PORT_KEY_FIXED_BITS + u32::from(bits), key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(blocks: &[(u16, u8)]) -> Vec<u32> {
        let mut ports = Vec::new();
        for &(start, bits) in blocks {
            let size = 1u32 << (16 - bits);
            assert_eq!(
                u32::from(start) % size,
                0,
                "block {start}/{bits} not aligned"
            );
            ports.extend(u32::from(start)..u32::from(start) + size);
        }
        ports
    }

    #[test]
    fn single_port_is_one_full_length_block() {
        assert_eq!(port_prefixes(80, 80), vec![(80, 16)]);
    }

    #[test]
    fn whole_space_is_one_empty_prefix() {
        assert_eq!(port_prefixes(0, 65535), vec![(0, 0)]);
    }

    #[test]
    fn ranges_are_tiled_exactly_and_minimally() {
        assert_eq!(port_prefixes(1024, 65535).len(), 6);
        assert_eq!(port_prefixes(1, 65535).len(), 16);
        assert_eq!(port_prefixes(1, 65534).len(), 30);
        for (lo, hi) in [
            (0u16, 0u16),
            (1, 1),
            (3, 17),
            (1000, 1999),
            (65535, 65535),
            (8000, 8999),
            (1, 65534),
        ] {
            let blocks = port_prefixes(lo, hi);
            assert_eq!(
                covered(&blocks),
                (u32::from(lo)..=u32::from(hi)).collect::<Vec<_>>()
            );
            // Minimal: no two neighbouring blocks could merge into one.
            for w in blocks.windows(2) {
                let (a, b) = (w[0], w[1]);
                let mergeable = a.1 == b.1 && a.1 > 0 && u32::from(a.0) % (1u32 << (17 - a.1)) == 0;
                assert!(!mergeable, "{lo}-{hi}: {a:?} and {b:?} could merge");
            }
        }
    }

    #[test]
    fn keys_put_port_bits_big_endian() {
        let (len, key) = port_key(5, 6, 0x1f90, 16);
        assert_eq!(len, PORT_KEY_FIXED_BITS + 16);
        assert_eq!(key.port, [0x1f, 0x90]);
    }
}
