//! How the daemon turns a document into a [`Ruleset`]: [`Validator`].
//!
//! The daemon does not call `crate::validate` directly so that what counts
//! as "this interface exists" (for the pending-ENI notices) is the binary's
//! choice, and so that the daemon's tests do not depend on every validation
//! rule. [`super::library::LibraryValidator`]
//! is the real one.
use crate::ruleset::Ruleset;

pub trait Validator: Send + Sync + 'static {
    /// Validates `document` (the text of a SPEC §2 document). On rejection,
    /// every error, one per entry, each a single line naming its JSON path
    /// (SPEC §2.5).
    fn load(&self, document: &str) -> Result<Ruleset, Vec<String>>;

    /// Warnings about a valid rule set (shadow analysis: rules that can
    /// never decide), one per entry.
    fn warnings(&self, ruleset: &Ruleset) -> Vec<String>;

    /// Notices about a valid rule set: its pending ENIs (SPEC §2.4).
    fn notices(&self, _ruleset: &Ruleset) -> Vec<String> {
        Vec::new()
    }
}
