//! Privileged tests of `filter::dataplane`: loading (private and pinned
//! maps), writing generations, adopting pinned maps after a restart, and
//! attaching to a veth pair in a private network namespace.
//!
//! They check maps, pins and links, not verdicts (the packet tests do that).
//! Every test uses its own pin directory and netns, removed on drop (also
//! when the test panics), and asserts that nothing is left pinned.
#![expect(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, SystemTime},
};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues},
    programs::{SchedClassifier, TcAttachType},
};
use filter::compile::{Layout, Prefixes};
use filter::dataplane::{
    conntrack::kernel_key, detach_all_pinned, ensure_bpffs, Dataplane, DataplaneError,
    GenerationMaps, LpmEntry, MapSizes, SlotContents,
};
use filter::eval::conntrack::ConnKey;
use filter_common::{
    generation_slot, names, AddrKeyData, CellKey, CtEntry, CtKey, EniConfig, EniKey, GenConfig,
    InnerSummary, PortKeyData, RuleHit, RuleStats, TableMeta, ACTION_ACCEPT, ACTION_DROP,
    ADDR_KEY_FIXED_BITS, CT_TCP_ESTABLISHED, DEFAULT_CT_ENTRIES, FAMILY_V4, FAMILY_V6,
    HOT_RULE_SLOTS, ID_NONE, MAX_ENIS, MAX_RULE_SLOTS, MODE_TAP, PORT_KEY_FIXED_BITS, PROTO_TCP,
    RULE_SLOT_DEFAULT_DENY, RULE_SLOT_FIRST_DYNAMIC, SLOT_ID_BIT, STAT_COUNT,
};
use nix::sched::{setns, CloneFlags};

// ---------------------------------------------------------------------------
// Helpers (private: the shared harness in tests/src is written separately)
// ---------------------------------------------------------------------------

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `<prefix><pid>-<n>`.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A private pin directory under /sys/fs/bpf, removed with everything in
/// it (links detached) on drop.
struct PinDirGuard {
    path: PathBuf,
}

impl PinDirGuard {
    fn new() -> Self {
        ensure_bpffs().expect("mounting bpffs");
        let path = Path::new("/sys/fs/bpf").join(unique("filter-test-"));
        assert!(!path.exists());
        Self { path }
    }
}

impl Drop for PinDirGuard {
    fn drop(&mut self) {
        if let Err(e) = detach_all_pinned(&self.path) {
            eprintln!("cleanup of {}: {e}", self.path.display());
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A network namespace with a veth pair `veth0`/`veth1` (both up), deleted
/// on drop. Made with `ip netns add`, so it lives at /run/netns/<name>.
struct Netns {
    name: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn new() -> Self {
        let ns = Self {
            name: unique("fdp"),
        };
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "-n", &ns.name, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        ]);
        ip(&["-n", &ns.name, "link", "set", "veth0", "up"]);
        ip(&["-n", &ns.name, "link", "set", "veth1", "up"]);
        ns
    }

    /// Moves the calling thread (only) into the namespace until the guard
    /// drops. The mount namespace, and so bpffs, stays the host's.
    fn enter(&self) -> Entered {
        let orig = File::open("/proc/thread-self/ns/net").expect("own netns");
        let target = File::open(Path::new("/run/netns").join(&self.name)).expect("netns file");
        setns(&target, CloneFlags::CLONE_NEWNET).expect("setns into the test netns");
        Entered { orig }
    }

    /// The id of the XDP program on `dev`, from `ip -j link show`.
    fn xdp_prog_id(&self, dev: &str) -> Option<u64> {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-j", "-d", "link", "show", "dev", dev])
            .output()
            .expect("running ip");
        assert!(out.status.success());
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
        let xdp = json.get(0)?.get("xdp")?;
        xdp.get("prog")
            .and_then(|p| p.get("id"))
            .or_else(|| xdp.get("attached")?.get(0)?.get("prog")?.get("id"))
            .and_then(serde_json::Value::as_u64)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

struct Entered {
    orig: File,
}

impl Drop for Entered {
    fn drop(&mut self) {
        setns(&self.orig, CloneFlags::CLONE_NEWNET).expect("back to the original netns");
    }
}

/// Ids of the tcx egress programs on `dev` (call inside the netns).
fn tcx_egress_prog_ids(dev: &str) -> Vec<u32> {
    let (_, progs) = SchedClassifier::query_tcx(dev, TcAttachType::Egress).expect("query tcx");
    progs.iter().map(|p| p.id()).collect()
}

fn v4(a: Ipv4Addr) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&a.octets());
    out
}

/// A TCP destination- or source-port prefix of `table`: the first `bits`
/// bits of `port`.
fn port_prefix<V>(table: u32, bits: u32, port: u16, value: V) -> LpmEntry<PortKeyData, V> {
    LpmEntry {
        prefix_len: PORT_KEY_FIXED_BITS + bits,
        key: PortKeyData {
            table,
            proto: PROTO_TCP,
            _pad: 0,
            port: port.to_be_bytes(),
        },
        value,
    }
}

/// An address prefix of table or rule set `id`: the first `bits` bits of
/// `addr`.
fn addr_prefix<V>(
    id: u32,
    family: u8,
    bits: u32,
    addr: [u8; 16],
    value: V,
) -> LpmEntry<AddrKeyData, V> {
    LpmEntry {
        prefix_len: ADDR_KEY_FIXED_BITS + bits,
        key: AddrKeyData {
            id,
            family,
            _pad: [0; 3],
            addr,
        },
        value,
    }
}

/// A tiny generation with one entry in every per-generation map, and one
/// prefix of every kind laid out as ranges: one ENI at ifindex 1 (what
/// BPF_PROG_TEST_RUN packets carry when no ctx is given) whose tables drop
/// by default. Ids carry the generation's slot bit.
struct Fixture {
    generation: u32,
    config: GenConfig,
    enis: Vec<(EniKey, EniConfig)>,
    cells: Vec<(CellKey, u32)>,
    layout: Layout,
}

impl Fixture {
    fn new(generation: u32) -> Self {
        let slot = generation_slot(generation);
        let bit = if slot == 1 { SLOT_ID_BIT } else { 0 };
        let (t_in, t_out, rule_set) = (bit | 1, bit | 2, bit);
        let drop_table = TableMeta {
            default_action: u32::from(ACTION_DROP),
            default_slot: RULE_SLOT_DEFAULT_DENY,
            inner: InnerSummary::NOBODY,
            ..TableMeta::default()
        };
        let accept = RuleHit {
            action: u32::from(ACTION_ACCEPT),
            slot: RULE_SLOT_FIRST_DYNAMIC,
        };
        let tables = [(t_in, drop_table), (t_out, drop_table)];
        let dport = [port_prefix(t_in, 16, 80, rule_set)];
        let sport = [port_prefix(t_out, 6, 1024, 3)];
        let local = [addr_prefix(
            t_out,
            FAMILY_V6,
            32,
            "2001:db8::".parse::<Ipv6Addr>().unwrap().octets(),
            4,
        )];
        let rules = [addr_prefix(
            rule_set,
            FAMILY_V4,
            24,
            v4(Ipv4Addr::new(192, 0, 2, 0)),
            accept,
        )];
        let inner = [addr_prefix(
            t_in,
            FAMILY_V4,
            32,
            v4(Ipv4Addr::new(198, 51, 100, 7)),
            accept,
        )];
        let layout = Layout::build(
            &Prefixes {
                tables: &tables,
                rule_sets: 1,
                dport: &dport,
                sport: &sport,
                local: &local,
                rules: &rules,
                inner: &inner,
            },
            slot,
        )
        .unwrap();
        Self {
            generation,
            config: GenConfig {
                tcp_syn_ns: 120_000_000_000,
                tcp_established_ns: 910_000_000_000,
                tcp_closing_ns: 10_000_000_000,
                udp_ns: 30_000_000_000,
                udp_stream_ns: 180_000_000_000,
                icmp_ns: 30_000_000_000,
                other_ns: u64::from(generation) * 1_000_000_000,
                on_change: 0,
                ..GenConfig::default()
            },
            enis: vec![(
                EniKey { slot, ifindex: 1 },
                EniConfig {
                    eni_index: 0,
                    mode: MODE_TAP,
                    live: 0,
                    _pad: [0; 2],
                    sg_table: [t_in, t_out],
                    nacl_table: [ID_NONE, ID_NONE],
                },
            )],
            cells: vec![(
                CellKey {
                    table: t_out,
                    dport_class: 1,
                    sport_class: 3,
                    local_class: 4,
                },
                rule_set,
            )],
            layout,
        }
    }

    fn maps(&self) -> GenerationMaps<'_> {
        GenerationMaps {
            generation: self.generation,
            config: &self.config,
            enis: &self.enis,
            cells: &self.cells,
            layout: &self.layout,
        }
    }

    fn contents(&self) -> SlotContents {
        SlotContents::from_generation(&self.maps())
    }
}

/// Writes `f` and checks the switch: FILTER_ACTIVE, the new slot holds
/// exactly `f`, the other slot is empty.
fn write_and_check(dp: &mut Dataplane, f: &Fixture) {
    let summary = dp.write_generation(&f.maps()).expect("write_generation");
    assert_eq!(summary.generation, f.generation);
    assert_eq!(summary.written, f.maps().entry_count());
    assert_eq!(summary.cleanup_error, None);
    assert_eq!(dp.active_generation().unwrap(), f.generation);
    let slot = generation_slot(f.generation);
    assert_eq!(dp.read_slot(slot).unwrap(), f.contents());
    let other = dp.read_slot(slot ^ 1).unwrap();
    assert!(other.is_empty(), "old slot not cleaned: {other:?}");
    assert_eq!(other.config, GenConfig::default());
}

fn assert_gone(path: &Path) {
    assert!(!path.exists(), "{} is still there", path.display());
}

/// A connection from client `192.0.2.<n>` to an HTTPS server, as the
/// kernel keys it at interface 1.
fn ct_key(n: u8) -> CtKey {
    let client = (IpAddr::from([192, 0, 2, n]), 40000);
    let server = (IpAddr::from([198, 51, 100, 1]), 443);
    kernel_key(1, &ConnKey::new("-", PROTO_TCP, client, server).0)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn unpinned_generations_alternate_slots() {
    let mut dp = Dataplane::load(None).expect("load");
    assert_eq!(dp.pin_dir(), None);
    assert_eq!(dp.active_generation().unwrap(), 0);
    assert!(dp.read_slot(0).unwrap().is_empty());
    assert!(dp.read_slot(1).unwrap().is_empty());

    write_and_check(&mut dp, &Fixture::new(1));
    let summary = dp.write_generation(&Fixture::new(2).maps()).unwrap();
    let first = Fixture::new(1);
    assert_eq!(
        summary.deleted,
        first.maps().entry_count() - 1 - first.layout.bounds.len(),
        "config is zeroed, not deleted; bounds stay, unreachable"
    );
    assert_eq!(dp.active_generation().unwrap(), 2);
    assert_eq!(dp.read_slot(0).unwrap(), Fixture::new(2).contents());
    assert!(dp.read_slot(1).unwrap().is_empty());
    write_and_check(&mut dp, &Fixture::new(3));
}

#[test]
fn rejected_generations_change_nothing() {
    let mut dp = Dataplane::load(None).expect("load");
    let running = Fixture::new(1);
    write_and_check(&mut dp, &running);
    let unchanged = |dp: &Dataplane| {
        assert_eq!(dp.active_generation().unwrap(), 1);
        assert_eq!(dp.read_slot(1).unwrap(), running.contents());
        assert!(dp.read_slot(0).unwrap().is_empty());
    };

    // Same parity as the running generation: it would overwrite it.
    for generation in [1, 3, 0] {
        let err = dp
            .write_generation(&Fixture::new(generation).maps())
            .unwrap_err();
        assert!(matches!(err, DataplaneError::BadGeneration { .. }), "{err}");
        unchanged(&dp);
    }

    // An id of the running slot inside the new generation.
    let mut bad = Fixture::new(2);
    bad.layout.rule_sets[0].0 |= SLOT_ID_BIT;
    let err = dp.write_generation(&bad.maps()).unwrap_err();
    assert!(matches!(err, DataplaneError::BadGeneration { .. }), "{err}");
    unchanged(&dp);

    // A table past the slot's half of FILTER_TABLES: it would land in the
    // running slot's.
    let mut bad = Fixture::new(2);
    bad.layout.tables[0].0 = filter_common::MAX_TABLES / 2;
    let err = dp.write_generation(&bad.maps()).unwrap_err();
    assert!(matches!(err, DataplaneError::BadGeneration { .. }), "{err}");
    unchanged(&dp);

    // A run outside the bounds written.
    let mut bad = Fixture::new(2);
    bad.layout.bounds.clear();
    assert!(matches!(
        dp.write_generation(&bad.maps()).unwrap_err(),
        DataplaneError::BadGeneration { .. }
    ));
    unchanged(&dp);

    // The kernel refuses midway (FILTER_ENIS, written last, is full after
    // MAX_ENIS entries): everything written so far is deleted again.
    let mut big = Fixture::new(2);
    let (key, config) = big.enis[0];
    big.enis = (0..=MAX_ENIS)
        .map(|i| {
            let key = EniKey {
                ifindex: key.ifindex + i,
                ..key
            };
            (key, config)
        })
        .collect();
    let err = dp.write_generation(&big.maps()).unwrap_err();
    assert!(
        matches!(err, DataplaneError::Map { map, .. } if map == names::ENIS),
        "{err}"
    );
    unchanged(&dp);

    // And the next good generation goes through.
    write_and_check(&mut dp, &Fixture::new(2));
}

#[test]
fn counters_read_and_reset() {
    let guard = PinDirGuard::new();
    let mut dp = Dataplane::load(Some(&guard.path)).expect("load pinned");
    assert_eq!(dp.stats().unwrap().len(), STAT_COUNT as usize);
    let slot = RULE_SLOT_FIRST_DYNAMIC + 5;
    assert!(dp.rule_stats(slot).unwrap().is_zero());

    // Play the kernel: per-CPU counters with a last hit 2 s ago.
    let now_ktime = {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        u64::try_from(ts.tv_sec).unwrap() * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap()
    };
    let ncpu = aya::util::nr_cpus().unwrap();
    let values: Vec<RuleStats> = (0..ncpu)
        .map(|cpu| RuleStats {
            packets: 1,
            bytes: 100,
            last_hit_ns: if cpu == 0 {
                now_ktime - 2_000_000_000
            } else {
                0
            },
        })
        .collect();
    let mut rstats: PerCpuArray<MapData, RuleStats> = PerCpuArray::try_from(
        aya::maps::Map::PerCpuArray(MapData::from_pin(guard.path.join(names::RULE_STATS)).unwrap()),
    )
    .unwrap();
    rstats
        .set(slot, PerCpuValues::try_from(values).unwrap(), 0)
        .unwrap();

    let c = dp.rule_stats(slot).unwrap();
    assert_eq!(c.packets, ncpu as u64);
    assert_eq!(c.bytes, 100 * ncpu as u64);
    let ago = SystemTime::now()
        .duration_since(c.last_hit.unwrap())
        .unwrap();
    assert!(
        ago > Duration::from_millis(1900) && ago < Duration::from_millis(2500),
        "{ago:?}"
    );
    let all = dp.all_rule_stats(MAX_RULE_SLOTS).unwrap();
    // (last_hit may differ by the clock sample, the kernel value may not)
    assert!(
        all.iter().any(|(s, c2)| *s == slot
            && (c2.packets, c2.bytes, c2.last_hit_ktime_ns)
                == (c.packets, c.bytes, c.last_hit_ktime_ns)),
        "{all:?}"
    );

    dp.reset_rule_stats(slot).unwrap();
    assert!(dp.rule_stats(slot).unwrap().is_zero());
    assert!(!dp
        .all_rule_stats(MAX_RULE_SLOTS)
        .unwrap()
        .iter()
        .any(|(s, _)| *s == slot));

    // A slot past the per-CPU ones counts in the shared array, read only
    // up to the bound the caller gives; batched resets reach both arrays.
    let shared_slot = HOT_RULE_SLOTS + 7;
    let mut shared: Array<MapData, RuleStats> = Array::try_from(aya::maps::Map::Array(
        MapData::from_pin(guard.path.join(names::RULE_STATS_SHARED)).unwrap(),
    ))
    .unwrap();
    let hit = RuleStats {
        packets: 3,
        bytes: 300,
        last_hit_ns: now_ktime,
    };
    shared.set(shared_slot - HOT_RULE_SLOTS, hit, 0).unwrap();
    let c = dp.rule_stats(shared_slot).unwrap();
    assert_eq!((c.packets, c.bytes), (3, 300));
    let counted = |upto| {
        dp.all_rule_stats(upto)
            .unwrap()
            .iter()
            .any(|(s, c)| *s == shared_slot && c.packets == 3)
    };
    assert!(counted(shared_slot + 1));
    assert!(!counted(shared_slot), "read past the bound");
    rstats
        .set(slot, PerCpuValues::try_from(vec![hit; ncpu]).unwrap(), 0)
        .unwrap();
    dp.reset_rule_stats_of(&[slot, shared_slot]).unwrap();
    assert!(dp.rule_stats(slot).unwrap().is_zero());
    assert!(dp.rule_stats(shared_slot).unwrap().is_zero());

    drop(shared);
    drop(rstats);
    drop(dp);
    let path = guard.path.clone();
    drop(guard);
    assert_gone(&path);
}

/// The verifier walks at most a million instructions per program
/// (`BPF_COMPLEXITY_LIMIT_INSNS`); past that a program no longer loads. The
/// data plane keeps a tenth of the budget spare, so a change that eats it
/// fails here, with the numbers, before it fails to load on a kernel whose
/// verifier prunes a little worse (ARCHITECTURE.md, "Verifier budget and
/// calls").
#[test]
fn the_programs_leave_the_verifier_a_tenth_of_its_budget() {
    const LIMIT: u32 = 1_000_000;
    let mut dp = Dataplane::load(None).expect("load");
    let xdp = dp.xdp_program().unwrap().info().unwrap();
    let tc = dp.tc_program().unwrap().info().unwrap();
    let tc_in = dp.tc_ingress_program().unwrap().info().unwrap();
    for (name, info) in [
        ("filter_xdp", xdp),
        ("filter_tc", tc),
        ("filter_tc_ingress", tc_in),
    ] {
        let walked = info
            .verified_instruction_count()
            .expect("the kernel reports verified instructions (5.16 and later)");
        eprintln!("{name}: {walked} verified instructions");
        assert!(
            walked <= LIMIT / 10 * 9,
            "{name}: the verifier walked {walked} of its {LIMIT} instructions; \
             keep a tenth spare (ARCHITECTURE.md, \"Verifier budget and calls\")"
        );
    }
}

/// The programs stamp time from jiffies once the load has calibrated
/// `FILTER_CLOCK` (ARCHITECTURE.md, "Clock"), and the stamps sit on the
/// `CLOCK_MONOTONIC` time line user space converts them on.
#[test]
fn the_calibrated_clock_is_monotonic_time() {
    use aya::programs::{TestRun as _, TestRunOptions};

    let mut dp = Dataplane::load(None).expect("load");
    let clock = dp.clock().unwrap();
    assert!(
        [1_000_000, 3_333_333, 4_000_000, 10_000_000].contains(&clock.tick_ns),
        "{clock:?}"
    );
    // An ARP frame passes (not IP) and stamps the PASS counter's last hit.
    let mut arp = vec![0xffu8; 6];
    arp.extend([2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.resize(60, 0);
    let monotonic = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        u64::try_from(ts.tv_sec).unwrap() * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap()
    };
    let before = monotonic();
    dp.xdp_program()
        .unwrap()
        .test_run(TestRunOptions {
            data_in: Some(&arp),
            ..Default::default()
        })
        .expect("test run");
    let after = monotonic();
    let stamp = dp
        .rule_stats(filter_common::RULE_SLOT_PASS)
        .unwrap()
        .last_hit_ktime_ns;
    // To a tick, either way (jiffies and the coarse clock move at ticks),
    // with another for the calibration's own sampling.
    let slack = 2 * clock.tick_ns;
    assert!(
        stamp + slack >= before && stamp <= after + slack,
        "stamp {stamp} outside {before}..{after} ± {slack}"
    );
}

#[test]
fn pinned_maps_survive_a_restart() {
    let guard = PinDirGuard::new();
    let pin = guard.path.clone();

    let mut first = Dataplane::load(Some(&pin)).expect("load pinned");
    assert_eq!(first.pin_dir(), Some(pin.as_path()));
    for name in [
        names::ACTIVE,
        names::CONFIG,
        names::ENIS,
        names::ENIS_DIRECT,
        names::TABLES,
        names::CELLS,
        names::RULE_SETS,
        names::BOUNDS,
        names::CT,
        names::FRAGS,
        names::STATS,
        names::RULE_STATS,
    ] {
        assert!(pin.join(name).exists(), "{name} not pinned");
    }
    assert!(pin.join("progs").join(names::PROG_XDP).exists());
    assert!(pin.join("progs").join(names::PROG_TC).exists());
    write_and_check(&mut first, &Fixture::new(1));

    // A tracked connection, written the way the kernel would.
    let entry = CtEntry {
        created_ns: 1,
        last_seen_ns: 2,
        packets: [3, 4],
        bytes: [500, 600],
        rule_slot: RULE_SLOT_FIRST_DYNAMIC,
        generation: 1,
        fast_generation: [1; filter_common::CT_WAYS],
        nacl_slot: [filter_common::RULE_SLOT_NONE; filter_common::CT_WAYS],
        state: CT_TCP_ESTABLISHED,
        orig_dir: 0,
        orig_src_is_a: 1,
        tcp_flags: 0x12,
        dir_tcp_flags: [0x02, 0x12],
        ct_flags: 0,
        _pad: 0,
    };
    {
        let mut ct: HashMap<MapData, CtKey, CtEntry> = HashMap::try_from(
            aya::maps::Map::LruHashMap(MapData::from_pin(pin.join(names::CT)).unwrap()),
        )
        .unwrap();
        ct.insert(ct_key(1), entry, 0).unwrap();
        ct.insert(ct_key(2), entry, 0).unwrap();
    }
    assert_eq!(first.conntrack_count().unwrap(), 2);
    assert_eq!(first.conntrack_capacity().unwrap(), DEFAULT_CT_ENTRIES);

    // One owner per pin directory.
    let err = Dataplane::load(Some(&pin)).unwrap_err();
    assert!(matches!(err, DataplaneError::PinDirBusy { .. }), "{err}");
    let err = detach_all_pinned(&pin).unwrap_err();
    assert!(matches!(err, DataplaneError::PinDirBusy { .. }), "{err}");

    // The daemon restarts: the new one adopts generation and conntrack.
    // It comes from a build that pinned no `FILTER_ENIS_DIRECT` (as before
    // the array): the reload creates the array empty and copies the ENIs
    // into it, or the running generation's interfaces would go unguarded
    // (`read_slot` below compares the array too).
    drop(first);
    std::fs::remove_file(pin.join(names::ENIS_DIRECT)).expect("unpin the direct ENIs");
    let mut second = Dataplane::load(Some(&pin)).expect("reload pinned");
    assert_eq!(second.active_generation().unwrap(), 1);
    assert_eq!(second.read_slot(1).unwrap(), Fixture::new(1).contents());
    assert!(second.read_slot(0).unwrap().is_empty());
    assert_eq!(second.lookup_conntrack(&ct_key(1)).unwrap(), Some(entry));
    assert_eq!(second.lookup_conntrack(&ct_key(9)).unwrap(), None);
    let mut all = second.conntrack_entries().unwrap();
    all.sort_by_key(|(k, _)| k.addr_a);
    assert_eq!(all, vec![(ct_key(1), entry), (ct_key(2), entry)]);

    // It goes on with the next generation, and the connections stay.
    write_and_check(&mut second, &Fixture::new(2));
    assert_eq!(second.conntrack_count().unwrap(), 2);

    // `filterctl detach` from the owner removes everything.
    let report = second.destroy().expect("destroy");
    assert!(report.removed_dir);
    assert_gone(&pin);
    drop(guard);
    assert_gone(&pin);
}

#[test]
fn attach_pinned_outlives_the_process_and_detaches() {
    let guard = PinDirGuard::new();
    let pin = guard.path.clone();
    let ns = Netns::new();
    let _in_ns = ns.enter();
    let xdp_pin = pin.join("links/veth0-xdp");
    let tc_pin = pin.join("links/veth0-tc");

    let mut first = Dataplane::load(Some(&pin)).expect("load pinned");
    let first_xdp = first.xdp_program().unwrap().info().unwrap().id();
    let first_tc = first.tc_program().unwrap().info().unwrap().id();
    let a = first.attach("veth0").expect("attach");
    assert!(!a.adopted);
    assert_eq!(a.pins, Some((xdp_pin.clone(), tc_pin.clone())));
    assert!(xdp_pin.exists() && tc_pin.exists());
    assert_eq!(ns.xdp_prog_id("veth0"), Some(u64::from(first_xdp)));
    assert_eq!(tcx_egress_prog_ids("veth0"), vec![first_tc]);
    // Attaching again changes nothing.
    assert_eq!(first.attach("veth0").unwrap(), a);
    assert_eq!(tcx_egress_prog_ids("veth0"), vec![first_tc]);
    assert_eq!(first.attachments(), vec![a]);

    assert!(matches!(
        first.attach("nosuchdev0").unwrap_err(),
        DataplaneError::UnknownInterface(_)
    ));
    assert!(matches!(
        first.attach("../x").unwrap_err(),
        DataplaneError::InvalidInterfaceName(_)
    ));

    // The process goes away: enforcement stays (fail closed).
    drop(first);
    assert_eq!(ns.xdp_prog_id("veth0"), Some(u64::from(first_xdp)));
    assert_eq!(tcx_egress_prog_ids("veth0"), vec![first_tc]);

    // A new process takes the links over with its own programs, in place.
    let mut second = Dataplane::load(Some(&pin)).expect("reload pinned");
    let second_xdp = second.xdp_program().unwrap().info().unwrap().id();
    let second_tc = second.tc_program().unwrap().info().unwrap().id();
    assert_ne!(second_xdp, first_xdp);
    let a = second.attach("veth0").expect("re-attach");
    assert!(a.adopted);
    assert_eq!(ns.xdp_prog_id("veth0"), Some(u64::from(second_xdp)));
    assert_eq!(tcx_egress_prog_ids("veth0"), vec![second_tc]);

    // detach removes both hooks and their pins.
    assert!(second.detach("veth0").unwrap());
    assert!(!second.detach("veth0").unwrap());
    assert_eq!(ns.xdp_prog_id("veth0"), None);
    assert!(tcx_egress_prog_ids("veth0").is_empty());
    assert_gone(&xdp_pin);
    assert_gone(&tc_pin);

    // Attach both ends, exit, then `filterctl detach` from outside.
    second.attach("veth0").unwrap();
    second.attach("veth1").unwrap();
    drop(second);
    assert!(ns.xdp_prog_id("veth1").is_some());
    let report = detach_all_pinned(&pin).expect("detach_all_pinned");
    assert_eq!(report.links.len(), 4, "{report:?}");
    assert!(report.removed_dir);
    assert_eq!(ns.xdp_prog_id("veth0"), None);
    assert_eq!(ns.xdp_prog_id("veth1"), None);
    assert!(tcx_egress_prog_ids("veth0").is_empty());
    assert!(tcx_egress_prog_ids("veth1").is_empty());
    assert_gone(&pin);
    drop(guard);
    assert_gone(&pin);
}

#[test]
fn attach_unpinned_detaches_on_drop() {
    let ns = Netns::new();
    let _in_ns = ns.enter();
    let mut dp = Dataplane::load(None).expect("load");
    let xdp = dp.xdp_program().unwrap().info().unwrap().id();
    let a = dp.attach("veth1").expect("attach");
    assert_eq!(a.pins, None);
    assert_eq!(ns.xdp_prog_id("veth1"), Some(u64::from(xdp)));
    assert_eq!(tcx_egress_prog_ids("veth1").len(), 1);
    drop(dp);
    assert_eq!(ns.xdp_prog_id("veth1"), None);
    assert!(tcx_egress_prog_ids("veth1").is_empty());
}

#[test]
fn incompatible_pinned_maps_are_retired_for_new_ones() {
    let guard = PinDirGuard::new();
    std::fs::create_dir_all(&guard.path).unwrap();
    // A map with FILTER_CT's type and key size but another value size, where
    // an older build would have left FILTER_CT.
    let mut donor = Dataplane::load(None).expect("load");
    let frags = donor.take_map(names::FRAGS).expect("FILTER_FRAGS");
    frags.pin(guard.path.join(names::CT)).unwrap();
    // An upgrade (SPEC §8): the old maps move aside, this build's are new.
    let dp = Dataplane::load(Some(&guard.path)).expect("load over another layout");
    let retired = guard.path.join("retired");
    assert!(
        retired.join(names::CT).exists(),
        "the old FILTER_CT is not retired"
    );
    assert!(guard.path.join(names::CT).exists());
    assert_eq!(dp.lookup_conntrack(&ct_key(1)).unwrap(), None);
    drop(dp);
    drop(frags);
    drop(donor);
    let path = guard.path.clone();
    drop(guard);
    assert_gone(&path);
}

#[test]
fn attach_replaces_links_of_a_recreated_interface() {
    let guard = PinDirGuard::new();
    let pin = guard.path.clone();
    let ns = Netns::new();
    let _in_ns = ns.enter();
    let recreate = || {
        ip(&["-n", &ns.name, "link", "del", "veth0"]);
        ip(&[
            "-n", &ns.name, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        ]);
        ip(&["-n", &ns.name, "link", "set", "veth0", "up"]);
        ip(&["-n", &ns.name, "link", "set", "veth1", "up"]);
    };

    // Within one process: the held links died with the old interface.
    let mut dp = Dataplane::load(Some(&pin)).expect("load pinned");
    let xdp = u64::from(dp.xdp_program().unwrap().info().unwrap().id());
    let before = dp.attach("veth0").unwrap();
    recreate();
    assert_eq!(ns.xdp_prog_id("veth0"), None);
    let after = dp.attach("veth0").unwrap();
    assert_ne!(after.ifindex, before.ifindex);
    assert_eq!(ns.xdp_prog_id("veth0"), Some(xdp));
    assert_eq!(tcx_egress_prog_ids("veth0").len(), 1);

    // Across a restart: the pins name dead links, which are replaced.
    drop(dp);
    recreate();
    let mut dp = Dataplane::load(Some(&pin)).expect("reload pinned");
    let xdp = u64::from(dp.xdp_program().unwrap().info().unwrap().id());
    let a = dp.attach("veth0").unwrap();
    assert!(!a.adopted);
    assert_eq!(ns.xdp_prog_id("veth0"), Some(xdp));
    assert_eq!(tcx_egress_prog_ids("veth0").len(), 1);

    // Across a restart, after a rename: the pinned links still guard the
    // renamed interface, but "veth0" now names another one.
    drop(dp);
    ip(&["-n", &ns.name, "link", "set", "veth0", "down"]);
    ip(&["-n", &ns.name, "link", "set", "veth0", "name", "old0"]);
    ip(&[
        "-n", &ns.name, "link", "add", "veth0", "type", "veth", "peer", "name", "veth2",
    ]);
    ip(&["-n", &ns.name, "link", "set", "veth0", "up"]);
    assert!(ns.xdp_prog_id("old0").is_some());
    let mut dp = Dataplane::load(Some(&pin)).expect("reload pinned");
    let xdp = u64::from(dp.xdp_program().unwrap().info().unwrap().id());
    let a = dp.attach("veth0").unwrap();
    assert!(!a.adopted);
    assert_eq!(ns.xdp_prog_id("veth0"), Some(xdp));
    assert_eq!(tcx_egress_prog_ids("veth0").len(), 1);
    assert_eq!(ns.xdp_prog_id("old0"), None);
    assert!(tcx_egress_prog_ids("old0").is_empty());

    let report = dp.destroy().unwrap();
    assert_eq!(report.links.len(), 2, "{report:?}");
    assert_eq!(ns.xdp_prog_id("veth0"), None);
    assert!(tcx_egress_prog_ids("veth0").is_empty());
    assert_gone(&pin);
    drop(guard);
}

#[test]
fn detach_all_pinned_of_nothing_is_fine() {
    let path = Path::new("/sys/fs/bpf").join(unique("filter-test-absent-"));
    let report = detach_all_pinned(&path).unwrap();
    assert!(report.links.is_empty() && !report.removed_dir);
}

/// SPEC §3.1: the connection table is as large as `conntrack.max_entries`
/// says when the maps are made, and a pinned table keeps its size.
#[test]
fn the_connection_table_takes_its_size_when_made() {
    let private = Dataplane::load_sized(None, 4096, MapSizes::INITIAL).expect("load unpinned");
    assert_eq!(private.conntrack_capacity().unwrap(), 4096);
    drop(private);

    let guard = PinDirGuard::new();
    let first =
        Dataplane::load_sized(Some(&guard.path), 2048, MapSizes::INITIAL).expect("load pinned");
    assert_eq!(first.conntrack_capacity().unwrap(), 2048);
    drop(first);
    let again =
        Dataplane::load_sized(Some(&guard.path), 8192, MapSizes::INITIAL).expect("adopt pinned");
    assert_eq!(again.conntrack_capacity().unwrap(), 2048);
}

/// ARCHITECTURE.md, "Growing the maps": when `FILTER_BOUNDS` or
/// `FILTER_CELLS` is too small for the next generation beside the running
/// one, both are replaced by larger ones holding the running generation's
/// entries, the links move to programs loaded on them, and the other maps
/// (conntrack here) stay. A restart adopts the grown maps.
#[test]
fn the_maps_grow_to_the_need_and_links_follow() {
    let guard = PinDirGuard::new();
    let pin = guard.path.clone();
    let ns = Netns::new();
    let _in_ns = ns.enter();
    let bounds = Fixture::new(1).layout.bounds.len() as u32;
    assert!(
        (9..=16).contains(&bounds),
        "the fixture has {bounds} bounds"
    );
    assert_eq!(Fixture::new(1).cells.len(), 1);
    let small = |bounds, cells| MapSizes { bounds, cells };

    let mut dp =
        Dataplane::load_sized(Some(&pin), DEFAULT_CT_ENTRIES, small(16, 2)).expect("load pinned");
    assert_eq!(dp.map_sizes(), small(16, 2));
    dp.attach("veth0").expect("attach");
    let first_xdp = dp.xdp_program().unwrap().info().unwrap().id();

    // The first fits.
    write_and_check(&mut dp, &Fixture::new(1));
    assert_eq!(dp.map_sizes(), small(16, 2));
    assert_eq!(dp.bounds_region(1).unwrap().start, 0);
    let ct = {
        let mut ct: HashMap<MapData, CtKey, CtEntry> = HashMap::try_from(
            aya::maps::Map::LruHashMap(MapData::from_pin(pin.join(names::CT)).unwrap()),
        )
        .unwrap();
        let entry = CtEntry {
            generation: 1,
            state: CT_TCP_ESTABLISHED,
            ..CtEntry::default()
        };
        ct.insert(ct_key(1), entry, 0).unwrap();
        entry
    };

    // The second's bounds would go after the first's, past the end (its
    // cell fits): the bounds grow to hold the first and two like the
    // second, the cells keep their size, the first's entries are copied,
    // and the link runs the programs loaded on the new maps.
    write_and_check(&mut dp, &Fixture::new(2));
    let grown = (3 * bounds).next_power_of_two();
    assert_eq!(dp.map_sizes(), small(grown, 2));
    assert_eq!(dp.bounds_region(0).unwrap().start, bounds);
    let second_xdp = dp.xdp_program().unwrap().info().unwrap().id();
    assert_ne!(second_xdp, first_xdp);
    assert_eq!(ns.xdp_prog_id("veth0"), Some(u64::from(second_xdp)));
    assert_eq!(dp.attachments().len(), 1);
    assert_eq!(dp.lookup_conntrack(&ct_key(1)).unwrap(), Some(ct));
    for map in [names::BOUNDS, names::CELLS] {
        assert!(!pin.join(format!("{map}-new")).exists());
    }

    // The third fits before the second: no growth.
    write_and_check(&mut dp, &Fixture::new(3));
    assert_eq!(dp.map_sizes(), small(grown, 2));
    assert_eq!(dp.bounds_region(1).unwrap().start, 0);

    // A restart adopts the grown maps and the running generation in them.
    drop(dp);
    let mut again =
        Dataplane::load_sized(Some(&pin), DEFAULT_CT_ENTRIES, MapSizes::INITIAL).expect("reload");
    assert_eq!(again.map_sizes(), small(grown, 2));
    assert_eq!(again.read_slot(1).unwrap(), Fixture::new(3).contents());
    write_and_check(&mut again, &Fixture::new(4));
    drop(again);

    // Cells alone: one cell per generation in a map of one grows it.
    let guard = PinDirGuard::new();
    let mut dp =
        Dataplane::load_sized(Some(&guard.path), DEFAULT_CT_ENTRIES, small(64, 1)).expect("load");
    write_and_check(&mut dp, &Fixture::new(1));
    write_and_check(&mut dp, &Fixture::new(2));
    assert_eq!(dp.map_sizes(), small(64, 4));
    write_and_check(&mut dp, &Fixture::new(3));
    drop(dp);

    // Unpinned, the programs cannot move: a clear error, nothing changed.
    let mut private =
        Dataplane::load_sized(None, DEFAULT_CT_ENTRIES, small(8, 1)).expect("load unpinned");
    let err = private
        .write_generation(&Fixture::new(1).maps())
        .unwrap_err();
    assert!(
        matches!(err, DataplaneError::Full { map, capacity: 8, .. } if map == names::BOUNDS),
        "{err}"
    );
    assert_eq!(private.active_generation().unwrap(), 0);
    for sizes in [small(0, 1), small(8, 0)] {
        let err = Dataplane::load_sized(None, DEFAULT_CT_ENTRIES, sizes).unwrap_err();
        assert!(matches!(err, DataplaneError::MapSize { .. }), "{err}");
    }
}
