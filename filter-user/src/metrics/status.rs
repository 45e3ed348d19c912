//! The families read from the daemon's `status` (conntrack fill, the
//! generation, attachments, malformed-packet drops): a snapshot taken at
//! most once per refresh interval ([`super::Exporter`]), encoded as it was
//! last read.
use std::{
    ops::RangeInclusive,
    sync::{Arc, Mutex},
};

use filter_common::{names, STAT_DROP_BAD_TCP_OFF, STAT_DROP_TRUNC_ETH, STAT_LABELS};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

use super::label::Escaped;
use crate::api::{EniState, StatusResult};

/// The `FILTER_STATS` counters that count malformed packets (SPEC §3.2).
const MALFORMED: RangeInclusive<u32> = STAT_DROP_TRUNC_ETH..=STAT_DROP_BAD_TCP_OFF;

/// What one `status` said, in the shape of the families.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub conntrack_entries: u64,
    pub conntrack_capacity: u64,
    /// (map, entries the running generation uses, size) of the maps that
    /// grow to the need.
    pub maps: Vec<(&'static str, u64, u64)>,
    /// 0 while nothing runs.
    pub generation: u32,
    /// (ENI, interface, hook, attached): one per hook in use, or one with
    /// hook `none` for a pending ENI.
    pub interfaces: Vec<(String, String, String, bool)>,
    /// (kind, packets), `kind` the counter's name without `drop_`.
    pub malformed: Vec<(String, u64)>,
}

impl From<&StatusResult> for Snapshot {
    fn from(s: &StatusResult) -> Snapshot {
        let malformed_names: Vec<&str> = STAT_LABELS
            .iter()
            .filter(|(index, _)| MALFORMED.contains(index))
            .map(|(_, name)| *name)
            .collect();
        let mut interfaces = Vec::new();
        for eni in &s.enis {
            if eni.state == EniState::Pending {
                interfaces.push((eni.id.clone(), eni.interface.clone(), "none".into(), false));
                continue;
            }
            for hook in &eni.hooks {
                interfaces.push((eni.id.clone(), eni.interface.clone(), hook.clone(), true));
            }
        }
        Snapshot {
            conntrack_entries: s.conntrack.used,
            conntrack_capacity: s.conntrack.size,
            maps: vec![
                (names::BOUNDS, s.ranges.used, s.ranges.size),
                (names::CELLS, s.cells.used, s.cells.size),
            ],
            generation: s.generation.unwrap_or(0),
            interfaces,
            malformed: s
                .stats
                .iter()
                .filter(|c| malformed_names.contains(&c.name.as_str()))
                .map(|c| {
                    let kind = c.name.strip_prefix("drop_").unwrap_or(&c.name);
                    (kind.to_owned(), c.packets)
                })
                .collect(),
        }
    }
}

/// The collector of the snapshot families; `set` replaces what it encodes.
#[derive(Debug, Default)]
pub struct StatusFamilies {
    snapshot: Mutex<Option<Arc<Snapshot>>>,
}

impl StatusFamilies {
    pub fn set(&self, snapshot: Snapshot) {
        *self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(snapshot));
    }

    fn get(&self) -> Option<Arc<Snapshot>> {
        self.snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for StatusFamilies {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Nothing read yet (the daemon never answered): no families, rather
        // than zeros that would read as facts.
        let Some(s) = self.get() else {
            return Ok(());
        };
        gauge(
            &mut encoder,
            "filter_conntrack_entries",
            "Entries in the connection-tracking table",
            clamp(s.conntrack_entries),
        )?;
        gauge(
            &mut encoder,
            "filter_conntrack_capacity",
            "Size of the connection-tracking table",
            clamp(s.conntrack_capacity),
        )?;
        type Value = fn(&(&str, u64, u64)) -> u64;
        let families: [(&str, &str, Value); 2] = [
            (
                "filter_map_entries",
                "Entries the running generation uses in a map that grows to the need",
                |m| m.1,
            ),
            (
                "filter_map_capacity",
                "Size of a map that grows to the need",
                |m| m.2,
            ),
        ];
        for (name, help, value) in families {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for map in &s.maps {
                let labels = [("map", map.0)];
                ConstGauge::new(clamp(value(map))).encode(family.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut encoder,
            "filter_generation",
            "The enforced generation (0: none)",
            i64::from(s.generation),
        )?;
        let mut family = encoder.encode_descriptor(
            "filter_interface_attached",
            "Whether an ENI's interface is guarded at this hook (1) or pending (0)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (eni, interface, hook, attached) in &s.interfaces {
            let labels = [
                ("eni", Escaped(eni)),
                ("interface", Escaped(interface)),
                ("hook", Escaped(hook)),
            ];
            ConstGauge::new(i64::from(*attached)).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "filter_malformed_packets",
            "Malformed packets dropped by the data plane, by kind (SPEC 3.2)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (kind, packets) in &s.malformed {
            let labels = [("kind", kind.as_str())];
            ConstCounter::new(*packets).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DaemonInfo, EniStatus, MapFill, StatCounter};
    use crate::ruleset::AttachMode;

    #[test]
    fn a_status_becomes_families() {
        let eni = |id: &str, hooks: &[&str]| EniStatus {
            id: id.into(),
            interface: format!("if-{id}"),
            attach_mode: AttachMode::Tap,
            vswitch: "vsw".into(),
            hooks: hooks.iter().map(|h| (*h).to_owned()).collect(),
            state: if hooks.is_empty() {
                EniState::Pending
            } else {
                EniState::Attached
            },
        };
        let stat = |name: &str, packets| StatCounter {
            name: name.into(),
            packets,
            drop: true,
        };
        let status = StatusResult {
            generation: Some(4),
            applied_at: None,
            enis: vec![eni("a", &["tc", "tcx-egress"]), eni("b", &[])],
            conntrack: MapFill { used: 3, size: 100 },
            ranges: MapFill { used: 7, size: 64 },
            cells: MapFill::default(),
            stats: vec![
                stat("drop_bad_ihl", 2),
                stat("drop_nacl", 9),
                stat("drop_truncated_ipv4", 1),
            ],
            daemon: DaemonInfo {
                version: String::new(),
                pid: 1,
                started_at: 0,
                state_dir: String::new(),
                pin_dir: String::new(),
            },
            restore_error: None,
            degraded: true,
            digest: None,
            kernel_generation: None,
        };
        let s = Snapshot::from(&status);
        assert_eq!(s.generation, 4);
        assert_eq!((s.conntrack_entries, s.conntrack_capacity), (3, 100));
        assert_eq!(s.maps[0], (names::BOUNDS, 7, 64));
        assert_eq!(
            s.malformed,
            vec![("bad_ihl".to_owned(), 2), ("truncated_ipv4".to_owned(), 1)]
        );
        assert_eq!(s.interfaces.len(), 3);
        assert_eq!(
            s.interfaces[2],
            ("b".into(), "if-b".into(), "none".into(), false)
        );
    }
}
