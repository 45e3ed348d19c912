//! The real [`Validator`]: `crate::validate` for documents, with the
//! interfaces of this host (or any, for tests), and `crate::compile`'s
//! shadow analysis for warnings.
use super::validator::Validator;
use crate::{
    compile,
    ruleset::Ruleset,
    validate::{self, AnyInterface, Environment, HostInterfaces},
};

pub struct LibraryValidator {
    env: Box<dyn Environment + Send + Sync>,
}

impl LibraryValidator {
    /// ENIs whose interface is missing on this host are pending (SPEC §2.4).
    pub fn host() -> Self {
        Self::new(HostInterfaces)
    }

    /// Every interface name is taken to exist (tests, other hosts).
    pub fn any_interface() -> Self {
        Self::new(AnyInterface)
    }

    pub fn new(env: impl Environment + Send + Sync + 'static) -> Self {
        LibraryValidator { env: Box::new(env) }
    }
}

impl Validator for LibraryValidator {
    fn load(&self, document: &str) -> Result<Ruleset, Vec<String>> {
        validate::load(document)
            .map_err(|errors| errors.into_iter().map(|e| e.to_string()).collect())
    }

    fn notices(&self, ruleset: &Ruleset) -> Vec<String> {
        validate::pending_notices(ruleset, &*self.env)
    }

    fn warnings(&self, ruleset: &Ruleset) -> Vec<String> {
        compile::shadow_warnings(ruleset)
            .iter()
            .map(ToString::to_string)
            .collect()
    }
}
