//! Every limit a document is checked against, in one place (SPEC §2.5), so
//! `docs/RULESET.md`, the messages and the tests agree.
//!
//! Limits that protect the kernel maps come from `filter-common`; the rest
//! are Alibaba's where Alibaba has one, or a bound on what a value can mean.
//! The compiler still checks the sizes of the tables it builds (which depend
//! on how rules overlap, not only on how many there are).
use std::ops::RangeInclusive;

/// An ENI joins 1 to 10 security groups (SPEC §1, §2.4).
pub const GROUPS_PER_ENI: RangeInclusive<usize> = 1..=10;

/// Rule priority: 1 strongest, 100 weakest (SPEC §2.2).
pub const PRIORITY: RangeInclusive<i64> = 1..=100;

/// Ports in an `"a/b"` range (SPEC §2.2).
pub const PORT: RangeInclusive<i64> = 1..=65_535;

/// Rules of all the groups of one ENI together. No fixed limit may stop a
/// valid document below a million rules (issue 18); what the maps hold is
/// the compiler's to check, by what grew.
pub const MAX_RULES_PER_ENI: usize = 1_000_000;

/// Entries in one prefix list: Alibaba's largest `MaxEntries`.
pub const MAX_PREFIX_LIST_ENTRIES: usize = 200;

/// Entries in one direction of one network ACL. Alibaba's default quota is
/// 20; a first-match list much longer than this cannot be reviewed.
pub const MAX_NACL_ENTRIES: usize = 1_000;

/// ENIs in one document. `FILTER_ENIS` holds [`filter_common::MAX_ENIS`]
/// entries and two generations live in it side by side during an apply, so
/// one generation may use half (`filter-common` map capacities).
pub const MAX_ENIS: usize = filter_common::MAX_ENIS as usize / 2;

/// Length of ids, rule ids and NACL entry names: Alibaba's name limit.
pub const MAX_ID_LEN: usize = 128;

/// Length of a description: Alibaba's limit for rule descriptions.
pub const MAX_DESCRIPTION_LEN: usize = 512;

/// Linux interface names are shorter than `IFNAMSIZ` (16).
pub const MAX_INTERFACE_NAME_LEN: usize = 15;

/// `flow_log.capture_window_s` (SPEC §4: 1 s to the 10 minutes of VPC flow
/// logs).
pub const CAPTURE_WINDOW_S: RangeInclusive<i64> = 1..=600;

/// Connection-tracking timeouts. At least a second (SPEC §3.1); at most a
/// week, longer than Linux's 5-day established timeout. An idle entry older
/// than that is a leak, not a connection.
pub const CT_TIMEOUT_S: RangeInclusive<i64> = 1..=604_800;

/// `conntrack.max_entries`: the size of the connection table. Below 1,024
/// a busy host churns; above 16 Mi entries the table alone takes gigabytes.
pub const CT_MAX_ENTRIES: RangeInclusive<i64> = 1_024..=16_777_216;

/// "at most 10" / "1–100": how a range reads in a message.
pub(crate) fn describe<T: std::fmt::Display>(range: &RangeInclusive<T>) -> String {
    format!("{}–{}", range.start(), range.end())
}
