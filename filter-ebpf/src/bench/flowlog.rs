//! Flow-log events as fast as one CPU makes them (`tests/benches/flowlog.rs`).
use aya_ebpf::programs::TcContext;
use aya_ebpf::{bindings::TC_ACT_OK, helpers::generated::bpf_ktime_get_ns, macros::classifier};
use filter_common::{
    CtEntry, CtKey, CT_UDP, CT_WAYS, DIR_EGRESS, FAMILY_V4, FLOW_EV_CT_NEW, PROTO_UDP,
    RULE_SLOT_DEFAULT_ACCEPT, RULE_SLOT_NONE,
};

use crate::flowlog::ct_event;

/// Each run sends one `FLOW_EV_CT_NEW` event for a flow of its own (the
/// time stamps the key), through [`ct_event`] as the pipeline does, so
/// BPF_PROG_TEST_RUN with `repeat` floods `FILTER_EVENTS` from one CPU
/// while the collector's code drains it on another.
///
/// A TC program, not XDP: every XDP test run installs the program in the
/// XDP dispatcher and waits for an RCU grace period (tens of ms here),
/// which would make the benchmark measure grace periods, not events.
#[classifier]
pub fn filter_flowlog_bench(_ctx: TcContext) -> i32 {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[192, 0, 2, 10]);
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&[198, 51, 100, 7]);
    let key = CtKey {
        ifindex: 1,
        family: FAMILY_V4,
        proto: PROTO_UDP,
        _pad: 0,
        addr_a: a,
        addr_b: b,
        port_a: now as u16,
        port_b: (now >> 16) as u16,
    };
    let entry = CtEntry {
        created_ns: now,
        last_seen_ns: now,
        packets: [1, 0],
        bytes: [128, 0],
        rule_slot: RULE_SLOT_DEFAULT_ACCEPT,
        generation: 1,
        fast_generation: [1; CT_WAYS],
        nacl_slot: [RULE_SLOT_NONE; CT_WAYS],
        state: CT_UDP,
        orig_dir: DIR_EGRESS,
        orig_src_is_a: 1,
        tcp_flags: 0,
        dir_tcp_flags: [0, 0],
        ct_flags: 0,
        _pad: 0,
    };
    ct_event(FLOW_EV_CT_NEW, 0, &key, &entry);
    TC_ACT_OK
}
