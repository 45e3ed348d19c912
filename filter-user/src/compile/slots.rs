//! Stable numbers across generations: rule-counter slots (`FILTER_RSTATS`)
//! keyed by the reason text and ENI indices keyed by the ENI id, so counters
//! go on through applies and, with the table persisted by the daemon, through
//! a restart. Freed numbers are reused as late as possible, except that
//! rule slots below `HOT_RULE_SLOTS` (counted per CPU) come before the
//! others; why: ARCHITECTURE.md, "Counter slots" and "Connection tracking".
use std::collections::VecDeque;

use filter_common::{
    MAX_ENIS, MAX_RULE_SLOTS, RULE_SLOT_DEFAULT_ACCEPT, RULE_SLOT_DEFAULT_DENY,
    RULE_SLOT_FIRST_DYNAMIC, RULE_SLOT_PASS, RULE_SLOT_TRACKED,
};
use serde::{Deserialize, Serialize};

use super::fast_hash::FastMap;
use crate::verdict::Reason;

/// The slots with a fixed meaning, in every generation.
pub fn fixed_slots() -> [(u32, Reason); 4] {
    [
        (RULE_SLOT_DEFAULT_DENY, Reason::DefaultDeny),
        (RULE_SLOT_DEFAULT_ACCEPT, Reason::DefaultAccept),
        (RULE_SLOT_TRACKED, Reason::Tracked),
        (RULE_SLOT_PASS, Reason::Pass),
    ]
}

/// The fixed slot of a reason, if it has one.
pub(crate) fn fixed_slot(reason: &Reason) -> Option<u32> {
    fixed_slots()
        .into_iter()
        .find(|(_, r)| r == reason)
        .map(|(slot, _)| slot)
}

/// Numbers `first..limit` handed out to names, stable while the name stays.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StableIds {
    /// Name → number, for every name the last compile used.
    assigned: FastMap<String, u32>,
    /// Numbers the last compile stopped using; free from the next one on.
    cooling: Vec<u32>,
    /// Numbers below `next` that nobody uses, the longest-freed first.
    free: VecDeque<u32>,
    /// First number never handed out.
    next: u32,
}

/// The outcome of [`StableIds::plan`]: the numbers, and the state to commit
/// once the whole compile has succeeded.
#[derive(Debug)]
pub(crate) struct IdPlan {
    /// The number of each name, in the order the names were given.
    pub ids: Vec<u32>,
    /// Numbers given to a name that did not have one (their counters must be
    /// zeroed before use: a reused number still holds its old counts).
    pub fresh: Vec<u32>,
    pub next_state: StableIds,
}

impl StableIds {
    fn new(first: u32) -> StableIds {
        StableIds {
            next: first,
            ..StableIds::default()
        }
    }

    /// Numbers for `names` (a name given twice gets one number), without
    /// changing `self`. `None` when more than `limit` numbers would be in use
    /// (counting the cooling ones).
    pub(crate) fn plan(&self, names: &[&str], limit: u32) -> Option<IdPlan> {
        self.plan_preferring(names, limit, limit)
    }

    /// [`Self::plan`], handing out numbers below `preferred` while there are
    /// any (the rule slots that count per CPU, `HOT_RULE_SLOTS`): never-used
    /// ones first, then the longest-freed, and only then numbers above.
    pub(crate) fn plan_preferring(
        &self,
        names: &[&str],
        preferred: u32,
        limit: u32,
    ) -> Option<IdPlan> {
        let preferred = preferred.min(limit);
        let (mut free, mut free_above): (VecDeque<u32>, VecDeque<u32>) = self
            .free
            .iter()
            .chain(&self.cooling)
            .partition(|&&id| id < preferred);
        let mut next = self.next;
        let mut assigned: FastMap<String, u32> = FastMap::default();
        assigned.reserve(names.len());
        let mut fresh = Vec::new();
        let mut ids = Vec::with_capacity(names.len());
        for &name in names {
            if let Some(&id) = assigned.get(name) {
                ids.push(id);
                continue;
            }
            let id = match self.assigned.get(name) {
                Some(&id) => id,
                None => {
                    // Never-used numbers first: see the module comment.
                    let id = if next < preferred {
                        next += 1;
                        next - 1
                    } else if let Some(id) = free.pop_front() {
                        id
                    } else if next < limit {
                        next += 1;
                        next - 1
                    } else {
                        free_above.pop_front()?
                    };
                    fresh.push(id);
                    id
                }
            };
            assigned.insert(name.to_string(), id);
            ids.push(id);
        }
        free.append(&mut free_above);
        let mut cooling: Vec<u32> = self
            .assigned
            .iter()
            .filter(|(name, _)| !assigned.contains_key(*name))
            .map(|(_, id)| *id)
            .collect();
        cooling.sort_unstable();
        fresh.sort_unstable();
        Some(IdPlan {
            ids,
            fresh,
            next_state: StableIds {
                assigned,
                cooling,
                free,
                next,
            },
        })
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        self.assigned.get(name).copied()
    }
}

/// Rule-counter slots and ENI indices, kept across generations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotTable {
    /// Reason text (`SgRule::id`, `nacl:<acl>/<entry>`,
    /// `nacl:<acl>/default-deny`, `inner-accept:<sg>`) → counter slot.
    pub(crate) rules: StableIds,
    /// ENI id → `EniConfig::eni_index`.
    pub(crate) enis: StableIds,
}

impl Default for SlotTable {
    fn default() -> Self {
        SlotTable {
            rules: StableIds::new(RULE_SLOT_FIRST_DYNAMIC),
            enis: StableIds::new(0),
        }
    }
}

impl SlotTable {
    pub fn new() -> SlotTable {
        SlotTable::default()
    }

    /// The slot the last compile gave a reason (fixed slots included).
    pub fn slot_of(&self, reason: &Reason) -> Option<u32> {
        fixed_slot(reason).or_else(|| self.rules.get(&reason.to_string()))
    }

    /// The index the last compile gave an ENI.
    pub fn eni_index_of(&self, eni_id: &str) -> Option<u32> {
        self.enis.get(eni_id)
    }
}

/// Every number a table may use: the live generation's, the cooling ones of
/// the generation being replaced, and the new one's must fit together.
pub(crate) const RULE_SLOT_LIMIT: u32 = MAX_RULE_SLOTS;
pub(crate) const ENI_INDEX_LIMIT: u32 = MAX_ENIS;

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(ids: &StableIds, names: &[&str]) -> IdPlan {
        ids.plan(names, 100)
            .unwrap_or_else(|| panic!("out of ids for {names:?}"))
    }

    fn id(plan: &IdPlan, names: &[&str], name: &str) -> u32 {
        names
            .iter()
            .position(|n| *n == name)
            .map_or(u32::MAX, |i| plan.ids[i])
    }

    #[test]
    fn names_keep_their_numbers_across_compiles() {
        let first = plan(&StableIds::new(16), &["a", "b", "c", "a"]);
        assert_eq!(first.ids, vec![16, 17, 18, 16]);
        assert_eq!(first.fresh, vec![16, 17, 18]);
        let names = ["c", "a", "d"];
        let second = plan(&first.next_state, &names);
        assert_eq!(id(&second, &names, "a"), 16);
        assert_eq!(id(&second, &names, "c"), 18);
        assert_eq!(id(&second, &names, "d"), 19, "b's 17 is still cooling");
        assert_eq!(second.fresh, vec![19]);
    }

    #[test]
    fn freed_numbers_wait_until_the_never_used_ones_run_out() {
        let first = plan(&StableIds::new(16), &["a", "b"]);
        let second = plan(&first.next_state, &["a"]);
        let third = plan(&second.next_state, &["a", "x"]);
        assert_eq!(third.ids[1], 18, "a never-used number, not b's 17");
        assert_eq!(third.fresh, vec![18]);
    }

    #[test]
    fn freed_numbers_are_reused_oldest_first_once_the_space_is_full() {
        let ids = StableIds::new(0);
        let p = |s: &StableIds, names: &[&str]| {
            s.plan(names, 4)
                .unwrap_or_else(|| panic!("fits"))
                .next_state
        };
        // a..d fill 0..4; b, then a, stop being used.
        let s = p(&ids, &["a", "b", "c", "d"]);
        let s = p(&s, &["a", "c", "d"]);
        let s = p(&s, &["c", "d"]);
        let s = p(&s, &["c", "d"]);
        let plan = s
            .plan(&["c", "d", "x", "y"], 4)
            .unwrap_or_else(|| panic!("fits"));
        assert_eq!(plan.ids[2..], [1, 0], "b's number (freed first), then a's");
    }

    #[test]
    fn preferred_numbers_are_reused_before_numbers_above_them() {
        let p = |s: &StableIds, names: &[&str]| {
            s.plan_preferring(names, 2, 6)
                .unwrap_or_else(|| panic!("fits"))
        };
        let first = p(&StableIds::new(0), &["a", "b"]);
        assert_eq!(first.ids, [0, 1]);
        let second = p(&first.next_state, &["b"]);
        let third = p(&second.next_state, &["b", "c"]);
        assert_eq!(third.ids[1], 0, "a's freed 0, not the never-used 2");
        let fourth = p(&third.next_state, &["b", "c", "d", "e"]);
        assert_eq!(fourth.ids[2..], [2, 3], "above 2 once none below is free");
    }

    #[test]
    fn the_limit_counts_cooling_numbers() {
        let ids = StableIds::new(0);
        let first = ids.plan(&["a", "b"], 3).unwrap_or_else(|| panic!("fits"));
        assert!(
            first.next_state.plan(&["c", "d"], 3).is_none(),
            "a and b still cool, 4 > 3"
        );
        assert!(first.next_state.plan(&["a", "c"], 3).is_some());
    }

    #[test]
    fn a_failed_plan_changes_nothing_and_the_table_round_trips() {
        let mut table = SlotTable::new();
        let planned = table
            .rules
            .plan(&["sg-web/http"], RULE_SLOT_LIMIT)
            .unwrap_or_else(|| panic!("fits"));
        table.rules = planned.next_state;
        let json = serde_json::to_string(&table).unwrap_or_else(|e| panic!("{e}"));
        let back: SlotTable = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, table);
        assert_eq!(
            back.slot_of(&Reason::Rule {
                id: "sg-web/http".into()
            }),
            Some(RULE_SLOT_FIRST_DYNAMIC)
        );
        assert_eq!(
            back.slot_of(&Reason::DefaultAccept),
            Some(RULE_SLOT_DEFAULT_ACCEPT)
        );
    }
}
