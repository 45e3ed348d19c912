//! The [`Enforcer`] over the eBPF data plane: `crate::compile` to build a
//! generation, `crate::dataplane` to attach, write and read.
//!
//! The pin directory is locked by the data plane itself while it is loaded
//! (`dataplane::pins`), so `filterd` locks only the state directory
//! ([`DirLocks::state_only`](super::DirLocks::state_only)).
use std::{
    collections::{BTreeMap, BTreeSet},
    error::Error,
    fs,
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

use filter_common::{
    generation_slot, stat_is_drop, CtEntry, CtKey, GenConfig, CT_ICMP, CT_OTHER, CT_TCP_CLOSING,
    CT_TCP_ESTABLISHED, CT_TCP_SYN, CT_UDP, CT_UDP_STREAM, DEFAULT_CT_ENTRIES, FAMILY_V4,
    FAMILY_V6, STAT_LABELS,
};
use serde_json::Value;

use super::enforcer::{Compiled, DataplaneStatus, EnforceError, Enforcer};
use crate::{
    api::{MapFill, RuleCounter, StatCounter, TrackedConnection},
    compile::{self, SlotTable},
    dataplane::{pins, Dataplane, GenerationMaps, KtimeClock},
    ruleset::{Direction, Ruleset},
    verdict::Packet,
};

/// An error and its sources, on one line (the verifier log keeps its own
/// lines).
fn chain(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

pub struct KernelEnforcer {
    pin_dir: PathBuf,
    /// `None` after `detach_all` removed everything; loaded again by the
    /// next attach or activate.
    dataplane: Option<Dataplane>,
    /// Counter slot → reason text, of the running generation.
    reasons: BTreeMap<u32, String>,
    /// Conntrack timeouts of the running generation.
    config: Option<GenConfig>,
}

impl KernelEnforcer {
    /// Loads the programs and adopts (or creates) the pinned maps and links
    /// under `pin_dir`, mounting bpffs first if needed; takes the pin
    /// directory's lock.
    pub fn load(pin_dir: &Path) -> Result<Self, EnforceError> {
        let dataplane =
            Dataplane::load(Some(pin_dir)).map_err(|e| EnforceError::Load(chain(&e)))?;
        Ok(KernelEnforcer {
            pin_dir: pin_dir.to_owned(),
            dataplane: Some(dataplane),
            reasons: BTreeMap::new(),
            config: None,
        })
    }

    fn dataplane(&mut self) -> Result<&mut Dataplane, String> {
        if self.dataplane.is_none() {
            let loaded = Dataplane::load(Some(&self.pin_dir))
                .map_err(|e| format!("loading the data plane: {}", chain(&e)))?;
            self.dataplane = Some(loaded);
        }
        self.dataplane
            .as_mut()
            .ok_or_else(|| "the data plane is not loaded".to_owned())
    }

    /// Interfaces with a pinned link (`<pin>/links/<ifname>-xdp|-tc`).
    fn pinned_interfaces(&self) -> BTreeSet<String> {
        let Ok(entries) = fs::read_dir(self.pin_dir.join(pins::LINKS_DIR)) else {
            return BTreeSet::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix("-xdp")
                    .or_else(|| name.strip_suffix("-tc"))
                    .map(str::to_owned)
            })
            .collect()
    }
}

fn ifindex_of(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

fn state_name(state: u8) -> &'static str {
    match state {
        CT_TCP_SYN => "tcp_syn",
        CT_TCP_ESTABLISHED => "tcp_established",
        CT_TCP_CLOSING => "tcp_closing",
        CT_UDP => "udp",
        CT_UDP_STREAM => "udp_stream",
        CT_ICMP => "icmp",
        CT_OTHER => "other",
        _ => "unknown",
    }
}

fn timeout_ns(config: &GenConfig, state: u8) -> u64 {
    match state {
        CT_TCP_SYN => config.tcp_syn_ns,
        CT_TCP_ESTABLISHED => config.tcp_established_ns,
        CT_TCP_CLOSING => config.tcp_closing_ns,
        CT_UDP => config.udp_ns,
        CT_UDP_STREAM => config.udp_stream_ns,
        CT_ICMP => config.icmp_ns,
        _ => config.other_ns,
    }
}

fn addr_bytes(addr: std::net::IpAddr) -> (u8, [u8; 16]) {
    match addr {
        std::net::IpAddr::V4(a) => {
            let mut out = [0u8; 16];
            out[..4].copy_from_slice(&a.octets());
            (FAMILY_V4, out)
        }
        std::net::IpAddr::V6(a) => (FAMILY_V6, a.octets()),
    }
}

/// The conntrack key of `packet` at `ifindex`, built as the data plane
/// builds it (`filter-ebpf/src/conntrack.rs`, `make_key`): the smaller
/// endpoint (address as a big-endian number, then port) is `a`.
fn ct_key(ifindex: u32, packet: &Packet) -> CtKey {
    let (family, src) = addr_bytes(packet.src);
    let (_, dst) = addr_bytes(packet.dst);
    let (s, d) = (u128::from_be_bytes(src), u128::from_be_bytes(dst));
    let mut key = CtKey {
        ifindex,
        family,
        proto: packet.proto,
        ..CtKey::default()
    };
    if s < d || (s == d && packet.src_port <= packet.dst_port) {
        (key.addr_a, key.port_a, key.addr_b, key.port_b) =
            (src, packet.src_port, dst, packet.dst_port);
    } else {
        (key.addr_a, key.port_a, key.addr_b, key.port_b) =
            (dst, packet.dst_port, src, packet.src_port);
    }
    key
}

impl KernelEnforcer {
    /// What the running generation's counter slots mean, and its timeouts.
    fn learn(&mut self, plan: &compile::Compiled) {
        self.reasons = plan
            .slot_reasons
            .iter()
            .map(|(slot, reason)| (*slot, reason.to_string()))
            .collect();
        self.config = Some(plan.config);
    }
}

impl Enforcer for KernelEnforcer {
    type Plan = compile::Compiled;

    /// `FILTER_ACTIVE[0]`, 0 included: fresh maps (or none, after
    /// `detach_all`: the next load makes fresh ones) hold 0 there, and the
    /// data plane refuses a generation in its slot, so the daemon must
    /// avoid it too.
    fn running_generation(&self) -> Option<u32> {
        match &self.dataplane {
            Some(d) => d.active_generation().ok(),
            None => Some(0),
        }
    }

    fn attached(&self) -> BTreeSet<String> {
        let mut out = self.pinned_interfaces();
        if let Some(d) = &self.dataplane {
            out.extend(d.attachments().into_iter().map(|a| a.ifname));
        }
        out
    }

    fn compile(
        &self,
        generation: u32,
        ruleset: &Ruleset,
        slots: &Value,
    ) -> Result<Compiled<Self::Plan>, EnforceError> {
        let error = |message: String| EnforceError::Compile {
            generation,
            message,
        };
        let mut table: SlotTable = if slots.is_null() {
            SlotTable::default()
        } else {
            serde_json::from_value(slots.clone())
                .map_err(|e| error(format!("the saved slot table does not read back: {e}")))?
        };
        let plan = compile::compile(ruleset, generation, &ifindex_of, &mut table)
            .map_err(|e| error(e.to_string()))?;
        let slots = serde_json::to_value(&table).map_err(|e| error(e.to_string()))?;
        Ok(Compiled { plan, slots })
    }

    fn attach(&mut self, interface: &str) -> Result<(), EnforceError> {
        let error = |message: String| EnforceError::Attach {
            interface: interface.to_owned(),
            message,
        };
        let dataplane = self.dataplane().map_err(error)?;
        dataplane
            .attach(interface)
            .map(drop)
            .map_err(|e| error(chain(&e)))
    }

    fn detach(&mut self, interface: &str) -> Result<(), EnforceError> {
        let error = |message: String| EnforceError::Detach {
            interface: interface.to_owned(),
            message,
        };
        let dataplane = self.dataplane().map_err(error)?;
        dataplane
            .detach(interface)
            .map(drop)
            .map_err(|e| error(chain(&e)))
    }

    fn activate(&mut self, plan: &compile::Compiled) -> Result<(), EnforceError> {
        let error = |message: String| EnforceError::Write {
            generation: plan.generation,
            message,
        };
        let dataplane = self.dataplane().map_err(error)?;
        // A slot given to a new rule may still hold an old rule's counts.
        for slot in &plan.fresh_slots {
            dataplane
                .reset_rule_stats(*slot)
                .map_err(|e| error(chain(&e)))?;
        }
        let summary = dataplane
            .write_generation(&GenerationMaps::from(plan))
            .map_err(|e| error(chain(&e)))?;
        if let Some(cleanup) = summary.cleanup_error {
            tracing::warn!("generation {} runs, but the previous one's entries stay until the next apply: {cleanup}", plan.generation);
        }
        self.learn(plan);
        Ok(())
    }

    fn adopt(&mut self, plan: &compile::Compiled) -> Result<(), EnforceError> {
        // Taken over as it is only when the pinned generation guards the
        // interfaces by the indexes they have now: one deleted and made
        // again under its name while the daemon was away would otherwise
        // pass unguarded.
        if let Some(dataplane) = &self.dataplane {
            let running = dataplane
                .read_enis(generation_slot(plan.generation))
                .map_err(|e| EnforceError::Read(chain(&e)))?;
            let mut wanted = plan.enis.clone();
            wanted.sort_by_key(|(key, _)| *key);
            if running != wanted {
                return Err(EnforceError::Load(format!(
                    "the pinned generation {} guards other interface indexes than its \
                     document's interfaces have now",
                    plan.generation
                )));
            }
        }
        self.learn(plan);
        Ok(())
    }

    fn status(&self) -> Result<DataplaneStatus, EnforceError> {
        let Some(dataplane) = &self.dataplane else {
            // Detached: nothing attached, nothing counted.
            return Ok(DataplaneStatus::default());
        };
        let read = |e: crate::dataplane::DataplaneError| EnforceError::Read(chain(&e));
        let mut hooks: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for a in dataplane.attachments() {
            let xdp = match a.xdp_mode {
                aya::programs::XdpMode::Skb => "xdp (generic)",
                _ => "xdp",
            };
            hooks.insert(a.ifname, vec![xdp.to_owned(), "tc".to_owned()]);
        }
        for ifname in self.pinned_interfaces() {
            hooks
                .entry(ifname)
                .or_insert_with(|| vec!["xdp (pinned)".to_owned(), "tc (pinned)".to_owned()]);
        }
        let stats = dataplane.stats().map_err(read)?;
        Ok(DataplaneStatus {
            hooks,
            conntrack: MapFill {
                used: dataplane.conntrack_count().map_err(read)? as u64,
                size: u64::from(DEFAULT_CT_ENTRIES),
            },
            stats: STAT_LABELS
                .iter()
                .map(|(index, label)| StatCounter {
                    name: (*label).to_owned(),
                    packets: stats.get(*index as usize).copied().unwrap_or(0),
                    drop: stat_is_drop(*index),
                })
                .collect(),
        })
    }

    fn counters(&self) -> Result<Vec<RuleCounter>, EnforceError> {
        let Some(dataplane) = &self.dataplane else {
            return Ok(Vec::new());
        };
        let counted: BTreeMap<u32, _> = dataplane
            .all_rule_stats()
            .map_err(|e| EnforceError::Read(chain(&e)))?
            .into_iter()
            .collect();
        Ok(self
            .reasons
            .iter()
            .map(|(slot, reason)| {
                let c = counted.get(slot).copied().unwrap_or_default();
                RuleCounter {
                    rule: reason.clone(),
                    packets: c.packets,
                    bytes: c.bytes,
                    last_hit: c
                        .last_hit
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_secs()),
                }
            })
            .collect())
    }

    fn tracked(
        &self,
        interface: &str,
        _direction: Direction,
        packet: &Packet,
    ) -> Result<Option<TrackedConnection>, EnforceError> {
        let Some(dataplane) = &self.dataplane else {
            return Ok(None);
        };
        let Some(ifindex) = ifindex_of(interface) else {
            return Ok(None);
        };
        let key = ct_key(ifindex, packet);
        let Some(entry): Option<CtEntry> = dataplane
            .lookup_conntrack(&key)
            .map_err(|e| EnforceError::Read(chain(&e)))?
        else {
            return Ok(None);
        };
        // An entry idle past its timeout counts as absent (the data plane
        // deletes it on the next packet).
        if let Some(config) = &self.config {
            let now = KtimeClock::now();
            let last_seen = now.to_system_time(entry.last_seen_ns);
            let idle = last_seen
                .and_then(|t| t.elapsed().ok())
                .map_or(0, |d| d.as_nanos() as u64);
            if idle > timeout_ns(config, entry.state) {
                return Ok(None);
            }
        }
        Ok(Some(TrackedConnection {
            state: state_name(entry.state).to_owned(),
            rule: self
                .reasons
                .get(&entry.rule_slot)
                .cloned()
                .unwrap_or_else(|| format!("slot {}", entry.rule_slot)),
            generation: entry.generation,
            packets: entry.packets.iter().sum(),
            bytes: entry.bytes.iter().sum(),
        }))
    }

    fn detach_all(&mut self) -> Result<Vec<String>, EnforceError> {
        let mut interfaces: Vec<String> = self.attached().into_iter().collect();
        let error = |e: crate::dataplane::DataplaneError| EnforceError::Detach {
            interface: "every interface".to_owned(),
            message: chain(&e),
        };
        match self.dataplane.take() {
            Some(dataplane) => {
                dataplane.destroy().map_err(error)?;
            }
            None => {
                pins::detach_all_pinned(&self.pin_dir).map_err(error)?;
            }
        }
        self.reasons.clear();
        self.config = None;
        interfaces.dedup();
        Ok(interfaces)
    }

    fn take_flow_events(&mut self) -> Option<aya::maps::Map> {
        self.dataplane
            .as_mut()?
            .take_map(filter_common::names::EVENTS)
    }

    fn slot_reasons(&self) -> BTreeMap<u32, String> {
        self.reasons.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_keys_meet_from_both_directions() {
        let p = Packet {
            src: std::net::IpAddr::from([198, 51, 100, 7]),
            dst: std::net::IpAddr::from([192, 0, 2, 10]),
            proto: 6,
            src_port: 40000,
            dst_port: 80,
            icmp_type: 0,
        };
        let reply = Packet {
            src: p.dst,
            dst: p.src,
            src_port: p.dst_port,
            dst_port: p.src_port,
            ..p
        };
        let (a, b) = (ct_key(3, &p), ct_key(3, &reply));
        assert_eq!(a, b);
        assert_eq!(a.addr_a[..4], [192, 0, 2, 10]);
        assert_eq!((a.port_a, a.port_b), (80, 40000));
        assert_eq!(a.family, FAMILY_V4);
    }
}
