//! The rule-set document of SPEC §2, exactly as users write it (serde).
