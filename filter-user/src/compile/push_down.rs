//! Compile-time push-down: for every stored prefix, the strongest rule whose
//! prefix contains it (ARCHITECTURE.md, "Why step 7 is right").
//!
//! With that value on every stored prefix, one longest-prefix match on the
//! remote address yields the strongest rule among all rules that contain the
//! address: the longest stored prefix containing an address lies inside every
//! other stored prefix that contains it.
use super::prefix::Prefix;

/// `items` are `(prefix, rank)` pairs, smaller rank stronger, in any order and
/// with repeats. Returns each distinct prefix once, in pre-order, with the
/// smallest rank among the items whose prefix contains it.
pub(crate) fn push_down(items: &mut [(Prefix, u32)]) -> Vec<(Prefix, u32)> {
    items.sort_unstable();
    let mut out: Vec<(Prefix, u32)> = Vec::with_capacity(items.len());
    // Ancestors of the current prefix (each holding its resolved rank);
    // pre-order means a prefix's ancestors are exactly the stack entries left
    // after popping those that do not contain it.
    let mut stack: Vec<(Prefix, u32)> = Vec::new();
    let mut i = 0;
    while i < items.len() {
        let (prefix, own) = items[i]; // sorted: the first of a prefix is its strongest
        while i < items.len() && items[i].0 == prefix {
            i += 1;
        }
        while stack.last().is_some_and(|(top, _)| !top.contains(&prefix)) {
            stack.pop();
        }
        let resolved = stack
            .last()
            .map_or(own, |&(_, inherited)| inherited.min(own));
        stack.push((prefix, resolved));
        out.push((prefix, resolved));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        Prefix::from_net(&s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
    }

    #[test]
    fn a_stronger_wide_rule_overrides_narrower_weaker_ones() {
        let mut items = vec![
            (p("10.0.0.0/24"), 5),
            (p("10.0.0.0/8"), 1),
            (p("10.0.0.7/32"), 9),
            (p("11.0.0.0/8"), 3),
        ];
        let out = push_down(&mut items);
        assert_eq!(
            out,
            vec![
                (p("10.0.0.0/8"), 1),
                (p("10.0.0.0/24"), 1),
                (p("10.0.0.7/32"), 1),
                (p("11.0.0.0/8"), 3)
            ]
        );
    }

    #[test]
    fn a_narrower_stronger_rule_keeps_its_rank_and_siblings_do_not_inherit_it() {
        let mut items = vec![
            (p("0.0.0.0/0"), 7),
            (p("10.0.0.0/25"), 2),
            (p("10.0.0.128/25"), 8),
            (p("10.0.0.0/25"), 4),
            (p("::/0"), 6),
        ];
        let out = push_down(&mut items);
        assert_eq!(
            out,
            vec![
                (p("0.0.0.0/0"), 7),
                (p("10.0.0.0/25"), 2),
                (p("10.0.0.128/25"), 7),
                (p("::/0"), 6)
            ]
        );
    }

    #[test]
    fn the_families_never_mix() {
        let mut items = vec![(p("0.0.0.0/0"), 1), (p("::/128"), 5)];
        assert_eq!(
            push_down(&mut items),
            vec![(p("0.0.0.0/0"), 1), (p("::/128"), 5)]
        );
    }

    /// Against a brute force on every prefix of a small space.
    #[test]
    fn matches_brute_force() {
        let nets = [
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.0/24",
            "10.1.2.3/32",
            "10.128.0.0/9",
            "0.0.0.0/1",
            "10.1.0.0/17",
        ];
        let mut items: Vec<(Prefix, u32)> = nets
            .iter()
            .enumerate()
            .map(|(i, n)| (p(n), (i as u32 * 7) % 5))
            .collect();
        let all = items.clone();
        for (prefix, rank) in push_down(&mut items) {
            let expected = all
                .iter()
                .filter(|(q, _)| q.contains(&prefix))
                .map(|(_, r)| *r)
                .min();
            assert_eq!(Some(rank), expected, "{prefix:?}");
        }
    }
}
