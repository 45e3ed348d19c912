//! Validation (SPEC §2.5): document text → [`Document`] → [`Ruleset`], with
//! every mistake reported at its JSON path, not only the first.
//!
//! [`load`] is what `filterd` calls on an apply: it runs both steps and
//! reports structural and semantic mistakes together. [`parse_document`] and
//! [`validate`] are the two steps on their own.
//!
//! Checks go topic by topic (`network`, `groups`, `rules` and `peers`,
//! `acls`, `enis`, `settings`, over the leaf checks of `values`, `addrs` and
//! `ports`), each returning, besides its errors, the facts later checks
//! need; a later check uses only facts that are valid, so one mistake gives
//! one message. Every limit is in [`limits`]; `docs/RULESET.md` describes
//! the document and the decisions taken where SPEC is silent.

use crate::{model::Document, ruleset::Ruleset};

mod acls;
mod addrs;
mod build;
mod de;
mod enis;
mod errors;
mod groups;
mod hints;
pub mod limits;
mod network;
mod node;
mod parse;
mod peers;
mod ports;
mod refs;
mod rules;
mod settings;
mod values;

#[cfg(test)]
mod tests;

pub use errors::{ValidationError, ValidationErrors};

use errors::Errors;

/// What the host has, for the notices about pending ENIs.
pub trait Environment {
    /// Whether a network interface of that name exists now.
    fn interface_exists(&self, name: &str) -> bool;
}

/// The real host: an interface exists when the kernel resolves its name to
/// an index in the calling thread's network namespace. (Not
/// `/sys/class/net`: that shows the namespace sysfs was mounted in, which is
/// the wrong one for a daemon started with `nsenter --net=...`.)
#[derive(Clone, Copy, Debug, Default)]
pub struct HostInterfaces;

impl Environment for HostInterfaces {
    fn interface_exists(&self, name: &str) -> bool {
        let plain = !name.is_empty() && name != "." && name != ".." && !name.contains('/');
        plain && nix::net::if_::if_nametoindex(name).is_ok()
    }
}

/// Every interface name exists: for tests, and for a document meant for
/// another host.
#[derive(Clone, Copy, Debug, Default)]
pub struct AnyInterface;

impl Environment for AnyInterface {
    fn interface_exists(&self, _: &str) -> bool {
        true
    }
}

/// Parses document text. Malformed JSON gives one error with its line and
/// column; otherwise every unknown field, repeated key, wrong type and
/// missing required field is reported.
pub fn parse_document(text: &str) -> Result<Document, ValidationErrors> {
    let parsed = parse::parse(text);
    let mut errs = Errors::default();
    errs.extend(parsed.errors);
    if errs.is_empty() {
        Ok(parsed.doc)
    } else {
        Err(ValidationErrors(errs.into_sorted()))
    }
}

/// Checks a document against SPEC §2 and builds the typed rule set: ids
/// resolved to indices, text parsed, defaults applied. Nothing here
/// depends on the host: an interface that does not exist is no error, its
/// ENI is pending ([`pending_notices`]).
pub fn validate(doc: &Document) -> Result<Ruleset, ValidationErrors> {
    check(doc, Errors::default())
}

/// One notice per ENI of `rs` whose interface does not exist in `env`
/// (SPEC §2.4: it is guarded as soon as its interface appears).
pub fn pending_notices(rs: &Ruleset, env: &dyn Environment) -> Vec<String> {
    rs.enis
        .iter()
        .filter(|eni| !env.interface_exists(&eni.interface))
        .map(|eni| {
            format!(
                "{}: interface {} does not exist yet; the ENI is pending and is guarded as soon \
                 as the interface appears",
                eni.id, eni.interface
            )
        })
        .collect()
}

/// [`parse_document`] then [`validate`], reporting the mistakes of both in
/// one go. (Only when an element could not be read at all — a wrong type,
/// a missing field — are the semantic checks skipped, since its siblings'
/// indices would be off.)
pub fn load(text: &str) -> Result<Ruleset, ValidationErrors> {
    let parsed = parse::parse(text);
    let mut errs = Errors::default();
    errs.extend(parsed.errors);
    if !parsed.complete {
        return Err(ValidationErrors(errs.into_sorted()));
    }
    check(&parsed.doc, errs)
}

fn check(doc: &Document, mut errs: Errors) -> Result<Ruleset, ValidationErrors> {
    let ruleset = checked(doc, &mut errs);
    match ruleset {
        Some(ruleset) if errs.is_empty() => Ok(ruleset),
        _ => {
            if errs.is_empty() {
                errs.push(ValidationError::new(
                    "",
                    "",
                    "internal error: a check passed but left no value (a bug)",
                ));
            }
            Err(ValidationErrors(errs.into_sorted()))
        }
    }
}

fn checked(doc: &Document, errs: &mut Errors) -> Option<Ruleset> {
    let ix = refs::Indexes::new(doc);
    let vpcs = network::vpcs(doc, &ix, errs);
    let vswitches = network::vswitches(doc, &ix, &vpcs, errs);
    let prefix_lists = network::prefix_lists(doc, &ix, errs);
    let groups = groups::facts(doc, &ix, errs);
    let rules = groups::rules(doc, &ix, &groups, &prefix_lists, errs);
    let acls = acls::check(doc, &ix, errs);
    let enis = enis::check(
        &enis::EniContext {
            doc,
            ix: &ix,
            vswitches: &vswitches,
            groups: &groups,
        },
        errs,
    );
    let conntrack = settings::conntrack(doc, errs);
    let flow_log = settings::flow_log(doc, errs);
    if !errs.is_empty() {
        return None;
    }
    let checked = build::Checked {
        vpcs,
        vswitches,
        prefix_lists,
        groups,
        rules,
        acls,
        enis,
        conntrack,
        flow_log,
    };
    build::ruleset(doc, checked)
}
