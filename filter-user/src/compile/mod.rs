//! The rule compiler: `Ruleset` → the contents of the data plane maps.
