//! Applying a rule set, all or nothing (SPEC §2.5, §4).
//!
//! With the document already validated, one apply:
//!
//! 1. picks the new generation number (the data plane's other slot),
//! 2. compiles it (nothing touched yet: a rule set that does not fit fails
//!    here),
//! 3. (dry run: stops here and reports),
//! 4. saves it in the state directory,
//! 5. attaches the programs to the interfaces that join (and again to any
//!    that lost them: deleted and made again under the same name),
//! 6. switches the data plane to the new generation (one write),
//! 7. detaches the interfaces that left.
//!
//! A failure in 4–6 undoes 4 and 5: the interfaces attached for this apply
//! are detached again, the record is removed, and the old generation keeps
//! running. After 6 the new generation runs; a failure in 7 only leaves an
//! interface with programs that no longer guard it, which the result says.
use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{Core, Daemon, DaemonError, Document, Enforcer, GenerationRecord, Origin, Running};
use crate::{
    api::{ApplyParams, ApplyResult, ChangeSummary, Changes},
    clock::unix_now,
    daemon::{enforcer::EnforceError, store::RECORD_FORMAT},
    digest::document_digest,
    ruleset::{HookChoice, Ruleset},
};

/// The number of the next generation: above every generation the data
/// plane, the daemon or the state directory has seen, and never in the
/// slot (`generation & 1`) of the one the data plane runs.
pub fn next_generation(dataplane: Option<u32>, daemon: Option<u32>, saved: Option<u32>) -> u32 {
    let newest = [dataplane, daemon, saved]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
    let mut next = newest.saturating_add(1);
    if dataplane.is_some_and(|g| g & 1 == next & 1) {
        next = next.saturating_add(1);
    }
    next
}

/// The interfaces a rule set guards.
pub(super) fn interfaces(ruleset: &Ruleset) -> BTreeMap<String, HookChoice> {
    ruleset
        .enis
        .iter()
        .map(|e| (e.interface.clone(), e.hook))
        .collect()
}

impl<E: Enforcer> Daemon<E> {
    /// `apply`: validate, then steps 1–7. Also the document's digest, for
    /// the audit line whatever the outcome.
    pub async fn apply(
        self: &Arc<Self>,
        params: ApplyParams,
    ) -> (Result<ApplyResult, DaemonError>, Option<String>) {
        if let Err(e) = self.local_changes_allowed() {
            return (Err(e), document_digest(&params.document));
        }
        let done = self
            .blocking(move |d| {
                // What decoding the request freed.
                super::memory::release_freed();
                // Here, not on the runtime's thread: at 100k rules it takes
                // 0.15 s. Before the tree, not beside it: side by side on two
                // threads they raised the peak RSS by a quarter.
                let digest = document_digest(&params.document);
                super::memory::release_freed();
                let loaded = d.validator.load(&params.document);
                Ok((d.apply_loaded(params, loaded, digest.clone()), digest))
            })
            .await;
        done.unwrap_or_else(|e| (Err(e), None))
    }

    fn apply_loaded(
        &self,
        params: ApplyParams,
        loaded: Result<Ruleset, Vec<String>>,
        digest: Option<String>,
    ) -> Result<ApplyResult, DaemonError> {
        let ruleset = loaded.map_err(DaemonError::Invalid)?;
        // The document's tree.
        super::memory::release_freed();
        let mut core = self.core();
        // SPEC §11: checked with the core locked, so no other apply can
        // come between the check and this one.
        if let Some(expected) = params.if_generation {
            let running = self.running().map(|r| r.generation);
            if running != Some(expected) {
                return Err(DaemonError::GenerationMismatch { expected, running });
            }
        }
        self.commit(
            &mut core,
            Document {
                text: params.document,
                digest,
            },
            ruleset,
            params.dry_run,
            Origin::Apply,
        )
    }

    /// Steps 1–7 of the module docs, with `core` locked throughout.
    pub(super) fn commit(
        &self,
        core: &mut Core<E>,
        document: Document,
        ruleset: Ruleset,
        dry_run: bool,
        origin: Origin,
    ) -> Result<ApplyResult, DaemonError> {
        // Dropped last: the compiled generation and the replaced rule set
        // are freed by then.
        let _release = super::memory::ReleaseOnDrop;
        let previous = self.running();
        let generation = next_generation(
            core.enforcer.running_generation(),
            previous.as_ref().map(|r| r.generation),
            core.store.generations()?.last().copied(),
        );
        // One step after the other, the analyses first: compiling beside
        // the warnings' analysis took a tenth less time but raised the peak
        // RSS by a fifth, and after the compiler the analysis sat beside
        // the compiled generation (6 MB more at 100k rules).
        let (warnings, notices, changes) = (
            self.validator.warnings(&ruleset),
            self.validator.notices(&ruleset),
            summarize(previous.as_ref().map(|r| &*r.ruleset), &ruleset),
        );
        // The change summary's digests, the warnings' analysis.
        super::memory::release_freed();
        let compiled = core.enforcer.compile(generation, &ruleset, &core.slots)?;
        // The compiler's intermediate tables.
        super::memory::release_freed();
        let mut result = ApplyResult {
            generation,
            previous: previous.as_ref().map(|r| r.generation),
            dry_run,
            rolled_back_to: None,
            warnings,
            notices,
            changes,
        };
        result
            .notices
            .extend(conntrack_size_notice(&core.enforcer, &ruleset));
        if dry_run {
            return Ok(result);
        }
        core.enforcer
            .set_conntrack_size(ruleset.conntrack.max_entries);

        let record = GenerationRecord {
            format: RECORD_FORMAT,
            generation,
            applied_at: unix_now(),
            origin,
            document: document.text,
            slots: compiled.slots,
        };
        if let Err(source) = core.store.save(&record) {
            // The rename may have happened before the failure (a directory
            // fsync that failed): no half-saved record may be restored.
            if let Err(e) = core.store.remove(generation) {
                tracing::error!("generation {generation}: {e}");
            }
            return Err(DaemonError::Save {
                generation,
                running: previous.as_ref().map(|r| r.generation),
                source,
            });
        }
        // The text is on disk now; `get` reads it there.
        let GenerationRecord {
            applied_at,
            origin,
            slots,
            ..
        } = record;
        if let Err(e) = enforce(
            &mut core.enforcer,
            &interfaces(&ruleset),
            &compiled.plan,
            &mut result.notices,
        ) {
            if let Err(store_error) = core.store.remove(generation) {
                tracing::error!(
                    "generation {generation} failed ({e}) but its record stays: {store_error}"
                );
            }
            return Err(e.into());
        }

        // The record's text and what writing the maps took.
        super::memory::release_freed();
        core.slots = slots;
        if let Err(e) = core.store.set_detached(false) {
            tracing::warn!("{e}");
        }
        tracing::info!("generation {generation} enforced ({origin:?})");
        self.set_running(Some(Arc::new(Running::new(
            generation,
            applied_at,
            document.digest,
            ruleset,
        ))));
        // After the switch: the running generation's record is always kept,
        // so `get` finds it at any moment.
        match core.store.prune(self.config.keep_generations) {
            Ok(removed) if !removed.is_empty() => {
                tracing::debug!("removed saved generations {removed:?}")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("pruning saved generations: {e}"),
        }
        self.publish_flows(core);
        Ok(result)
    }
}

/// A notice when the document asks for another connection-table size
/// than the live one, which is fixed while its maps exist (SPEC §3.1).
fn conntrack_size_notice<E: Enforcer>(enforcer: &E, ruleset: &Ruleset) -> Option<String> {
    let live = enforcer.conntrack_size()?;
    let wanted = ruleset.conntrack.max_entries;
    (live != wanted).then(|| {
        format!(
            "conntrack.max_entries {wanted} takes effect when the data plane's maps are \
             created again (`filterctl detach` then an apply, or a restart over fresh pins); \
             the connection table keeps its {live} entries until then"
        )
    })
}

/// Steps 5–7: attach, switch, detach; undo the attachments on failure.
fn enforce<E: Enforcer>(
    enforcer: &mut E,
    wanted: &BTreeMap<String, HookChoice>,
    plan: &E::Plan,
    notices: &mut Vec<String>,
) -> Result<(), EnforceError> {
    let before = enforcer.attached();
    let mut attached = Vec::new();
    let undo = |enforcer: &mut E, attached: &[String]| {
        for interface in attached.iter().rev() {
            if let Err(e) = enforcer.detach(interface) {
                tracing::error!("rolling back an apply: {e}");
            }
        }
    };
    // Every interface of the document, not only those that join: for one
    // attached already this is a no-op, and one that was deleted and made
    // again under its name (a restarted VM's tap) gets the programs back.
    // Only those that join are detached again on failure.
    for (interface, hook) in wanted {
        match enforcer.attach(interface, *hook) {
            Ok(true) if !before.contains(interface) => attached.push(interface.clone()),
            // Attached already, or pending: the link watcher guards it
            // when it appears (`links.rs`).
            Ok(_) => {}
            Err(e) => {
                undo(enforcer, &attached);
                return Err(e);
            }
        }
    }
    if let Err(e) = enforcer.activate(plan) {
        undo(enforcer, &attached);
        return Err(e);
    }
    for interface in before.iter().filter(|i| !wanted.contains_key(*i)) {
        if let Err(e) = enforcer.detach(interface) {
            tracing::warn!("{e}");
            notices.push(format!(
                "{e} (it is no longer guarded: its packets pass unfiltered until it is detached)"
            ));
        }
    }
    Ok(())
}

/// What changed from `old` (the running rule set, if any) to `new`, by id.
/// Everything is compared by what it means, with indices turned back into
/// ids, so reordering groups in the document changes nothing.
pub fn summarize(old: Option<&Ruleset>, new: &Ruleset) -> ChangeSummary {
    let by_id =
        |f: fn(&Ruleset) -> BTreeMap<String, Value>| diff(&old.map(f).unwrap_or_default(), &f(new));
    // Rules compared by a digest of their compact text: at 100k rules a
    // tree of values each costs seconds, and the texts themselves as much
    // memory as the rule set.
    let rules = diff(
        &old.map(rule_digests).unwrap_or_default(),
        &rule_digests(new),
    );
    ChangeSummary {
        vpcs: by_id(|rs| {
            rs.vpcs
                .iter()
                .map(|v| (v.id.clone(), json!(v.cidrs)))
                .collect()
        }),
        vswitches: by_id(|rs| {
            rs.vswitches
                .iter()
                .map(|v| {
                    let vpc = rs.vpcs.get(v.vpc).map(|p| p.id.as_str());
                    let acl = v.acl.and_then(|a| rs.acls.get(a)).map(|a| a.id.as_str());
                    (
                        v.id.clone(),
                        json!({"vpc": vpc, "cidrs": v.cidrs, "acl": acl}),
                    )
                })
                .collect()
        }),
        prefix_lists: by_id(|rs| {
            rs.prefix_lists
                .iter()
                .map(|p| (p.id.clone(), json!(p.entries)))
                .collect()
        }),
        groups: {
            // A group changes with its rules: compared by rule ids here,
            // and marked changed below when one of its rules changed.
            let mut groups = by_id(|rs| {
                rs.groups
                    .iter()
                    .map(|g| {
                        let rules: Vec<&str> = g.rules.iter().map(|r| r.id.as_str()).collect();
                        let vpc = rs.vpcs.get(g.vpc).map(|p| p.id.as_str());
                        (g.id.clone(), json!({"vpc": vpc, "kind": g.kind, "inner_accept": g.inner_accept, "members": g.members, "rules": rules}))
                    })
                    .collect()
            });
            let changed: HashSet<&str> = rules.changed.iter().map(String::as_str).collect();
            for g in &new.groups {
                let touched = g.rules.iter().any(|r| changed.contains(r.id.as_str()));
                if touched && !groups.changed.contains(&g.id) && !groups.added.contains(&g.id) {
                    groups.changed.push(g.id.clone());
                }
            }
            groups.changed.sort();
            groups
        },
        rules,
        network_acls: by_id(|rs| {
            rs.acls
                .iter()
                .map(|a| {
                    (
                        a.id.clone(),
                        json!({"ingress": a.ingress, "egress": a.egress}),
                    )
                })
                .collect()
        }),
        enis: by_id(|rs| {
            rs.enis
                .iter()
                .map(|e| {
                    let vswitch = rs.vswitches.get(e.vswitch).map(|v| v.id.as_str());
                    let groups: Vec<&str> = e.groups.iter().filter_map(|g| rs.groups.get(*g)).map(|g| g.id.as_str()).collect();
                    (
                        e.id.clone(),
                        json!({"interface": e.interface, "mode": e.mode, "vswitch": vswitch, "ips": e.ips, "groups": groups}),
                    )
                })
                .collect()
        }),
    }
}

/// Every rule by id, as the SHA-256 of its JSON text with its peer named
/// instead of indexed (indices move when the document is reordered; names
/// do not).
fn rule_digests(rs: &Ruleset) -> BTreeMap<&str, [u8; 32]> {
    let mut text = Vec::new();
    rs.groups
        .iter()
        .flat_map(|g| g.rules.iter())
        .map(|r| {
            text.clear();
            // Writing into a Vec fails only on a serializer error, which a
            // plain struct does not have; the digest then covers the rest.
            let _ = serde_json::to_writer(&mut text, r);
            text.extend_from_slice(rs.peer_label(&r.remote).as_bytes());
            (r.id.as_str(), Sha256::digest(&text).into())
        })
        .collect()
}

fn diff<K: Ord + AsRef<str>, V: PartialEq>(old: &BTreeMap<K, V>, new: &BTreeMap<K, V>) -> Changes {
    let name = |k: &K| k.as_ref().to_owned();
    Changes {
        added: new
            .keys()
            .filter(|k| !old.contains_key(*k))
            .map(name)
            .collect(),
        removed: old
            .keys()
            .filter(|k| !new.contains_key(*k))
            .map(name)
            .collect(),
        changed: new
            .iter()
            .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
            .map(|(k, _)| name(k))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_numbers_avoid_the_running_slot() {
        assert_eq!(next_generation(None, None, None), 1);
        assert_eq!(next_generation(Some(1), Some(1), Some(1)), 2);
        assert_eq!(next_generation(None, None, Some(7)), 8);
        // Saved 4 but the pinned data plane runs 3 (say, the record of 4
        // was written but the switch never happened): 5 would land in 3's
        // slot.
        assert_eq!(next_generation(Some(3), None, Some(4)), 6);
        assert_eq!(next_generation(Some(9), None, Some(4)), 10);
        assert_eq!(next_generation(Some(2), Some(2), Some(12)), 13);
    }

    #[test]
    fn a_changed_rule_changes_its_group_and_nothing_else() {
        let doc = |port: &str| {
            serde_json::json!({
                "vpcs": [{"id": "vpc-a", "cidr": "10.0.0.0/16"}],
                "vswitches": [{"id": "vsw-a", "vpc_id": "vpc-a", "cidr": "10.0.1.0/24"}],
                "security_groups": [
                    {"id": "sg-a", "vpc_id": "vpc-a", "type": "basic", "rules": [
                        {"id": "web", "direction": "ingress", "policy": "accept",
                         "ip_protocol": "tcp", "port_range": port, "source_cidr_ip": "0.0.0.0/0"}]},
                    {"id": "sg-b", "vpc_id": "vpc-a", "type": "basic", "rules": []}],
                "enis": [{"id": "eni-a", "interface": "tap-a", "vswitch_id": "vsw-a",
                          "ips": ["10.0.1.10"], "security_group_ids": ["sg-a", "sg-b"]}]
            })
            .to_string()
        };
        let load = |text: String| crate::validate::load(&text).unwrap_or_else(|e| panic!("{e}"));
        let (old, new) = (load(doc("80/80")), load(doc("81/81")));
        let c = summarize(Some(&old), &new);
        assert_eq!(c.rules.changed, ["sg-a/web"]);
        assert_eq!(c.groups.changed, ["sg-a"]);
        assert!(c.enis.changed.is_empty() && c.rules.added.is_empty());
        let same = summarize(Some(&old), &old);
        assert!(same.rules.changed.is_empty() && same.groups.changed.is_empty());
    }
}
