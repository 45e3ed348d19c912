//! Validation (SPEC §2.5): document → `Ruleset`, every error with its JSON path.
