//! Growing `FILTER_BOUNDS` when a generation needs more room than it has
//! (ARCHITECTURE.md, "Growing the bounds").
use std::os::fd::AsFd as _;

use aya::maps::IterableMap as _;
use filter_common::{names, Run, MAX_BOUNDS};

use super::{
    error::{DataplaneError, Result},
    generation::batch_error,
    load_programs,
    maps::Maps,
    open, pins, sys, Attachment, Bounds, Dataplane,
};

impl Dataplane {
    /// Replaces `FILTER_BOUNDS` with a larger one that holds the running
    /// generation's ranges and leaves room for `len` more beside them
    /// (ARCHITECTURE.md, "Growing the bounds"). The programs name the
    /// array they were loaded with, so they are loaded again:
    ///
    /// 1. a new array of the next power of two that holds the running
    ///    generation and two of `len` (at least twice the old), and this
    ///    build's programs loaded on it, every other map adopted from its
    ///    pin: conntrack, counters and the running generation's other
    ///    entries stay as they are;
    /// 2. the running generation's ranges copied to the same indexes;
    /// 3. the new array pinned in place of the old: from here a restarted
    ///    daemon adopts it;
    /// 4. every link moved to the new programs (`BPF_LINK_UPDATE`, one
    ///    atomic swap per link). A packet meets either the old programs and
    ///    array or the new ones, and both hold the running generation.
    ///
    /// The old array goes with the last link on the old programs. A link
    /// that fails to move keeps the old programs, which is right only while
    /// the running generation runs: no generation is written until it has
    /// moved ([`Self::move_links`]).
    pub(super) fn grow_bounds(&mut self, len: u32) -> Result<()> {
        let running = self.maps.running_bounds()?;
        let old = self.maps.bounds_capacity;
        let full = |why| DataplaneError::BoundsFull {
            needed: len,
            running,
            capacity: old,
            why,
        };
        let Some(dir) = &self.pins else {
            return Err(full(
                "growing it needs pinned links, and this data plane has no pin directory",
            ));
        };
        let end = u64::from(running.start) + u64::from(running.len);
        if end + u64::from(len) > u64::from(MAX_BOUNDS) {
            return Err(full("it would pass its largest size (MAX_BOUNDS)"));
        }
        // Room for one more generation as large, so that the next apply
        // does not grow it again.
        let capacity = (end + 2 * u64::from(len))
            .min(u64::from(MAX_BOUNDS))
            .next_power_of_two()
            .max(u64::from(old) * 2)
            .min(u64::from(MAX_BOUNDS)) as u32;
        let started = std::time::Instant::now();
        let ct_entries = self.maps.conntrack_capacity()?;
        let (mut ebpf, maps) = open(self.object, Some(dir), ct_entries, Bounds::Grown(capacity))?;
        copy_bounds(&self.maps, &maps, running)?;
        load_programs(&mut ebpf, Some(dir))?;
        // Last of what may fail: until here a failed growth leaves the old
        // array pinned and in use, and a restart adopts it.
        pins::pin_over(maps.bounds.map(), &dir.root().join(names::BOUNDS))?;
        let moving: Vec<(String, Attachment)> = std::mem::take(&mut self.links)
            .into_iter()
            .map(|(ifname, held)| (ifname, held.info))
            .collect();
        self.maps = Maps {
            known_empty: self.maps.known_empty.take(),
            written: std::mem::take(&mut self.maps.written),
            ..maps
        };
        self.ebpf = ebpf;
        self.unmoved = moving;
        tracing::info!(
            "FILTER_BOUNDS grew from {old} to {capacity} entries for {len} more ranges \
             ({} ms)",
            started.elapsed().as_millis()
        );
        self.move_links()
    }

    /// Moves the links left on the programs of the previous `FILTER_BOUNDS`
    /// to this one's ([`Self::grow_bounds`]). An interface that is gone
    /// took its links with it.
    pub(super) fn move_links(&mut self) -> Result<()> {
        let mut failed = None;
        for (ifname, before) in std::mem::take(&mut self.unmoved) {
            match self.attach_with(&ifname, before.ingress) {
                Ok(_) => {
                    if let Some(held) = self.links.get_mut(&ifname) {
                        held.info = before;
                    }
                }
                Err(DataplaneError::UnknownInterface(_)) => {}
                Err(e) => {
                    tracing::error!(
                        "{ifname}: moving to the programs of the grown FILTER_BOUNDS failed: {e}"
                    );
                    failed.get_or_insert(e);
                    self.unmoved.push((ifname, before));
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

/// Copies the running generation's ranges (`running`) from one
/// `FILTER_BOUNDS` to another, at the same indexes, a batch at a time.
fn copy_bounds(from: &Maps, to: &Maps, running: Run) -> Result<()> {
    const CHUNK: u32 = 1 << 16;
    let end = running.start + running.len;
    let mut first = running.start;
    let mut chunk: Vec<filter_common::Bound> = Vec::with_capacity(CHUNK as usize);
    while first < end {
        let last = end.min(first + CHUNK);
        chunk.clear();
        sys::array_for_each_in(from.bounds.map().fd().as_fd(), first..last, |_, b| {
            chunk.push(b)
        })
        .map_err(|e| DataplaneError::map(names::BOUNDS, "reading", batch_error(e)))?;
        sys::array_update_batch(to.bounds.map().fd().as_fd(), first, &chunk).map_err(|e| {
            DataplaneError::map(
                names::BOUNDS,
                "copying the running generation into the grown one",
                batch_error(e),
            )
        })?;
        first = last;
    }
    Ok(())
}
