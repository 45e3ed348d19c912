//! The daemon's [`Enforcer`] over the eBPF data plane: `crate::compile`
//! builds a generation, [`Dataplane`] attaches, writes and reads.
//!
//! The pin directory is locked by the data plane itself while it is loaded
//! ([`pins`]), so `filterd` locks only the state directory
//! ([`DirLocks::state_only`](crate::daemon::DirLocks::state_only)).
use std::{
    collections::{BTreeMap, BTreeSet},
    error::Error,
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

use filter_common::{
    ct_state_name, generation_slot, stat_is_drop, CtEntry, EniKey, GenConfig, STAT_LABELS,
};

use super::{
    conntrack::kernel_key, hooks, pins, Dataplane, DataplaneError, FlowEvents, GenerationMaps,
    IngressHook, MapSizes,
};
use crate::{
    api::{MapFill, StatCounter, TrackedConnection},
    clock::KtimeClock,
    compile::{self, EniInterface, SlotTable},
    daemon::{Compiled, DataplaneStatus, EnforceError, Enforcer, ReasonCounter},
    eval::conntrack::ConnKey,
    ruleset::{Direction, HookChoice, Ruleset},
    verdict::{Packet, Reason},
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
    /// Counter slot → reason, of the running generation.
    reasons: BTreeMap<u32, Reason>,
    /// Conntrack timeouts of the running generation.
    config: Option<GenConfig>,
    /// The running generation and every ENI's `FILTER_ENIS` value by
    /// interface, pending ones included: what `guard` writes.
    interfaces: Option<(u32, BTreeMap<String, EniInterface>)>,
    /// The connection table's size when the maps are created next (SPEC
    /// §3.1 `conntrack.max_entries`): existing pins keep theirs.
    ct_entries: u32,
    /// The sizes of the maps that grow, when they are created
    /// (`bounds_entries`, `cells_entries`).
    sizes: MapSizes,
}

impl KernelEnforcer {
    /// Loads the programs and adopts (or creates) the pinned maps and links
    /// under `pin_dir`, mounting bpffs first if needed; takes the pin
    /// directory's lock. A connection table this creates has `ct_entries`
    /// entries, the maps that grow to the need `sizes`.
    pub fn load(pin_dir: &Path, ct_entries: u32, sizes: MapSizes) -> Result<Self, EnforceError> {
        let dataplane = Dataplane::load_sized(Some(pin_dir), ct_entries, sizes)
            .map_err(|e| EnforceError::Load(chain(&e)))?;
        Ok(KernelEnforcer {
            pin_dir: pin_dir.to_owned(),
            dataplane: Some(dataplane),
            reasons: BTreeMap::new(),
            config: None,
            interfaces: None,
            ct_entries,
            sizes,
        })
    }

    fn dataplane(&mut self) -> Result<&mut Dataplane, String> {
        if self.dataplane.is_none() {
            let loaded = Dataplane::load_sized(Some(&self.pin_dir), self.ct_entries, self.sizes)
                .map_err(|e| format!("loading the data plane: {}", chain(&e)))?;
            self.dataplane = Some(loaded);
        }
        self.dataplane
            .as_mut()
            .ok_or_else(|| "the data plane is not loaded".to_owned())
    }
}

fn ifindex_of(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// Whether `interface` went away (or was made again, under another index)
/// since it had index `before`: an attach that failed then failed because
/// the interface went, and the ENI is pending like any other whose
/// interface is missing (SPEC §2.4); the link watcher guards it when it
/// comes back. Without this, an apply that met a VM's tap on its way out
/// failed ("No such device") and left the previous generation running.
fn vanished(interface: &str, before: Option<u32>) -> bool {
    let now = ifindex_of(interface);
    now.is_none() || now != before
}

impl KernelEnforcer {
    /// What the running generation's counter slots mean, and its timeouts.
    fn learn(&mut self, plan: &compile::Compiled) {
        self.reasons = plan.slot_reasons.clone();
        self.config = Some(plan.config);
        let interfaces = plan.interfaces.iter().map(|i| (i.name.clone(), i.clone()));
        self.interfaces = Some((plan.generation, interfaces.collect()));
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
        let mut out = pins::pinned_interfaces(&self.pin_dir);
        if let Some(d) = &self.dataplane {
            out.extend(d.attachments().into_iter().map(|a| a.ifname));
        }
        out
    }

    fn compile(
        &self,
        generation: u32,
        ruleset: &Ruleset,
        slots: &SlotTable,
    ) -> Result<Compiled<Self::Plan>, EnforceError> {
        let (mut plan, slots) = compile::compile_from(ruleset, generation, &ifindex_of, slots)
            .map_err(|e| EnforceError::Compile {
                generation,
                message: e.to_string(),
            })?;
        // The prefix tables the layout was made from are the model's input,
        // not the kernel's: freed now, before the warnings' analysis builds
        // its own tables (100k rules: 12 MB).
        plan.drop_prefixes();
        Ok(Compiled { plan, slots })
    }

    fn attach(&mut self, interface: &str, hook: HookChoice) -> Result<bool, EnforceError> {
        let error = |message: String| EnforceError::Attach {
            interface: interface.to_owned(),
            message,
        };
        let dataplane = self.dataplane().map_err(error)?;
        let before = ifindex_of(interface);
        match dataplane.attach_with(interface, hooks::resolve(interface, hook)) {
            Ok(_) => Ok(true),
            // Gone, or not there yet: pending.
            Err(DataplaneError::UnknownInterface(_)) => Ok(false),
            Err(_) if vanished(interface, before) => Ok(false),
            Err(e) => Err(error(chain(&e))),
        }
    }

    fn guard(&mut self, interface: &str) -> Result<bool, EnforceError> {
        let Some((generation, EniInterface { hook, config, .. })) = self
            .interfaces
            .as_ref()
            .and_then(|(g, all)| Some((*g, all.get(interface)?.clone())))
        else {
            return Ok(false);
        };
        let Some(ifindex) = ifindex_of(interface) else {
            return Ok(false);
        };
        let error = |message: String| EnforceError::Attach {
            interface: interface.to_owned(),
            message,
        };
        let dataplane = self.dataplane().map_err(error)?;
        let slot = generation_slot(generation);
        // The ENI's entry under an index it no longer has (the interface
        // was made again) goes; then the entry under its index now, before
        // the programs: a packet never meets the programs without its ENI.
        let stale = dataplane
            .read_enis(slot)
            .map_err(|e| error(chain(&e)))?
            .into_iter()
            .filter(|(k, v)| v.eni_index == config.eni_index && k.ifindex != ifindex);
        for (key, _) in stale {
            dataplane.remove_eni(key).map_err(|e| error(chain(&e)))?;
        }
        dataplane
            .add_eni(EniKey { slot, ifindex }, config)
            .map_err(|e| error(chain(&e)))?;
        match dataplane.attach_with(interface, hooks::resolve(interface, hook)) {
            Ok(_) => Ok(true),
            Err(DataplaneError::UnknownInterface(_)) => Ok(false),
            Err(_) if vanished(interface, Some(ifindex)) => Ok(false),
            Err(e) => Err(error(chain(&e))),
        }
    }

    fn reconcile(&mut self, wanted: &[String]) -> Result<Vec<String>, EnforceError> {
        let held: BTreeMap<String, u32> = match &self.dataplane {
            Some(d) => d
                .attachments()
                .into_iter()
                .map(|a| (a.ifname, a.ifindex))
                .collect(),
            None => BTreeMap::new(),
        };
        let mut guarded = Vec::new();
        for interface in wanted {
            let now = ifindex_of(interface);
            if now.is_some() && held.get(interface) != now.as_ref() && self.guard(interface)? {
                guarded.push(interface.clone());
            }
        }
        Ok(guarded)
    }

    fn forget(&mut self, interface: &str, ifindex: u32) -> Result<(), EnforceError> {
        let Some((generation, config)) = self
            .interfaces
            .as_ref()
            .and_then(|(g, all)| Some((*g, all.get(interface)?.config)))
        else {
            return Ok(());
        };
        let error = |message: String| EnforceError::Detach {
            interface: interface.to_owned(),
            message,
        };
        let dataplane = self.dataplane().map_err(error)?;
        let key = EniKey {
            slot: generation_slot(generation),
            ifindex,
        };
        let ours = dataplane
            .read_enis(key.slot)
            .map_err(|e| error(chain(&e)))?
            .into_iter()
            .any(|(k, v)| k == key && v.eni_index == config.eni_index);
        if ours {
            dataplane.remove_eni(key).map_err(|e| error(chain(&e)))?;
        }
        // Its links died with it; their pins go too.
        dataplane
            .detach(interface)
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
        dataplane
            .reset_rule_stats_of(&plan.fresh_slots)
            .map_err(|e| error(chain(&e)))?;
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
        let read = |e: DataplaneError| EnforceError::Read(chain(&e));
        let mut hooks: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // Only what guards an interface under the index it has now: links
        // of a deleted interface died with it.
        for a in dataplane.attachments() {
            if ifindex_of(&a.ifname) != Some(a.ifindex) {
                continue;
            }
            let ingress = match (a.ingress, a.xdp_mode) {
                (IngressHook::Tc, _) => "tc-ingress",
                (IngressHook::Xdp, aya::programs::XdpMode::Skb) => "xdp (generic)",
                (IngressHook::Xdp, _) => "xdp",
            };
            hooks.insert(a.ifname, vec![ingress.to_owned(), "tc".to_owned()]);
        }
        for ifname in pins::pinned_interfaces(&self.pin_dir)
            .into_iter()
            .filter(|i| ifindex_of(i).is_some())
        {
            hooks
                .entry(ifname)
                .or_insert_with(|| vec!["pinned".to_owned()]);
        }
        let stats = dataplane.stats().map_err(read)?;
        let (used, size) = (dataplane.map_use().map_err(read)?, dataplane.map_sizes());
        let fill = |used: u32, size: u32| MapFill {
            used: used.into(),
            size: size.into(),
        };
        Ok(DataplaneStatus {
            hooks,
            conntrack: MapFill {
                used: dataplane.conntrack_count().map_err(read)? as u64,
                size: u64::from(dataplane.conntrack_capacity().map_err(read)?),
            },
            ranges: fill(used.bounds, size.bounds),
            cells: fill(used.cells, size.cells),
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

    fn counters(&self) -> Result<Vec<ReasonCounter>, EnforceError> {
        let Some(dataplane) = &self.dataplane else {
            return Ok(Vec::new());
        };
        // `reasons` is sorted: its last slot bounds the shared counters read.
        let upto = self.reasons.keys().next_back().map_or(0, |s| s + 1);
        let counted: BTreeMap<u32, _> = dataplane
            .all_rule_stats(upto)
            .map_err(|e| EnforceError::Read(chain(&e)))?
            .into_iter()
            .collect();
        Ok(self
            .reasons
            .iter()
            .map(|(slot, reason)| {
                let c = counted.get(slot).copied().unwrap_or_default();
                ReasonCounter {
                    reason: reason.clone(),
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
        let (conn, src_is_a) = ConnKey::of(interface, packet, (packet.src_port, packet.dst_port));
        let key = kernel_key(ifindex, &conn);
        let Some(entry): Option<CtEntry> = dataplane
            .lookup_conntrack(&key)
            .map_err(|e| EnforceError::Read(chain(&e)))?
        else {
            return Ok(None);
        };
        // An entry under the key that does not track this packet (an ICMP
        // error, an echo the wrong way) leaves it a first packet.
        let reply = src_is_a != (entry.orig_src_is_a != 0);
        if !crate::eval::conntrack::meets(entry.ct_flags, packet, reply) {
            return Ok(None);
        }
        // An entry idle past its timeout counts as absent (the data plane
        // deletes it on the next packet).
        let idle = KtimeClock::now().age(entry.last_seen_ns);
        let timeout = GenConfig::timeout_ns(self.config.as_ref(), entry.state);
        if u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX) > timeout {
            return Ok(None);
        }
        Ok(Some(TrackedConnection {
            state: ct_state_name(entry.state).to_owned(),
            rule: self
                .reasons
                .get(&entry.rule_slot)
                .map_or_else(|| format!("slot {}", entry.rule_slot), Reason::to_string),
            generation: entry.generation,
            packets: entry.packets.iter().sum(),
            bytes: entry.bytes.iter().sum(),
        }))
    }

    fn detach_all(&mut self) -> Result<Vec<String>, EnforceError> {
        let mut interfaces: Vec<String> = self.attached().into_iter().collect();
        let error = |e: DataplaneError| EnforceError::Detach {
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
        self.interfaces = None;
        interfaces.dedup();
        Ok(interfaces)
    }

    fn take_flow_events(&mut self) -> Option<FlowEvents> {
        match self.dataplane.as_mut()?.take_flow_events() {
            Ok(events) => events,
            Err(e) => {
                tracing::error!("flow log: {}", chain(&e));
                None
            }
        }
    }

    fn conntrack_size(&self) -> Option<u32> {
        self.dataplane.as_ref()?.conntrack_capacity().ok()
    }

    fn set_conntrack_size(&mut self, entries: u32) {
        self.ct_entries = entries;
    }

    fn slot_reasons(&self) -> BTreeMap<u32, Reason> {
        self.reasons.clone()
    }
}
