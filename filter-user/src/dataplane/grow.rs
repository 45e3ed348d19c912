//! Growing `FILTER_BOUNDS` and `FILTER_CELLS` when a generation does not
//! fit beside the running one (ARCHITECTURE.md, "Growing the maps"): how
//! large they become, and how the programs move to them.
use std::os::fd::AsFd as _;

use aya::maps::IterableMap as _;
use filter_common::{generation_slot, names, GenConfig, MAX_BOUNDS, MAX_CELLS};

use super::{
    error::{DataplaneError, Result},
    generation::{batch_error, cells_fit, place, Need},
    load_programs,
    maps::Maps,
    open, pins, sys, Attachment, Dataplane, MapSizes, Sizing,
};

/// A size for a map that keeps `kept` entries of the running generation
/// and must take `need` more: room for two generations of `need` (so the
/// next apply does not grow it again), a power of two, at least twice
/// `now`, at most `max`.
fn grown(kept: u32, need: u32, now: u32, max: u32) -> u32 {
    let wanted = u64::from(kept) + 2 * u64::from(need);
    let max = u64::from(max);
    let size = wanted
        .min(max)
        .next_power_of_two()
        .max(2 * u64::from(now))
        .min(max);
    u32::try_from(size).unwrap_or(u32::MAX)
}

impl Maps {
    /// The sizes the maps must grow to before a generation of `need` is
    /// written beside the running one (`running`); None when it fits.
    fn sizes_for(&self, running: &GenConfig, need: Need) -> Option<MapSizes> {
        let now = self.sizes;
        let bounds = place(running.bounds, need.bounds, now.bounds).is_none();
        let cells = !cells_fit(running.cells, need.cells, now.cells);
        (bounds || cells).then(|| MapSizes {
            bounds: if bounds {
                let end = running.bounds.start.saturating_add(running.bounds.len);
                grown(end, need.bounds, now.bounds, MAX_BOUNDS)
            } else {
                now.bounds
            },
            cells: if cells {
                grown(running.cells, need.cells, now.cells, MAX_CELLS)
            } else {
                now.cells
            },
        })
    }
}

impl Dataplane {
    /// Makes room for a generation of `need` beside the running one, if
    /// the maps lack it: new `FILTER_BOUNDS` and `FILTER_CELLS` that hold
    /// the running generation's entries and `need` more. The programs name
    /// the maps they were loaded with, so they are loaded again:
    ///
    /// 1. the new maps, at the sizes [`grown`] gives the ones that lack
    ///    room (the others keep theirs), and this build's programs loaded
    ///    on them, every other map adopted from its pin: conntrack,
    ///    counters and the running generation's other entries stay as they
    ///    are;
    /// 2. the running generation's ranges copied to the same indexes, its
    ///    cells to the same keys;
    /// 3. the new maps pinned in place of the old: from here a restarted
    ///    daemon adopts them;
    /// 4. every link moved to the new programs (`BPF_LINK_UPDATE`, one
    ///    atomic swap per link). A packet meets either the old programs and
    ///    maps or the new ones, and both hold the running generation.
    ///
    /// The old maps go with the last link on the old programs. A link that
    /// fails to move keeps the old programs, which is right only while the
    /// running generation runs: no generation is written until it has
    /// moved ([`Self::move_links`]).
    pub(super) fn grow_for(&mut self, need: Need) -> Result<()> {
        let running = self.maps.running_config()?;
        let Some(sizes) = self.maps.sizes_for(&running, need) else {
            return Ok(());
        };
        let old = self.maps.sizes;
        let full = |bounds: bool, why| {
            let (map, needed, capacity) = if bounds {
                (names::BOUNDS, need.bounds, old.bounds)
            } else {
                (names::CELLS, need.cells, old.cells)
            };
            DataplaneError::Full {
                map,
                needed,
                capacity,
                why,
            }
        };
        let Some(dir) = &self.pins else {
            // The first map that lacks room names the error.
            return Err(full(
                sizes.bounds != old.bounds,
                "growing it needs pinned links, and this data plane has no pin directory",
            ));
        };
        if place(running.bounds, need.bounds, MAX_BOUNDS).is_none() {
            return Err(full(true, "it would pass its largest size"));
        }
        if !cells_fit(running.cells, need.cells, MAX_CELLS) {
            return Err(full(false, "it would pass its largest size"));
        }
        let started = std::time::Instant::now();
        let ct_entries = self.maps.conntrack_capacity()?;
        let (mut ebpf, mut maps) = open(self.object, Some(dir), ct_entries, Sizing::Grown(sizes))?;
        copy_bounds(&self.maps, &maps, &running)?;
        copy_cells(&self.maps, &mut maps, self.maps.active_generation()?)?;
        load_programs(&mut ebpf, Some(dir))?;
        // Last of what may fail: until here a failed growth leaves the old
        // maps pinned and in use, and a restart adopts them.
        pins::pin_over(maps.bounds.map(), &dir.root().join(names::BOUNDS))?;
        pins::pin_over(maps.cells.map(), &dir.root().join(names::CELLS))?;
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
            "maps grew for {} ranges and {} cells: {} {} → {}, {} {} → {} ({} ms)",
            need.bounds,
            need.cells,
            names::BOUNDS,
            old.bounds,
            sizes.bounds,
            names::CELLS,
            old.cells,
            sizes.cells,
            started.elapsed().as_millis()
        );
        self.move_links()
    }

    /// Moves the links left on the programs of the maps before they grew
    /// to this one's ([`Self::grow_for`]). An interface that is gone took
    /// its links with it.
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
                        "{ifname}: moving to the programs of the grown maps failed: {e}"
                    );
                    failed.get_or_insert(e);
                    self.unmoved.push((ifname, before));
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

/// Copies the running generation's ranges from one `FILTER_BOUNDS` to
/// another, at the same indexes (its runs name them), a batch at a time.
fn copy_bounds(from: &Maps, to: &Maps, running: &GenConfig) -> Result<()> {
    const CHUNK: u32 = 1 << 16;
    let end = running.bounds.start + running.bounds.len;
    let mut first = running.bounds.start;
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

/// Copies the running generation's cells (generation `active`, none
/// before the first) from one `FILTER_CELLS` to another.
fn copy_cells(from: &Maps, to: &mut Maps, active: u32) -> Result<()> {
    if active == 0 {
        return Ok(());
    }
    for (key, rule_set) in from.read_cells(generation_slot(active))? {
        to.cells.insert(key, rule_set, 0).map_err(|e| {
            DataplaneError::map(
                names::CELLS,
                "copying the running generation into the grown one",
                e,
            )
        })?;
    }
    Ok(())
}
