//! The property: on random rule sets and packets, the lookup model of the
//! compiled maps decides exactly what the reference evaluator decides, the
//! verdict and the reason.
use proptest::prelude::*;

use super::{
    compile::assert_well_formed,
    random::{edges, packet, ruleset, Tape},
};
use crate::{
    compile::{
        compile,
        model::{Hook, Model},
        shadow_warnings, SlotTable,
    },
    eval::{evaluate, evaluate_sg, SgOutcome},
    ruleset::{AttachMode, Direction, Ruleset},
    verdict::Reason,
};

/// Packets tried per rule set.
const PACKETS: usize = 24;

fn ifindex_of(rs: &Ruleset) -> impl Fn(&str) -> Option<u32> + '_ {
    move |name| {
        rs.enis
            .iter()
            .position(|e| e.interface == name)
            .map(|i| i as u32 + 1)
    }
}

fn check(numbers: &[u32]) -> Result<(), TestCaseError> {
    let mut tape = Tape::new(numbers);
    let rs = ruleset(&mut tape);
    let generation = tape.pick(4) as u32;
    let compiled = compile(&rs, generation, &ifindex_of(&rs), &mut SlotTable::new())
        .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
    assert_well_formed(&compiled);
    let model = Model::new(&compiled);
    let edges = edges(&rs);
    for _ in 0..PACKETS {
        let eni = tape.pick(rs.enis.len());
        let direction = if tape.pick(2) == 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        let pkt = packet(&mut tape, &rs, &edges, eni, direction);
        let expected = evaluate(&rs, eni, direction, &pkt).decision;
        let ifindex = eni as u32 + 1;
        let got = model.classify_direction(ifindex, direction, &pkt);
        prop_assert_eq!(
            &got.decision,
            &expected,
            "eni {} {:?} {:?}",
            eni,
            direction,
            pkt
        );
        // The same packet through the hook that sees it in this direction.
        let hook = match (rs.enis[eni].mode, direction) {
            (AttachMode::Tap, Direction::Egress) | (AttachMode::Nic, Direction::Ingress) => {
                Hook::Xdp
            }
            (AttachMode::Tap, Direction::Ingress) | (AttachMode::Nic, Direction::Egress) => {
                Hook::Tc
            }
        };
        let via_hook = model.classify(ifindex, hook, &pkt);
        prop_assert_eq!(via_hook.direction, Some(direction));
        prop_assert_eq!(&via_hook.decision, &expected);
    }
    // A shadow warning's witness matches the shadowed rule, yet something
    // stronger decides it (the covering rule, or a rule or inner accept
    // stronger still).
    for w in shadow_warnings(&rs) {
        let eni = rs
            .eni_by_id(&w.enis[0])
            .ok_or_else(|| TestCaseError::fail("warning names no ENI"))?;
        let outcome = evaluate_sg(&rs, eni, w.direction, &w.witness);
        prop_assert_ne!(
            &outcome.decision().reason,
            &Reason::Rule { id: w.rule.clone() },
            "{}",
            w
        );
        prop_assert!(
            !matches!(outcome, SgOutcome::NoMatch { .. }),
            "witness matches nothing: {}",
            w
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn compiled_lookups_agree_with_the_evaluator(numbers in prop::collection::vec(any::<u32>(), 0..1200)) {
        check(&numbers)?;
    }
}

/// The simplest rule set (an empty tape) compiles and agrees too.
#[test]
fn the_empty_tape_agrees() {
    check(&[]).unwrap_or_else(|e| panic!("{e}"));
}
