//! Map names and the per-CPU verdict counters (`FILTER_STATS`).
//!
//! Every packet the programs see is counted exactly once, under the reason
//! for its verdict, so user space can tell malformed input from policy drops
//! (SPEC §3.2) and the BPF tests can assert which path a packet took.

/// Names of the maps in the eBPF object (at most 15 bytes: the kernel's
/// object-name limit), shared so user space never spells one differently.
pub mod names {
    pub const ACTIVE: &str = "FILTER_ACTIVE";
    pub const CONFIG: &str = "FILTER_CONFIG";
    pub const ENIS: &str = "FILTER_ENIS";
    pub const ENIS_DIRECT: &str = "FILTER_ENIS_DIRECT";
    pub const CLOCK: &str = "FILTER_CLOCK";
    pub const TABLES: &str = "FILTER_TABLES";
    pub const CELLS: &str = "FILTER_CELLS";
    pub const RULE_SETS: &str = "FILTER_RULE_SETS";
    pub const BOUNDS: &str = "FILTER_BOUNDS";
    pub const CT: &str = "FILTER_CT";
    pub const FRAGS: &str = "FILTER_FRAGS";
    pub const STATS: &str = "FILTER_STATS";
    pub const RULE_STATS: &str = "FILTER_RSTATS";
    pub const RULE_STATS_SHARED: &str = "FILTER_RSHARED";
    /// Flow logs (`filter_common::flowlog`): flows without a conntrack
    /// entry, the event ring buffer, and the per-ENI loss counters.
    pub const REJECTS: &str = "FILTER_REJECTS";
    pub const EVENTS: &str = "FILTER_EVENTS";
    pub const FLOWLOSS: &str = "FILTER_FLOWLOSS";

    /// Program names (the entry functions in `filter-ebpf`).
    pub const PROG_XDP: &str = "filter_xdp";
    pub const PROG_TC: &str = "filter_tc";
    /// The interface's ingress on tcx (SPEC §2.4 `hook: tc`).
    pub const PROG_TC_INGRESS: &str = "filter_tc_ingress";
    /// Samples the two clocks for the calibration of `FILTER_CLOCK`.
    pub const PROG_CLOCK: &str = "filter_clock_sample";
}

macro_rules! stats {
    ($($(#[$m:meta])* $name:ident = $idx:expr, $label:literal;)*) => {
        $($(#[$m])* pub const $name: u32 = $idx;)*
        /// Number of counters in `FILTER_STATS`.
        pub const STAT_COUNT: u32 = 32;
        /// `(index, label)` of every counter, for `filterctl status`.
        pub const STAT_LABELS: &[(u32, &str)] = &[$(($name, $label)),*];
    };
}

stats! {
    /// Not IP (ARP and the like): passes (SPEC §3 step 1).
    STAT_PASS_NON_IP = 0, "pass_non_ip";
    /// IPv6 neighbour discovery: passes (SPEC §3 step 1).
    STAT_PASS_ND = 1, "pass_neighbour_discovery";
    /// The interface is not a guarded ENI in the running generation.
    STAT_PASS_UNGUARDED = 2, "pass_unguarded";
    /// Accepted as part of a tracked connection (SPEC §3 step 4).
    STAT_ACCEPT_TRACKED = 3, "accept_tracked";
    /// An ICMP error about a tracked connection (SPEC §3.1).
    STAT_ACCEPT_RELATED = 4, "accept_related";
    /// A first packet accepted by the rules.
    STAT_ACCEPT_NEW = 5, "accept_new";
    /// A later fragment following its accepted first fragment.
    STAT_ACCEPT_FRAGMENT = 6, "accept_fragment";

    /// Malformed (SPEC §3.2): shorter than an Ethernet header.
    STAT_DROP_TRUNC_ETH = 8, "drop_truncated_ethernet";
    /// Malformed: an 802.1Q tag cut short.
    STAT_DROP_TRUNC_VLAN = 9, "drop_truncated_vlan";
    /// Malformed: shorter than an IPv4 header, or IHL past the packet.
    STAT_DROP_TRUNC_IPV4 = 10, "drop_truncated_ipv4";
    /// Malformed: IHL below 5, or IP version not matching the EtherType.
    STAT_DROP_BAD_IHL = 11, "drop_bad_ihl";
    /// Malformed: IPv4 total length shorter than its header or past the frame.
    STAT_DROP_BAD_IPV4_LEN = 12, "drop_bad_ipv4_length";
    /// Malformed: shorter than an IPv6 header.
    STAT_DROP_TRUNC_IPV6 = 13, "drop_truncated_ipv6";
    /// Malformed: IPv6 payload length past the frame.
    STAT_DROP_BAD_IPV6_LEN = 14, "drop_bad_ipv6_length";
    /// Malformed: an IPv6 extension header cut short.
    STAT_DROP_TRUNC_EXT = 15, "drop_truncated_extension";
    /// Malformed: more IPv6 extension headers than the parser walks.
    STAT_DROP_EXT_CHAIN = 16, "drop_extension_chain_too_long";
    /// Malformed: a TCP, UDP or ICMP header cut short (first fragments only).
    STAT_DROP_TRUNC_L4 = 17, "drop_truncated_l4";
    /// Malformed: TCP data offset below 5 or past the packet.
    STAT_DROP_BAD_TCP_OFF = 18, "drop_bad_tcp_offset";

    /// Dropped by a network ACL entry, or no entry matched.
    STAT_DROP_NACL = 20, "drop_nacl";
    /// Dropped by a security-group rule.
    STAT_DROP_SG_RULE = 21, "drop_sg_rule";
    /// Dropped because no security-group rule matched (SPEC §3 step 5.3).
    STAT_DROP_DEFAULT = 22, "drop_default_deny";
    /// A later fragment whose first fragment was never classified.
    STAT_DROP_FRAG_NO_HEAD = 23, "drop_fragment_without_head";
    /// A tracked connection that a new generation no longer allows.
    STAT_DROP_REVALIDATE = 24, "drop_revalidated";
    /// A later fragment following its dropped first fragment.
    STAT_DROP_FRAGMENT = 25, "drop_fragment";
}

/// Whether a counter index counts a drop.
pub const fn stat_is_drop(index: u32) -> bool {
    index >= STAT_DROP_TRUNC_ETH
}
