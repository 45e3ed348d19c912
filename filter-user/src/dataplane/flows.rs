//! What the data plane tells the flow log (SPEC §7): the pinned maps it
//! counts flows in, read a whole map per system call batch
//! ([`scan_flow_maps`]), and the events of its ring buffer
//! ([`FlowEvents`]).
use std::{
    io,
    mem::size_of,
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
    path::Path,
};

use aya::{
    maps::{HashMap, Map, MapData, MapError, RingBuf},
    Pod,
};
use filter_common::{
    names, CtEntry, CtEvent, CtKey, EniConfig, EniKey, FlowLoss, RejectEntry, RejectEvent,
    RejectKey, FLOW_EV_CT_CUT, FLOW_EV_CT_END, FLOW_EV_CT_NEW, FLOW_EV_REJECT_NEW,
};

use super::sys::{for_each_batched, percpu_array_lookup_batch, percpu_copy_size};
use crate::clock::ktime_now;

/// The flow-counting maps as one scan read them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowScan {
    /// The data plane's clock ([`ktime_now`]) when the scan started: an
    /// incarnation created before and not seen was gone before the scan
    /// ended.
    pub started_ns: u64,
    pub ct: Vec<(CtKey, CtEntry)>,
    pub rejects: Vec<(RejectKey, RejectEntry)>,
    /// `FILTER_FLOWLOSS`, summed over CPUs, by ENI index.
    pub loss: Vec<(u32, FlowLoss)>,
    /// (interface index, ENI index) of every `FILTER_ENIS` entry.
    pub enis: Vec<(u32, u32)>,
}

/// A pinned map, or `None` when it is not pinned (the data plane was
/// detached, or not loaded yet).
fn open(pin_dir: &Path, name: &str) -> io::Result<Option<MapData>> {
    match MapData::from_pin(pin_dir.join(name)) {
        Ok(m) => Ok(Some(m)),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.kind() == io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(e) => Err(io::Error::other(format!("opening pinned {name}: {e}"))),
    }
}

/// Reads the maps the flow log needs from `pin_dir`: `None` when the data
/// plane is not pinned there.
pub fn scan_flow_maps(pin_dir: &Path) -> io::Result<Option<FlowScan>> {
    let started_ns = ktime_now();
    let (Some(ct), Some(rejects), Some(loss), Some(enis)) = (
        open(pin_dir, names::CT)?,
        open(pin_dir, names::REJECTS)?,
        open(pin_dir, names::FLOWLOSS)?,
        open(pin_dir, names::ENIS)?,
    ) else {
        return Ok(None);
    };
    let mut scan = FlowScan {
        started_ns,
        ..FlowScan::default()
    };
    read_hash::<CtKey, CtEntry>(ct, names::CT, |k, v| scan.ct.push((k, v)))?;
    read_hash::<RejectKey, RejectEntry>(rejects, names::REJECTS, |k, v| scan.rejects.push((k, v)))?;
    let ncpu = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    percpu_array_lookup_batch(
        loss.fd().as_fd(),
        size_of::<FlowLoss>(),
        ncpu,
        |index, cpus| {
            let mut total = FlowLoss::default();
            for cpu in cpus.chunks_exact(percpu_copy_size(size_of::<FlowLoss>())) {
                // SAFETY: each chunk holds one `FlowLoss` (plain integers).
                let v: FlowLoss = unsafe { std::ptr::read_unaligned(cpu.as_ptr().cast()) };
                total.events = total.events.wrapping_add(v.events);
                total.packets = total.packets.wrapping_add(v.packets);
                total.rejected = total.rejected.wrapping_add(v.rejected);
            }
            if total != FlowLoss::default() {
                scan.loss.push((index, total));
            }
        },
    )?;
    let enis: HashMap<MapData, EniKey, EniConfig> =
        HashMap::try_from(Map::HashMap(enis)).map_err(io::Error::other)?;
    for item in enis.iter() {
        let (k, v) = item.map_err(io::Error::other)?;
        scan.enis.push((k.ifindex, v.eni_index));
    }
    Ok(Some(scan))
}

/// Every entry of a hash map: one `BPF_MAP_LOOKUP_BATCH` per few thousand
/// entries, or entry by entry where batches are refused.
fn read_hash<K: Pod, V: Pod>(map: MapData, name: &str, mut f: impl FnMut(K, V)) -> io::Result<()> {
    let mut got = Vec::new();
    match hash_batch::<K, V>(map.fd().as_fd(), |k, v| got.push((k, v))) {
        Ok(()) => {
            for (k, v) in got {
                f(k, v);
            }
            Ok(())
        }
        Err(e) => {
            tracing::debug!("batched read of {name} failed ({e}); reading entry by entry");
            // `HashMap` takes LRU hash maps too.
            let typed: HashMap<MapData, K, V> =
                HashMap::try_from(Map::HashMap(map)).map_err(io::Error::other)?;
            for item in typed.iter() {
                let (k, v) = item.map_err(io::Error::other)?;
                f(k, v);
            }
            Ok(())
        }
    }
}

/// Every entry of a (non per-CPU) hash map with `BPF_MAP_LOOKUP_BATCH`
/// (Linux 5.6).
fn hash_batch<K: Pod, V: Pod>(fd: BorrowedFd<'_>, mut f: impl FnMut(K, V)) -> io::Result<()> {
    for_each_batched(fd, size_of::<K>(), size_of::<V>(), |k, v| {
        // SAFETY: the kernel wrote a key and a value of exactly these sizes;
        // both types are plain old data (`Pod`).
        let (k, v) = unsafe {
            (
                std::ptr::read_unaligned(k.as_ptr().cast::<K>()),
                std::ptr::read_unaligned(v.as_ptr().cast::<V>()),
            )
        };
        f(k, v);
    })
}

/// The data plane's event ring buffer (`FILTER_EVENTS`). Readable (for
/// `AsyncFd`) when it holds events.
pub struct FlowEvents {
    ring: RingBuf<MapData>,
}

impl FlowEvents {
    pub(super) fn new(map: Map) -> Result<Self, MapError> {
        Ok(Self {
            ring: RingBuf::try_from(map)?,
        })
    }

    /// The next event without waiting: `None` when the ring is empty,
    /// `Some(None)` for a record this build does not know (skip it).
    pub fn take(&mut self) -> Option<Option<Event>> {
        let item = self.ring.next()?;
        Some(decode(&item))
    }
}

impl AsRawFd for FlowEvents {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

/// One ring-buffer event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    CtNew(CtKey, CtEntry),
    /// An entry the data plane removed as idle, with its final counts.
    CtEnd(CtKey, CtEntry),
    /// An entry revalidation cut (the running generation would drop the
    /// connection), with its final counts.
    CtCut(CtKey, CtEntry),
    RejectNew(RejectKey, RejectEntry),
}

/// Decodes one ring-buffer record; `None` for a record this build does not
/// know (it is skipped).
pub fn decode(bytes: &[u8]) -> Option<Event> {
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    match kind {
        FLOW_EV_CT_NEW | FLOW_EV_CT_END | FLOW_EV_CT_CUT if bytes.len() >= size_of::<CtEvent>() => {
            // SAFETY: at least `size_of::<CtEvent>()` bytes, plain data.
            let ev: CtEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            Some(match kind {
                FLOW_EV_CT_NEW => Event::CtNew(ev.key, ev.entry),
                FLOW_EV_CT_CUT => Event::CtCut(ev.key, ev.entry),
                _ => Event::CtEnd(ev.key, ev.entry),
            })
        }
        FLOW_EV_REJECT_NEW if bytes.len() >= size_of::<RejectEvent>() => {
            // SAFETY: as above.
            let ev: RejectEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            Some(Event::RejectNew(ev.key, ev.entry))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain-data value.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn events_decode_by_kind() {
        let key = CtKey {
            ifindex: 3,
            ..CtKey::default()
        };
        let entry = CtEntry {
            packets: [4, 5],
            ..CtEntry::default()
        };
        let mut ev = CtEvent {
            kind: FLOW_EV_CT_NEW,
            key,
            entry,
            ..CtEvent::default()
        };
        assert_eq!(decode(&bytes(&ev)), Some(Event::CtNew(key, entry)));
        ev.kind = FLOW_EV_CT_CUT;
        assert_eq!(decode(&bytes(&ev)), Some(Event::CtCut(key, entry)));
        ev.kind = FLOW_EV_CT_END;
        assert_eq!(decode(&bytes(&ev)), Some(Event::CtEnd(key, entry)));
        // Cut short, or unknown.
        assert_eq!(decode(&bytes(&ev)[..100]), None);
        ev.kind = 99;
        assert_eq!(decode(&bytes(&ev)), None);
        let rk = RejectKey {
            dport: 23,
            ..RejectKey::default()
        };
        let re = RejectEntry {
            packets: 1,
            ..RejectEntry::default()
        };
        let rev = RejectEvent {
            kind: FLOW_EV_REJECT_NEW,
            key: rk,
            entry: re,
            ..RejectEvent::default()
        };
        assert_eq!(decode(&bytes(&rev)), Some(Event::RejectNew(rk, re)));
        assert_eq!(decode(&[1, 0]), None);
    }
}
