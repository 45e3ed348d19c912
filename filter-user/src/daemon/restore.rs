//! Start-up: `--ruleset`, or the saved generation taken over from the
//! pinned data plane (tracked connections survive), or applied again.
use std::sync::Arc;

use super::{
    apply, Core, Daemon, DaemonError, Document, Enforcer, GenerationRecord, Origin, Running,
    Started,
};
use crate::ruleset::Ruleset;

impl<E: Enforcer> Daemon<E> {
    /// Brings enforcement up at start (blocking): applies `ruleset` (the
    /// text of `--ruleset`) when given; otherwise restores the newest saved
    /// generation, taking it over as it is when the pinned data plane still
    /// runs it, so tracked connections survive a restart.
    ///
    /// Only a rejected or failing `--ruleset` is an error: a saved
    /// generation that no longer restores (an interface went away) is
    /// logged and shown by `status`, and the daemon serves anyway.
    pub fn start(&self, ruleset: Option<String>) -> Result<Started, DaemonError> {
        if let Some(document) = ruleset {
            let parsed = self
                .validator
                .load(&document)
                .map_err(DaemonError::Invalid)?;
            let result = self.commit(
                &mut self.core(),
                Document::new(document),
                parsed,
                false,
                Origin::Startup,
            )?;
            return Ok(Started::Applied(result.generation));
        }
        match self.restore() {
            Ok(started) => Ok(started),
            Err(e) => {
                let message = match &e {
                    DaemonError::Invalid(errors) => format!("{e}: {}", errors.join("; ")),
                    _ => e.to_string(),
                };
                tracing::error!("restoring the saved generation failed: {message}");
                *self
                    .restore_error
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = Some(message.clone());
                Ok(Started::RestoreFailed(message))
            }
        }
    }

    /// Enforces a saved document again, as a new generation: the data plane
    /// does not run it (fresh maps), or not as the interfaces are now.
    fn restore_as_new(
        &self,
        core: &mut Core<E>,
        record: GenerationRecord,
        ruleset: Ruleset,
    ) -> Result<Started, DaemonError> {
        let from = record.generation;
        let result = self.commit(
            core,
            Document::new(record.document),
            ruleset,
            false,
            Origin::Restore { from },
        )?;
        Ok(Started::Restored {
            from,
            generation: result.generation,
        })
    }

    fn restore(&self) -> Result<Started, DaemonError> {
        let mut core = self.core();
        if core.store.is_detached() {
            return Ok(Started::Nothing);
        }
        let limit = discard_unenforced(&core);
        let (newest, skipped) = core.store.newest_up_to(limit)?;
        for e in skipped {
            tracing::warn!("skipping an unreadable saved generation: {e}");
        }
        let Some(record) = newest else {
            return Ok(Started::Nothing);
        };
        let ruleset = self
            .validator
            .load(&record.document)
            .map_err(DaemonError::Invalid)?;
        if core.enforcer.running_generation() != Some(record.generation) {
            return self.restore_as_new(&mut core, record, ruleset);
        }
        // The data plane runs this very generation: take it over.
        let compiled = core
            .enforcer
            .compile(record.generation, &ruleset, &record.slots)?;
        let wanted = apply::interfaces(&ruleset);
        let attached = core.enforcer.attached();
        for (interface, hook) in &wanted {
            // Takes over the pinned links (and puts back any that went
            // missing while the daemon was away).
            core.enforcer.attach(interface, *hook)?;
        }
        if let Err(e) = core.enforcer.adopt(&compiled.plan) {
            // The pinned generation does not guard the interfaces as they
            // are now (one was made again, with a new index, while the
            // daemon was away): enforce the document again, as a new
            // generation, rather than leave an interface unguarded.
            tracing::warn!("not taking over generation {}: {e}", record.generation);
            return self.restore_as_new(&mut core, record, ruleset);
        }
        for interface in attached.iter().filter(|i| !wanted.contains_key(*i)) {
            if let Err(e) = core.enforcer.detach(interface) {
                tracing::warn!("{e}");
            }
        }
        // The slot table as saved: compiling the same generation again
        // gives every rule the slot it has.
        core.slots = record.slots;
        self.set_running(Some(Arc::new(Running::new(
            record.generation,
            record.applied_at,
            crate::digest::document_digest(&record.document),
            ruleset,
        ))));
        self.publish_flows(&mut core);
        Ok(Started::Adopted(record.generation))
    }
}

/// The newest generation a start may restore. When the data plane runs a
/// generation whose record is saved, every newer record was never
/// enforced: its apply saved it (step 4 in `apply.rs`) and then died or
/// failed before the switch (step 6). Those are removed, not restored: the
/// client never heard they succeeded, and the kernel never ran them.
fn discard_unenforced<E: Enforcer>(core: &Core<E>) -> u32 {
    let Some(running) = core.enforcer.running_generation() else {
        return u32::MAX;
    };
    if !matches!(core.store.load(running), Ok(Some(_))) {
        return u32::MAX;
    }
    let saved = core.store.generations().unwrap_or_default();
    for newer in saved.into_iter().filter(|g| *g > running) {
        tracing::warn!(
            "saved generation {newer} was never enforced (its apply stopped before the switch to \
             it); keeping generation {running}, which the data plane runs, and removing {newer}"
        );
        if let Err(e) = core.store.remove(newer) {
            tracing::warn!("{e}");
        }
    }
    running
}

/// The connection-table size to create the data plane's maps with at
/// start, before any document is applied (SPEC §3.1): that of `--ruleset`
/// (`ruleset`, its text) or else of the newest saved generation, the one
/// the start applies or restores; the default when neither reads.
/// Existing pins keep their size whatever this says.
pub fn conntrack_size_at_start(state_dir: &std::path::Path, ruleset: Option<&str>) -> u32 {
    let document = match ruleset {
        Some(text) => Some(text.to_owned()),
        None => super::store::StateStore::open(state_dir)
            .and_then(|store| store.newest())
            .ok()
            .and_then(|(record, _)| record)
            .map(|record| record.document),
    };
    document
        .and_then(|text| crate::validate::load(&text).ok())
        .map_or(filter_common::DEFAULT_CT_ENTRIES, |rs| {
            rs.conntrack.max_entries
        })
}
