//! The flows the collector knows and the records of one capture window.
//!
//! Pure bookkeeping, no kernel and no clock, so every case is unit-tested:
//!
//! - A flow *incarnation* is a map key and the time its entry was created
//!   (a key may be reused: an expired connection is replaced by a new one).
//! - Observations come from ring-buffer events (an entry created, or its
//!   final counts when the data plane removed it) and from scans of the
//!   maps. Counters only grow within an incarnation, so observations merge
//!   by maximum and their order does not matter.
//! - At a window boundary each incarnation reports what it counted since
//!   the last boundary (per direction for a connection), and records with
//!   the same (ENI, direction, protocol, endpoints, action) are added up:
//!   one record each per window.
//! - An incarnation the data plane removed (an event said so) is reported
//!   once more and retired. One that vanished from the maps without an
//!   event (two scans in a row missed it) was evicted from a full table
//!   (or its event was lost): its last known counts are reported. For a
//!   connection a `SKIPDATA` record says its counts may be short; for a
//!   reject flow, [`RejectBook`] finds exactly how many packets were not
//!   read, from the data plane's total.
use std::{
    collections::{BTreeMap, HashMap},
    hash::{Hash, Hasher},
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use filter_common::{
    CtEntry, CtKey, FlowLoss, RejectEntry, RejectKey, ACTION_ACCEPT, DIR_EGRESS, DIR_INGRESS,
    FAMILY_V4, PROTO_TCP, PROTO_UDP, RULE_SLOT_NONE,
};

use super::{
    catalog::{Catalog, EniMeta},
    reported::{EniAccount, FlowAccount, Reported},
};
use crate::{
    api::{FlowAction, FlowRecord, LogStatus, SkipReason, FLOW_RECORD_VERSION},
    dataplane::FlowScan,
    ruleset::Direction,
};

/// Which map an incarnation lives in, and its key there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Key {
    Ct(CtKey),
    Reject(RejectKey),
}

/// Tag of [`Key::Ct`] in [`Key::tagged_bytes`].
pub(super) const TAG_CT: u8 = 0;
/// Tag of [`Key::Reject`].
pub(super) const TAG_REJECT: u8 = 1;

impl Key {
    /// Which map (`TAG_*`) and the key's bytes: what a hash and the saved
    /// report (`reported.rs`) take.
    pub(super) fn tagged_bytes(&self) -> (u8, &[u8]) {
        fn bytes<T: aya::Pod>(v: &T) -> &[u8] {
            // SAFETY: `Pod` types are plain integers and byte arrays with
            // every padding byte an explicit field, so all their bytes are
            // initialised.
            unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
        }
        match self {
            Key::Ct(k) => (TAG_CT, bytes(k)),
            Key::Reject(k) => (TAG_REJECT, bytes(k)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Id {
    key: Key,
    created_ns: u64,
}

/// One `write` of the key's bytes instead of one per field: the collector
/// hashes an `Id` per event (SipHash stays: the keys come from the network).
impl Hash for Id {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (tag, bytes) = self.key.tagged_bytes();
        state.write_u8(tag);
        state.write(bytes);
        state.write_u64(self.created_ns);
    }
}

/// What the collector knows of one incarnation.
#[derive(Clone, Copy, Debug, Default)]
struct Flow {
    /// The highest counts observed, per direction (a reject flow uses 0).
    packets: [u64; 2],
    bytes: [u64; 2],
    tcp_flags: [u8; 2],
    last_ns: u64,
    /// From the observation with the latest `last_ns`: the rule and the
    /// generation that decided (revalidation may change them).
    rule_slot: u32,
    generation: u32,
    orig_dir: u8,
    orig_src_is_a: bool,
    /// What earlier windows reported.
    reported_packets: [u64; 2],
    reported_bytes: [u64; 2],
    /// The data plane removed it (an event carried its final counts).
    ended: bool,
    /// Reported after it ended; kept until a scan no longer sees it, so a
    /// scan racing the removal cannot make it new again.
    retired: bool,
    /// Consecutive scans that did not see it. A batched walk of a hash
    /// map that changes meanwhile can skip entries, so one miss is not
    /// proof: forgetting it then would count it again when the next scan
    /// sees it.
    missed_scans: u8,
    /// It left the maps without an event (two scans missed it): report
    /// and forget.
    vanished: bool,
    /// The last scan that saw it.
    seen_scan: u64,
    /// Packets events showed that no scan has seen yet: a flow created
    /// after the walk passed its bucket, maybe after the total was read.
    unscanned: u64,
}

/// A capture window, in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: u64,
    pub end: u64,
}

/// Losses waiting for the next window's `SKIPDATA` records, by interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Lost {
    events: u64,
    packets: u64,
    evicted: u64,
    /// Scans of the maps that failed.
    failed_scans: u64,
}

/// One interface's `FILTER_REJECTS` packets: what the collector read in
/// its entries against what the data plane counted into them
/// (`FlowLoss::rejected`). The difference is what entries the LRU evicted
/// counted after their last reading: lost, exactly.
///
/// The total is taken two scans late: a packet it counted was in its entry
/// when each of the next two scans walked the map, so only an entry gone
/// (or missed by both walks, as [`VANISHED_AFTER_SCANS`] assumes) makes a
/// difference. Both start at their first reading, so what was lost before
/// is not this collector's to report.
///
/// That first reading must not count a packet the total lacks: the total
/// is read after the walk, and a creation event taken in with the scan
/// may come from a flow made after it (FLOWLOGS.md, "How the counts
/// stay exact"). Packets
/// only events showed are left out of it (`late`); one counted during the
/// walk but missed by it is then never claimed, the one way this errs.
#[derive(Clone, Copy, Debug, Default)]
struct RejectBook {
    /// Packets read in the interface's reject flows: the growth of their
    /// counters, summed over incarnations.
    observed: u64,
    /// (total, observed) at the first reading of the total.
    zero: Option<(u64, u64)>,
    /// The totals the last two scans read, newest first.
    recent: [u64; 2],
    /// Packets already reported lost.
    claimed: u64,
    /// The ENI index whose total this is.
    eni_index: u32,
}

impl RejectBook {
    /// A book that starts where a previous daemon's ended: `accounted`
    /// packets of the total were in its records or `packets_lost` notes.
    fn restored(eni_index: u32, accounted: u64) -> Self {
        RejectBook {
            zero: Some((accounted, 0)),
            recent: [accounted; 2],
            eni_index,
            ..RejectBook::default()
        }
    }

    /// How much of the total records and `packets_lost` accounted for;
    /// `None` before the first reading.
    fn accounted(&self) -> Option<u64> {
        let (total0, observed0) = self.zero?;
        Some(total0 + self.observed.saturating_sub(observed0) + self.claimed)
    }

    /// Takes in a scan's total of ENI index `eni_index`, and `late`: the
    /// packets of its flows that only events showed; the packets newly
    /// found lost.
    fn read(&mut self, eni_index: u32, total: u64, late: u64) -> u64 {
        if self.eni_index != eni_index || total < self.recent[0] {
            // Another ENI on this interface, or new maps: another counter,
            // read afresh.
            self.zero = None;
            self.eni_index = eni_index;
        }
        let Some((total0, observed0)) = self.zero else {
            self.zero = Some((total, self.observed.saturating_sub(late)));
            self.claimed = 0;
            self.recent = [total, total];
            return 0;
        };
        let counted = self.recent[1].saturating_sub(total0);
        let seen = self.observed.saturating_sub(observed0);
        self.recent = [total, self.recent[0]];
        // A packet read before its total was (the scan races the data
        // plane) makes `seen` run ahead for a while: the running maximum
        // never reports a packet twice.
        let owed = counted.saturating_sub(seen);
        let new = owed.saturating_sub(self.claimed);
        self.claimed = self.claimed.max(owed);
        new
    }
}

/// The incarnations the collector knows, and the losses of the window.
#[derive(Debug, Default)]
pub struct FlowTable {
    flows: HashMap<Id, Flow>,
    /// Reject packets read and counted, by interface index.
    rejects: HashMap<u32, RejectBook>,
    /// What a previous daemon reported of incarnations not seen yet
    /// ([`FlowTable::restore`]); emptied by the second scan.
    restored: HashMap<Id, FlowAccount>,
    /// Scans since the restore.
    restored_scans: u8,
    scans: u64,
    /// The loss counters as last read; `None` until the first read, which
    /// is the baseline (what was lost before this collector started is not
    /// its to report).
    loss_totals: Option<HashMap<u32, FlowLoss>>,
    /// Loss counted against an ENI index whose interface is unknown yet.
    lost: BTreeMap<u32, Lost>,
    /// Records the flow-log file did not get, by ENI id (with the names
    /// their records gave).
    unwritten: BTreeMap<String, (EniMeta, u64)>,
}

/// How a scan or an event reading was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A scan; incarnations created before `baseline_ns` (the collector's
    /// start) report only what they count from now on.
    FlowScan { baseline_ns: Option<u64> },
    /// A creation event.
    Created,
    /// An event with the final counts of an entry the data plane removed.
    Ended,
}

impl FlowTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many incarnations are known.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Forgets everything, keeping the memory (benchmarks).
    pub fn clear(&mut self) {
        self.flows.clear();
    }

    fn observe(&mut self, id: Id, seen: Flow, origin: Origin) {
        let scan = self.scans;
        let restored = if self.restored.is_empty() {
            None
        } else {
            self.restored.remove(&id)
        };
        let flow = self.flows.entry(id).or_insert_with(|| {
            let mut new = Flow {
                orig_dir: seen.orig_dir,
                orig_src_is_a: seen.orig_src_is_a,
                rule_slot: seen.rule_slot,
                generation: seen.generation,
                ..Flow::default()
            };
            if let Some(r) = restored {
                // A previous daemon reported this much: the rest is ours.
                new.packets = r.packets;
                new.bytes = r.bytes;
                new.reported_packets = r.packets;
                new.reported_bytes = r.bytes;
            } else if let Origin::FlowScan {
                baseline_ns: Some(t),
            } = origin
            {
                if id.created_ns < t {
                    // Counted before this collector started: not ours.
                    new.reported_packets = seen.packets;
                    new.reported_bytes = seen.bytes;
                }
            }
            new
        });
        let grew = seen.packets[0].saturating_sub(flow.packets[0]);
        match origin {
            Origin::FlowScan { .. } => flow.unscanned = 0,
            Origin::Created | Origin::Ended => flow.unscanned += grew,
        }
        for d in 0..2 {
            flow.packets[d] = flow.packets[d].max(seen.packets[d]);
            flow.bytes[d] = flow.bytes[d].max(seen.bytes[d]);
            flow.tcp_flags[d] |= seen.tcp_flags[d];
        }
        if seen.last_ns >= flow.last_ns {
            flow.last_ns = seen.last_ns;
            flow.rule_slot = seen.rule_slot;
            flow.generation = seen.generation;
        }
        match origin {
            Origin::FlowScan { .. } => {
                flow.seen_scan = scan;
                flow.missed_scans = 0;
            }
            Origin::Ended => flow.ended = true,
            Origin::Created => {}
        }
        if let Key::Reject(k) = &id.key {
            self.rejects.entry(k.ifindex).or_default().observed += grew;
        }
    }

    /// A conntrack entry, from an event or a scan.
    pub fn ct(&mut self, key: &CtKey, e: &CtEntry, origin: Origin) {
        let seen = Flow {
            packets: e.packets,
            bytes: e.bytes,
            tcp_flags: e.dir_tcp_flags,
            last_ns: e.last_seen_ns,
            rule_slot: e.rule_slot,
            generation: e.generation,
            orig_dir: e.orig_dir,
            orig_src_is_a: e.orig_src_is_a != 0,
            ..Flow::default()
        };
        let id = Id {
            key: Key::Ct(*key),
            created_ns: e.created_ns,
        };
        self.observe(id, seen, origin);
    }

    /// A `FILTER_REJECTS` entry, from an event or a scan.
    pub fn reject(&mut self, key: &RejectKey, e: &RejectEntry, origin: Origin) {
        let seen = Flow {
            packets: [e.packets, 0],
            bytes: [e.bytes, 0],
            tcp_flags: [e.tcp_flags, 0],
            last_ns: e.last_ns,
            rule_slot: e.rule_slot,
            generation: e.generation,
            orig_dir: key.dir,
            ..Flow::default()
        };
        let id = Id {
            key: Key::Reject(*key),
            created_ns: e.first_ns,
        };
        self.observe(id, seen, origin);
    }

    /// Takes in a scan: every entry, then what vanished, then the loss
    /// counters. Events already in the ring buffer must be taken in before
    /// (an entry the data plane removed before the scan sent its event
    /// first).
    pub fn scan(&mut self, scan: &FlowScan, baseline_ns: Option<u64>, catalog: &mut Catalog) {
        self.scans += 1;
        let origin = Origin::FlowScan { baseline_ns };
        for (k, e) in &scan.ct {
            self.ct(k, e, origin);
        }
        for (k, e) in &scan.rejects {
            self.reject(k, e, origin);
        }
        let now = self.scans;
        let mut evicted: Vec<u32> = Vec::new();
        let mut late: HashMap<u32, u64> = HashMap::new();
        self.flows.retain(|id, flow| {
            if flow.seen_scan == now {
                return true;
            }
            if let Key::Reject(k) = &id.key {
                *late.entry(k.ifindex).or_default() += flow.unscanned;
            }
            if id.created_ns >= scan.started_ns {
                return true;
            }
            if flow.retired {
                // Gone from the kernel as its event said: forget it.
                return false;
            }
            if !flow.ended && !flow.vanished {
                flow.missed_scans = flow.missed_scans.saturating_add(1);
                if flow.missed_scans >= VANISHED_AFTER_SCANS {
                    flow.vanished = true;
                    // A reject flow's unread packets are counted exactly
                    // below (`RejectBook`).
                    if let Key::Ct(k) = &id.key {
                        evicted.push(k.ifindex);
                    }
                }
            }
            true
        });
        // Connections a previous daemon reported that ended while no
        // daemon ran (two scans missed them, as above): their last counts
        // are unknown. A reject flow's are in its interface's total.
        self.restored_scans = self.restored_scans.saturating_add(1);
        if self.restored_scans >= VANISHED_AFTER_SCANS {
            for (id, _) in self.restored.drain() {
                if let Key::Ct(k) = id.key {
                    evicted.push(k.ifindex);
                }
            }
        }
        for ifindex in evicted {
            self.lost.entry(ifindex).or_default().evicted += 1;
        }

        catalog.set_eni_indexes(scan.enis.iter().copied());
        let first = self.loss_totals.is_none();
        let totals = self.loss_totals.get_or_insert_with(HashMap::new);
        for (eni_index, now) in &scan.loss {
            let before = totals.insert(*eni_index, *now).unwrap_or_default();
            if first {
                continue;
            }
            let events = now.events.saturating_sub(before.events);
            let packets = now.packets.saturating_sub(before.packets);
            if events == 0 && packets == 0 {
                continue;
            }
            // An index `FILTER_ENIS` never showed cannot be named: it is
            // reported under the index itself.
            let at = catalog
                .ifindex_of_eni_index(*eni_index)
                .unwrap_or(UNNAMED_ENI_INDEX | *eni_index);
            let lost = self.lost.entry(at).or_default();
            lost.events += events;
            lost.packets += packets;
        }
        // `FILTER_ENIS` names an interface once per generation slot.
        let enis: BTreeMap<u32, u32> = scan.enis.iter().copied().collect();
        let rejected: HashMap<u32, u64> = scan.loss.iter().map(|(i, l)| (*i, l.rejected)).collect();
        for (ifindex, eni_index) in enis {
            let total = rejected.get(&eni_index).copied().unwrap_or(0);
            let late = late.get(&ifindex).copied().unwrap_or(0);
            let unread = self
                .rejects
                .entry(ifindex)
                .or_default()
                .read(eni_index, total, late);
            if unread > 0 {
                self.lost.entry(ifindex).or_default().packets += unread;
            }
        }
    }

    /// A scan of the maps failed: every running ENI's next records may be
    /// short or missing, which its `SKIPDATA` record says (§7: nothing is
    /// lost silently).
    pub fn scan_failed(&mut self, catalog: &Catalog) {
        for (ifindex, _) in catalog.current_enis() {
            self.lost.entry(*ifindex).or_default().failed_scans += 1;
        }
    }

    /// Writing `records` to the flow-log file failed: the next window
    /// counts them per ENI in `SKIPDATA` records.
    pub fn unwritten<'a>(&mut self, records: impl IntoIterator<Item = &'a FlowRecord>) {
        for r in records {
            let (_, n) = self.unwritten.entry(r.eni_id.clone()).or_insert_with(|| {
                let eni = EniMeta {
                    id: r.eni_id.clone(),
                    vswitch_id: r.vswitch_id.clone(),
                    vpc_id: r.vpc_id.clone(),
                };
                (eni, 0)
            });
            *n += 1;
        }
    }

    /// The maps are gone (detached): what was observed is reported at the
    /// next boundary, then everything is forgotten without a `SKIPDATA`
    /// note; new maps start counting from zero.
    pub fn maps_gone(&mut self) {
        self.flows.retain(|_, flow| !flow.retired);
        for flow in self.flows.values_mut() {
            flow.ended = true;
        }
        self.loss_totals = Some(HashMap::new());
        self.rejects.clear();
        self.restored.clear();
    }

    /// What the records so far reported, for the next daemon
    /// ([`Reported`]): call it after [`FlowTable::close`]. Incarnations the
    /// data plane removed are left out (they will not be seen again).
    pub fn reported(&self) -> Reported {
        let enis = self
            .rejects
            .iter()
            .filter_map(|(ifindex, book)| {
                Some(EniAccount {
                    ifindex: *ifindex,
                    eni_index: book.eni_index,
                    accounted: book.accounted()?,
                })
            })
            .collect();
        let flows = self
            .flows
            .iter()
            .filter(|(_, f)| !f.ended && !f.vanished)
            .map(|(id, f)| FlowAccount {
                key: id.key,
                created_ns: id.created_ns,
                packets: f.reported_packets,
                bytes: f.reported_bytes,
            })
            .chain(self.restored.values().copied())
            .collect();
        Reported { enis, flows }
    }

    /// Starts where a previous daemon's [`FlowTable::reported`] ended,
    /// before the first scan: incarnations it names report what they
    /// counted since, every other one everything (pass that scan no
    /// baseline), and its ENIs' reject totals go on from what it accounted.
    pub fn restore(&mut self, reported: Reported) {
        for e in reported.enis {
            self.rejects
                .insert(e.ifindex, RejectBook::restored(e.eni_index, e.accounted));
        }
        for f in reported.flows {
            let id = Id {
                key: f.key,
                created_ns: f.created_ns,
            };
            self.restored.insert(id, f);
        }
        self.restored_scans = 0;
    }

    /// Closes `window`: the records of everything counted since the last
    /// boundary, the `SKIPDATA` records of the losses, and `NODATA` for
    /// each running ENI without either. `unix_secs` turns a
    /// `bpf_ktime_get_ns` reading into Unix seconds.
    pub fn close(
        &mut self,
        window: Window,
        catalog: &Catalog,
        unix_secs: &dyn Fn(u64) -> u64,
    ) -> Vec<FlowRecord> {
        let mut agg: BTreeMap<RecordKey, Agg> = BTreeMap::new();
        for (id, flow) in &mut self.flows {
            let dirs = match id.key {
                Key::Ct(_) => 2,
                Key::Reject(_) => 1,
            };
            for d in 0..dirs {
                let packets = flow.packets[d].saturating_sub(flow.reported_packets[d]);
                let bytes = flow.bytes[d].saturating_sub(flow.reported_bytes[d]);
                if packets == 0 && bytes == 0 {
                    continue;
                }
                flow.reported_packets[d] = flow.packets[d];
                flow.reported_bytes[d] = flow.bytes[d];
                let (key, rule) = record_key(id, flow, d, catalog);
                let start = clamp(unix_secs(id.created_ns), window.start, window.end);
                let end = clamp(unix_secs(flow.last_ns), start, window.end);
                let a = agg.entry(key).or_insert(Agg {
                    start,
                    end,
                    last_ns: 0,
                    ..Agg::default()
                });
                a.packets += packets;
                a.bytes += bytes;
                a.tcp_flags |= flow.tcp_flags[d];
                a.start = a.start.min(start);
                a.end = a.end.max(end);
                if flow.last_ns >= a.last_ns {
                    a.last_ns = flow.last_ns;
                    a.rule = rule;
                    a.generation = flow.generation;
                }
            }
        }
        self.flows.retain(|_, flow| {
            if flow.vanished {
                return false;
            }
            if flow.ended {
                flow.retired = true;
            }
            true
        });

        let mut records = Vec::with_capacity(agg.len());
        let mut busy: BTreeMap<u32, ()> = BTreeMap::new();
        for (k, a) in agg {
            busy.insert(k.ifindex, ());
            let eni = eni_meta(catalog, k.ifindex);
            let ports = k.proto == PROTO_TCP || k.proto == PROTO_UDP;
            records.push(FlowRecord {
                version: FLOW_RECORD_VERSION,
                eni_id: eni.id.clone(),
                vswitch_id: eni.vswitch_id.clone(),
                vpc_id: eni.vpc_id.clone(),
                direction: Some(direction(k.dir)),
                srcaddr: Some(ip(k.family, &k.src)),
                srcport: ports.then_some(k.sport),
                dstaddr: Some(ip(k.family, &k.dst)),
                dstport: ports.then_some(k.dport),
                protocol: Some(k.proto),
                packets: Some(a.packets),
                bytes: Some(a.bytes),
                start: a.start,
                end: a.end,
                action: Some(if k.accept {
                    FlowAction::Accept
                } else {
                    FlowAction::Reject
                }),
                log_status: LogStatus::Ok,
                tcp_flags: (k.proto == PROTO_TCP).then_some(a.tcp_flags),
                rule_id: a.rule.map(|r| r.to_string()),
                generation: Some(a.generation),
                skipped: None,
                skip_reason: None,
            });
        }

        for (ifindex, lost) in std::mem::take(&mut self.lost) {
            busy.insert(ifindex, ());
            let eni = if ifindex & UNNAMED_ENI_INDEX != 0 {
                Arc::new(EniMeta {
                    id: format!("eni-index-{}", ifindex & !UNNAMED_ENI_INDEX),
                    ..EniMeta::default()
                })
            } else {
                eni_meta(catalog, ifindex)
            };
            for (n, reason) in [
                (lost.evicted, SkipReason::Evicted),
                (lost.events, SkipReason::EventsLost),
                (lost.packets, SkipReason::PacketsLost),
                (lost.failed_scans, SkipReason::ScanFailed),
            ] {
                if n > 0 {
                    records.push(skipdata(&eni, window, reason, n));
                }
            }
        }
        for (_, (eni, n)) in std::mem::take(&mut self.unwritten) {
            records.push(skipdata(&eni, window, SkipReason::WriteFailed, n));
        }
        for (ifindex, eni) in catalog.current_enis() {
            if !busy.contains_key(ifindex) {
                records.push(FlowRecord {
                    log_status: LogStatus::Nodata,
                    ..bare(eni, window)
                });
            }
        }
        records.sort_by(|a, b| {
            (&a.eni_id, a.log_status, a.direction, a.srcaddr, a.srcport)
                .cmp(&(&b.eni_id, b.log_status, b.direction, b.srcaddr, b.srcport))
                .then(
                    (a.dstaddr, a.dstport, a.protocol, a.action)
                        .cmp(&(b.dstaddr, b.dstport, b.protocol, b.action)),
                )
        });
        records
    }
}

/// How many scans in a row must miss an entry before it counts as gone
/// without an event (evicted).
const VANISHED_AFTER_SCANS: u8 = 2;

/// Marks a loss key that is an ENI index, not an interface index (both are
/// far below this bit).
const UNNAMED_ENI_INDEX: u32 = 1 << 31;

/// One record's identity: (ENI, direction, protocol, endpoints, action).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RecordKey {
    ifindex: u32,
    dir: u8,
    family: u8,
    proto: u8,
    src: [u8; 16],
    sport: u16,
    dst: [u8; 16],
    dport: u16,
    accept: bool,
}

#[derive(Clone, Debug, Default)]
struct Agg {
    packets: u64,
    bytes: u64,
    tcp_flags: u8,
    start: u64,
    end: u64,
    /// The newest contribution names the rule and generation.
    last_ns: u64,
    rule: Option<Arc<str>>,
    generation: u32,
}

/// The record key of direction `d` of an incarnation, and its rule.
fn record_key(id: &Id, flow: &Flow, d: usize, catalog: &Catalog) -> (RecordKey, Option<Arc<str>>) {
    match &id.key {
        Key::Ct(k) => {
            let reply = d == 1;
            let (src, dst, dir) = ct_way(k, flow.orig_src_is_a, flow.orig_dir, reply);
            // The original direction was decided by the admitting rule;
            // the replies by connection tracking.
            let rule = if reply {
                Some(catalog.tracked())
            } else {
                Some(rule_name(catalog, flow.generation, flow.rule_slot))
            };
            (
                RecordKey {
                    ifindex: k.ifindex,
                    dir,
                    family: k.family,
                    proto: k.proto,
                    src: src.0,
                    sport: src.1,
                    dst: dst.0,
                    dport: dst.1,
                    accept: true,
                },
                rule,
            )
        }
        Key::Reject(k) => (
            RecordKey {
                ifindex: k.ifindex,
                dir: k.dir,
                family: k.family,
                proto: k.proto,
                src: k.src,
                sport: k.sport,
                dst: k.dst,
                dport: k.dport,
                accept: k.action == ACTION_ACCEPT,
            },
            (flow.rule_slot != RULE_SLOT_NONE)
                .then(|| rule_name(catalog, flow.generation, flow.rule_slot)),
        ),
    }
}

/// (source, destination, direction) of one way of a connection: the
/// first packet's (`reply` false) or its replies'. An end is (address,
/// port).
pub(super) type End = ([u8; 16], u16);

pub(super) fn ct_way(k: &CtKey, orig_src_is_a: bool, orig_dir: u8, reply: bool) -> (End, End, u8) {
    let a = (k.addr_a, k.port_a);
    let b = (k.addr_b, k.port_b);
    let (orig_src, orig_dst) = if orig_src_is_a { (a, b) } else { (b, a) };
    let dir = match (orig_dir == DIR_EGRESS, reply) {
        (true, false) | (false, true) => DIR_EGRESS,
        _ => DIR_INGRESS,
    };
    if reply {
        (orig_dst, orig_src, dir)
    } else {
        (orig_src, orig_dst, dir)
    }
}

pub(super) fn rule_name(catalog: &Catalog, generation: u32, slot: u32) -> Arc<str> {
    catalog
        .reason(generation, slot)
        .unwrap_or_else(|| Arc::from(format!("slot:{slot}")))
}

pub(super) fn eni_meta(catalog: &Catalog, ifindex: u32) -> Arc<EniMeta> {
    catalog.eni(ifindex).cloned().unwrap_or_else(|| {
        Arc::new(EniMeta {
            id: format!("ifindex-{ifindex}"),
            ..EniMeta::default()
        })
    })
}

fn clamp(v: u64, lo: u64, hi: u64) -> u64 {
    v.max(lo).min(hi.max(lo))
}

pub(super) fn direction(dir: u8) -> Direction {
    if dir == DIR_EGRESS {
        Direction::Egress
    } else {
        Direction::Ingress
    }
}

pub(super) fn ip(family: u8, addr: &[u8; 16]) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*addr))
    }
}

/// A record of `eni` for `window` with no flow fields.
fn bare(eni: &EniMeta, window: Window) -> FlowRecord {
    FlowRecord {
        version: FLOW_RECORD_VERSION,
        eni_id: eni.id.clone(),
        vswitch_id: eni.vswitch_id.clone(),
        vpc_id: eni.vpc_id.clone(),
        direction: None,
        srcaddr: None,
        srcport: None,
        dstaddr: None,
        dstport: None,
        protocol: None,
        packets: None,
        bytes: None,
        start: window.start,
        end: window.end,
        action: None,
        log_status: LogStatus::Nodata,
        tcp_flags: None,
        rule_id: None,
        generation: None,
        skipped: None,
        skip_reason: None,
    }
}

/// A `SKIPDATA` record: `n` things of `reason` lost on `eni` in `window`.
pub fn skipdata(eni: &EniMeta, window: Window, reason: SkipReason, n: u64) -> FlowRecord {
    FlowRecord {
        log_status: LogStatus::Skipdata,
        skipped: Some(n),
        skip_reason: Some(reason),
        ..bare(eni, window)
    }
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
