//! What the kernel will do: the lookups of ARCHITECTURE.md steps 1–7 and the
//! pipeline order (without conntrack and fragments), performed on a
//! [`Compiled`] generation in user space.
//!
//! It reads nothing but the map contents, as the kernel would, and matches
//! LPM keys on their raw bytes in memory order, as the kernel's trie does: a
//! key laid out wrongly (a port in host order, a prefix length that does not
//! count the fixed fields) fails here as it would in the kernel. It is a test
//! model, so it favours plainness over speed.
use std::collections::{BTreeMap, HashMap};

use filter_common::{
    proto_class, proto_has_ports, AddrKeyData, CellKey, EniConfig, EniKey, PortKeyData, RuleHit,
    TableMeta, ACTION_DROP, ID_NONE, MODE_NIC, RULE_SLOT_DEFAULT_DENY, RULE_SLOT_PASS,
    STAT_ACCEPT_NEW, STAT_DROP_DEFAULT, STAT_DROP_NACL, STAT_DROP_SG_RULE, STAT_PASS_ND,
    STAT_PASS_UNGUARDED, TABLE_HAS_INNER, TABLE_HAS_LOCAL, TABLE_HAS_SPORT,
};

use super::{prefix::left_aligned, Compiled, LpmEntry};
use crate::{
    ruleset::Direction,
    verdict::{Decision, Packet, Reason, Verdict},
};

/// The program a packet runs through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Interface ingress.
    Xdp,
    /// Interface egress.
    Tc,
}

/// What the data plane does with one first packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelVerdict {
    /// The ENI direction; `None` when the interface is not guarded.
    pub direction: Option<Direction>,
    pub decision: Decision,
    /// The `FILTER_RSTATS` slot the packet counts into.
    pub slot: u32,
    /// The `FILTER_STATS` counter the packet counts into.
    pub stat: u32,
}

/// Classifies a first packet arriving at `hook` of interface `ifindex`.
pub fn classify(c: &Compiled, ifindex: u32, hook: Hook, pkt: &Packet) -> ModelVerdict {
    Model::new(c).classify(ifindex, hook, pkt)
}

/// The decision for a first packet in ENI direction `direction` of the ENI
/// on `ifindex` (what `crate::eval` answers for that ENI and direction).
pub fn classify_direction(
    c: &Compiled,
    ifindex: u32,
    direction: Direction,
    pkt: &Packet,
) -> Decision {
    Model::new(c)
        .classify_direction(ifindex, direction, pkt)
        .decision
}

/// The maps of one generation, indexed for lookups. Build it once to
/// classify many packets.
pub struct Model<'a> {
    c: &'a Compiled,
    slot: u32,
    enis: HashMap<EniKey, EniConfig>,
    tables: HashMap<u32, TableMeta>,
    dport: Lpm<u32>,
    sport: Lpm<u32>,
    local: Lpm<u32>,
    cells: HashMap<CellKey, u32>,
    rules: Lpm<RuleHit>,
    inner: Lpm<RuleHit>,
}

/// The result of classifying against one table.
#[derive(Clone, Copy, Debug)]
struct TableHit {
    action: u32,
    slot: u32,
    /// No rule matched: the table's default applied.
    default: bool,
}

impl<'a> Model<'a> {
    pub fn new(c: &'a Compiled) -> Model<'a> {
        Model {
            c,
            slot: c.generation & 1,
            enis: c.enis.iter().copied().collect(),
            tables: c.tables.iter().copied().collect(),
            dport: Lpm::new(&c.dport, port_key_bytes),
            sport: Lpm::new(&c.sport, port_key_bytes),
            local: Lpm::new(&c.local, addr_key_bytes),
            cells: c.cells.iter().copied().collect(),
            rules: Lpm::new(&c.rules, addr_key_bytes),
            inner: Lpm::new(&c.inner, addr_key_bytes),
        }
    }

    pub fn classify(&self, ifindex: u32, hook: Hook, pkt: &Packet) -> ModelVerdict {
        let Some(eni) = self.enis.get(&EniKey {
            slot: self.slot,
            ifindex,
        }) else {
            return self.pass(None, STAT_PASS_UNGUARDED);
        };
        // ARCHITECTURE.md "Direction": the hook and the attach mode.
        let direction = match (hook, eni.mode == MODE_NIC) {
            (Hook::Xdp, true) | (Hook::Tc, false) => Direction::Ingress,
            (Hook::Xdp, false) | (Hook::Tc, true) => Direction::Egress,
        };
        self.decide(eni, direction, pkt)
    }

    pub fn classify_direction(
        &self,
        ifindex: u32,
        direction: Direction,
        pkt: &Packet,
    ) -> ModelVerdict {
        match self.enis.get(&EniKey {
            slot: self.slot,
            ifindex,
        }) {
            Some(eni) => self.decide(eni, direction, pkt),
            None => self.pass(None, STAT_PASS_UNGUARDED),
        }
    }

    /// The pipeline without conntrack: ingress NACL, security groups, egress
    /// NACL (SPEC §3 step 2).
    fn decide(&self, eni: &EniConfig, direction: Direction, pkt: &Packet) -> ModelVerdict {
        if pkt.is_neighbour_discovery() {
            return self.pass(Some(direction), STAT_PASS_ND);
        }
        let (remote, local) = match direction {
            Direction::Ingress => (pkt.src, pkt.dst),
            Direction::Egress => (pkt.dst, pkt.src),
        };
        let d = usize::from(direction.as_u8());
        let nacl = eni.nacl_table[d];
        let drop =
            |hit: TableHit, stat: u32| self.verdict(direction, Verdict::Drop, hit.slot, stat);
        let nacl_drops = |hit: Option<TableHit>| hit.filter(|h| h.action == u32::from(ACTION_DROP));
        let nacl_hit =
            |table: u32| (table != ID_NONE).then(|| self.table(table, pkt, remote, local));
        if direction == Direction::Ingress {
            if let Some(hit) = nacl_drops(nacl_hit(nacl)) {
                return drop(hit, STAT_DROP_NACL);
            }
        }
        let sg = self.table(eni.sg_table[d], pkt, remote, local);
        if sg.action != u32::from(filter_common::ACTION_ACCEPT) {
            return drop(
                sg,
                if sg.default {
                    STAT_DROP_DEFAULT
                } else {
                    STAT_DROP_SG_RULE
                },
            );
        }
        if direction == Direction::Egress {
            if let Some(hit) = nacl_drops(nacl_hit(nacl)) {
                return drop(hit, STAT_DROP_NACL);
            }
        }
        self.verdict(direction, Verdict::Accept, sg.slot, STAT_ACCEPT_NEW)
    }

    /// Steps 1–7 against one table.
    fn table(
        &self,
        table: u32,
        pkt: &Packet,
        remote: std::net::IpAddr,
        local: std::net::IpAddr,
    ) -> TableHit {
        // A missing table fails closed.
        let Some(meta) = self.tables.get(&table) else {
            return TableHit {
                action: u32::from(ACTION_DROP),
                slot: RULE_SLOT_DEFAULT_DENY,
                default: true,
            };
        };
        let default = TableHit {
            action: meta.default_action,
            slot: meta.default_slot,
            default: true,
        };
        let found = |hit: RuleHit| TableHit {
            action: hit.action,
            slot: hit.slot,
            default: false,
        };
        // The address as a `Flow` holds it: IPv4 in the first four bytes.
        let (family, remote_bits) = left_aligned(remote);
        if meta.flags & TABLE_HAS_INNER != 0
            && meta.inner.may_contain(family, &remote_bits.to_be_bytes())
        {
            if let Some(hit) = self.inner.lookup(&addr_bytes(table, remote)) {
                return found(hit);
            }
        }
        let proto = proto_class(pkt.proto);
        let ports = proto_has_ports(proto);
        let dport = if ports { pkt.dst_port } else { 0 };
        let sport = if ports { pkt.src_port } else { 0 };
        let Some(dclass) = self.dport.lookup(&port_bytes(table, proto, dport)) else {
            return default;
        };
        let rule_set = if meta.flags & (TABLE_HAS_SPORT | TABLE_HAS_LOCAL) != 0 {
            let sclass = if meta.flags & TABLE_HAS_SPORT != 0 {
                match self.sport.lookup(&port_bytes(table, proto, sport)) {
                    Some(class) => class,
                    None => return default,
                }
            } else {
                ID_NONE
            };
            let lclass = if meta.flags & TABLE_HAS_LOCAL != 0 {
                match self.local.lookup(&addr_bytes(table, local)) {
                    Some(class) => class,
                    None => return default,
                }
            } else {
                ID_NONE
            };
            let cell = CellKey {
                table,
                dport_class: dclass,
                sport_class: sclass,
                local_class: lclass,
            };
            match self.cells.get(&cell) {
                Some(&rule_set) => rule_set,
                None => return default,
            }
        } else {
            dclass
        };
        // A NACL hit may be ACTION_SKIP (inside the vSwitch): the caller
        // goes on as after an accept, since only a drop stops the packet.
        self.rules
            .lookup(&addr_bytes(rule_set, remote))
            .map_or(default, found)
    }

    fn pass(&self, direction: Option<Direction>, stat: u32) -> ModelVerdict {
        ModelVerdict {
            direction,
            decision: Decision {
                verdict: Verdict::Accept,
                reason: Reason::Pass,
            },
            slot: RULE_SLOT_PASS,
            stat,
        }
    }

    fn verdict(
        &self,
        direction: Direction,
        verdict: Verdict,
        slot: u32,
        stat: u32,
    ) -> ModelVerdict {
        let reason = self
            .c
            .slot_reasons
            .get(&slot)
            .cloned()
            .unwrap_or_else(|| Reason::Rule {
                // A compiler bug, made visible rather than hidden.
                id: format!("<slot {slot} has no reason>"),
            });
        ModelVerdict {
            direction: Some(direction),
            decision: Decision { verdict, reason },
            slot,
            stat,
        }
    }
}

/// An LPM trie as a map per prefix length, searched from the longest.
struct Lpm<V> {
    by_len: BTreeMap<u32, HashMap<Vec<u8>, V>>,
}

impl<V: Copy> Lpm<V> {
    fn new<K>(entries: &[LpmEntry<K, V>], bytes: fn(&K) -> Vec<u8>) -> Lpm<V> {
        let mut by_len: BTreeMap<u32, HashMap<Vec<u8>, V>> = BTreeMap::new();
        for entry in entries {
            let key = masked(bytes(&entry.key), entry.prefix_len);
            by_len
                .entry(entry.prefix_len)
                .or_default()
                .insert(key, entry.value);
        }
        Lpm { by_len }
    }

    fn lookup(&self, key: &[u8]) -> Option<V> {
        self.by_len
            .iter()
            .rev()
            .find_map(|(&len, map)| map.get(&masked(key.to_vec(), len)).copied())
    }
}

/// `bytes` with every bit after the first `len` cleared.
fn masked(mut bytes: Vec<u8>, len: u32) -> Vec<u8> {
    for (i, byte) in bytes.iter_mut().enumerate() {
        let start = i as u32 * 8;
        if start >= len {
            *byte = 0;
        } else if start + 8 > len {
            *byte &= 0xffu8 << (start + 8 - len);
        }
    }
    bytes
}

/// A `#[repr(C)]` `PortKeyData` as it lies in memory.
fn port_key_bytes(k: &PortKeyData) -> Vec<u8> {
    let mut out = k.table.to_ne_bytes().to_vec();
    out.extend([k.proto, k._pad]);
    out.extend(k.port);
    out
}

/// A `#[repr(C)]` `AddrKeyData` as it lies in memory.
fn addr_key_bytes(k: &AddrKeyData) -> Vec<u8> {
    let mut out = k.id.to_ne_bytes().to_vec();
    out.push(k.family);
    out.extend(k._pad);
    out.extend(k.addr);
    out
}

/// The lookup key the kernel builds for a port.
fn port_bytes(table: u32, proto: u8, port: u16) -> Vec<u8> {
    port_key_bytes(&PortKeyData {
        table,
        proto,
        _pad: 0,
        port: port.to_be_bytes(),
    })
}

/// The lookup key the kernel builds for an address: IPv4 in the first four
/// bytes.
fn addr_bytes(id: u32, ip: std::net::IpAddr) -> Vec<u8> {
    let (family, addr) = left_aligned(ip);
    addr_key_bytes(&AddrKeyData {
        id,
        family,
        _pad: [0; 3],
        addr: addr.to_be_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use filter_common::FAMILY_V4;

    use super::*;

    #[test]
    fn layouts_match_the_repr_c_sizes() {
        assert_eq!(
            port_key_bytes(&PortKeyData::default()).len(),
            std::mem::size_of::<PortKeyData>()
        );
        assert_eq!(
            addr_key_bytes(&AddrKeyData::default()).len(),
            std::mem::size_of::<AddrKeyData>()
        );
    }

    #[test]
    fn masking_clears_bits_past_the_prefix() {
        assert_eq!(masked(vec![0xff, 0xff, 0xff], 12), vec![0xff, 0xf0, 0]);
        assert_eq!(masked(vec![0xff, 0xff], 16), vec![0xff, 0xff]);
        assert_eq!(masked(vec![0xff, 0xff], 0), vec![0, 0]);
    }

    #[test]
    fn longest_prefix_wins() {
        let entry = |prefix_len, id: u32, value| LpmEntry {
            prefix_len,
            key: AddrKeyData {
                id,
                family: FAMILY_V4,
                _pad: [0; 3],
                addr: [10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            },
            value,
        };
        let lpm = Lpm::new(
            &[
                entry(64 + 8, 1, 8u32),
                entry(64 + 24, 1, 24),
                entry(64, 2, 0),
            ],
            addr_key_bytes,
        );
        assert_eq!(lpm.lookup(&addr_bytes(1, [10, 0, 0, 9].into())), Some(24));
        assert_eq!(lpm.lookup(&addr_bytes(1, [10, 1, 0, 9].into())), Some(8));
        assert_eq!(lpm.lookup(&addr_bytes(1, [11, 0, 0, 0].into())), None);
        assert_eq!(lpm.lookup(&addr_bytes(2, [11, 0, 0, 0].into())), Some(0));
        // The family byte is one of the fixed bits: a /0 of IPv4 is not IPv6.
        assert_eq!(
            lpm.lookup(&addr_bytes(
                2,
                "::1".parse().unwrap_or_else(|e| panic!("{e}"))
            )),
            None
        );
    }
}
