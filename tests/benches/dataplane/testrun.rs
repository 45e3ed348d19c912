//! Nanoseconds per packet through the real programs (BPF_PROG_TEST_RUN),
//! minus the empty program measured in the same run.
//!
//! The ENI is interface 1, where test runs arrive. XDP is measured with the
//! ENI in `nic` mode and TC in `tap` mode, so in both cases the packet is
//! ENI ingress: a TCP segment from a remote address to the ENI's port 443.
//!
//! - **first packet, dropped**: a SYN from `probe-drop`'s address. The whole
//!   classification runs (ENI, table, inner access, destination-port class,
//!   the longest-prefix match on the remote address), the rule drops, and
//!   nothing is remembered, so the kernel's `repeat` gives the same first
//!   packet N times. The kernel times the loop (`duration` is the mean per
//!   run); five such runs are averaged.
//! - **first packet, accepted**: a SYN from `probe-accept`'s address. An
//!   accepted first packet creates a conntrack entry, so a repeat would
//!   measure the tracked path from the second run on: instead every sample
//!   is one run (`repeat` 1) of a new connection (a new source port), and
//!   the median of the samples is taken. The empty program is measured the
//!   same way, so the kernel's timer, which a single run pays in full, is
//!   subtracted too. (The dropped first packet is also measured this way,
//!   as a check that both methods agree.)
//! - **established**: an ACK of a connection that went through SYN,
//!   SYN-ACK (the other program, ENI egress) and ACK: one conntrack lookup
//!   and update; repeated like the dropped first packet.
//! - **without flow accounting**: the dropped first packet and the
//!   established packet again, through the variants of
//!   `filter-ebpf/src/bench/unaccounted.rs` on the same maps, alternating run by
//!   run with the data plane's own programs; the difference is what the
//!   flow log's per-packet accounting costs (issue 6).
//!
//! Each measurement checks the verdict and the counter that moved, so a
//! number always belongs to the path it names.
use std::{net::Ipv4Addr, time::Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use aya::{
    programs::{Program, SchedClassifier, TestRun, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};
use filter::{
    compile::{
        compile,
        model::{Hook, Model},
        Compiled, SlotTable,
    },
    dataplane::{Dataplane, GenerationMaps},
    ruleset::{AttachMode, Ruleset},
    verdict::{Packet, Reason},
};
use filter_common::{
    names, PROTO_TCP, STAT_ACCEPT_NEW, STAT_ACCEPT_TRACKED, STAT_COUNT, STAT_DROP_SG_RULE,
};

use filter_tests::packet::{
    tcp_flags::{ACK, PSH, SYN},
    Ipv4, Pkt, Tcp,
};

use crate::rules::{self, ENI_V4, PROBE_ACCEPT, PROBE_DROP, PROBE_PORT};

/// A well-formed Ethernet + IPv4 + TCP frame with `payload` bytes of data;
/// an ACK acknowledges sequence 2000.
fn tcp4(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    payload: usize,
) -> Vec<u8> {
    let ip = Ipv4 {
        id: 1,
        dont_fragment: true,
        ..Ipv4::new(src.octets(), dst.octets())
    };
    let tcp = Tcp {
        seq: 1000,
        ack: if flags & ACK != 0 { 2000 } else { 0 },
        ..Tcp::new(sport, dport).flags(flags)
    };
    Pkt::eth()
        .push(ip)
        .push(tcp)
        .payload(&vec![0x5a; payload])
        .build()
        .bytes
}

pub const NOOP_XDP: &str = "filter_noop_xdp";
pub const NOOP_TC: &str = "filter_noop_tc";
/// The pipeline without per-packet flow accounting
/// (`filter-ebpf/src/bench/unaccounted.rs`).
const UNACCOUNTED_XDP: &str = "filter_xdp_unaccounted";
const UNACCOUNTED_TC: &str = "filter_tc_unaccounted";
pub const XDP_PASS: u32 = 2;
pub const XDP_DROP: u32 = 1;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

/// How much to measure.
#[derive(Clone, Copy, Debug)]
pub struct Effort {
    /// Kernel repeats per timed run.
    pub repeat: u32,
    /// Timed runs averaged.
    pub runs: u32,
    /// Single-run samples (one new connection each).
    pub samples: u32,
    /// Profiling aid (`--profile`): seconds each repeated path runs, unmeasured,
    /// before it is measured.
    pub profile_s: Option<f64>,
}

/// The two programs under test, XDP or TC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prog {
    Xdp,
    Tc,
}

impl Prog {
    pub fn name(self) -> &'static str {
        match self {
            Self::Xdp => "XDP",
            Self::Tc => "TC",
        }
    }
    fn pass(self) -> u32 {
        match self {
            Self::Xdp => XDP_PASS,
            Self::Tc => TC_ACT_OK,
        }
    }
    fn drop_code(self) -> u32 {
        match self {
            Self::Xdp => XDP_DROP,
            Self::Tc => TC_ACT_SHOT,
        }
    }
    /// The attach mode in which this program sees ENI ingress.
    fn mode(self) -> AttachMode {
        match self {
            Self::Xdp => AttachMode::Nic,
            Self::Tc => AttachMode::Tap,
        }
    }
    fn other(self) -> Self {
        match self {
            Self::Xdp => Self::Tc,
            Self::Tc => Self::Xdp,
        }
    }
}

/// One kind of program, XDP and TC: the data plane's, its variant without
/// flow accounting, or the empty one.
pub trait Runner {
    fn xdp(&mut self) -> Result<&mut Xdp>;
    fn tc(&mut self) -> Result<&mut SchedClassifier>;

    /// (return code, kernel ns per run) of `repeat` runs of `frame`.
    fn run(&mut self, prog: Prog, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
        match prog {
            Prog::Xdp => test_run(&*self.xdp()?, frame, repeat),
            Prog::Tc => test_run(&*self.tc()?, frame, repeat),
        }
    }
}

fn test_run<P>(p: &P, frame: &[u8], repeat: u32) -> Result<(u32, f64)>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = aya::TestRunResult>,
{
    let r = p
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    Ok((r.return_value, r.duration.as_nanos() as f64))
}

impl Runner for Dataplane {
    fn xdp(&mut self) -> Result<&mut Xdp> {
        Ok(self.xdp_program()?)
    }

    fn tc(&mut self) -> Result<&mut SchedClassifier> {
        Ok(self.tc_program()?)
    }
}

/// Program `name` of an object, as an XDP program.
pub fn as_xdp<'a>(p: Option<&'a mut Program>, name: &str) -> Result<&'a mut Xdp> {
    Ok(p.ok_or_else(|| anyhow!("the object has no {name}"))?
        .try_into()?)
}

/// Program `name` of an object, as a TC classifier.
fn as_tc<'a>(p: Option<&'a mut Program>, name: &str) -> Result<&'a mut SchedClassifier> {
    Ok(p.ok_or_else(|| anyhow!("the object has no {name}"))?
        .try_into()?)
}

/// The same data plane's maps, through the programs without flow
/// accounting.
struct Unaccounted<'a>(&'a mut Dataplane);

impl Unaccounted<'_> {
    /// Loads both variants into `dp` (once, after `Dataplane::load`).
    fn load(dp: &mut Dataplane) -> Result<()> {
        as_xdp(dp.program_mut(UNACCOUNTED_XDP), UNACCOUNTED_XDP)?.load()?;
        as_tc(dp.program_mut(UNACCOUNTED_TC), UNACCOUNTED_TC)?.load()?;
        Ok(())
    }
}

impl Runner for Unaccounted<'_> {
    fn xdp(&mut self) -> Result<&mut Xdp> {
        as_xdp(self.0.program_mut(UNACCOUNTED_XDP), UNACCOUNTED_XDP)
    }

    fn tc(&mut self) -> Result<&mut SchedClassifier> {
        as_tc(self.0.program_mut(UNACCOUNTED_TC), UNACCOUNTED_TC)
    }
}

/// The benchmark's object for programs that use none of the data plane's
/// maps: the maps come along anyway, so the big preallocated ones are
/// made small.
pub fn load_mapless() -> Result<Ebpf> {
    let object = filter::dataplane::object::bench_object()?;
    EbpfLoader::new()
        .map_max_entries(names::CT, 1)
        .map_max_entries(names::FRAGS, 1)
        .load(object)
        .context("loading the eBPF object")
}

/// The empty programs (`filter-ebpf/src/bench/noop.rs`), from the
/// benchmark's object.
pub struct Noop {
    ebpf: Ebpf,
}

impl Noop {
    pub fn load() -> Result<Self> {
        let mut ebpf = load_mapless()?;
        as_xdp(ebpf.program_mut(NOOP_XDP), NOOP_XDP)?.load()?;
        as_tc(ebpf.program_mut(NOOP_TC), NOOP_TC)?.load()?;
        Ok(Self { ebpf })
    }
}

impl Runner for Noop {
    fn xdp(&mut self) -> Result<&mut Xdp> {
        as_xdp(self.ebpf.program_mut(NOOP_XDP), NOOP_XDP)
    }

    fn tc(&mut self) -> Result<&mut SchedClassifier> {
        as_tc(self.ebpf.program_mut(NOOP_TC), NOOP_TC)
    }
}

/// Mean kernel ns per run over `effort.runs` runs of `effort.repeat`,
/// every run returning `code`.
pub fn repeated(
    r: &mut dyn Runner,
    prog: Prog,
    frame: &[u8],
    code: u32,
    effort: Effort,
) -> Result<f64> {
    let mut total = 0.0;
    for _ in 0..effort.runs {
        let (got, ns) = r.run(prog, frame, effort.repeat)?;
        ensure!(
            got == code,
            "{} returned {got}, expected {code}",
            prog.name()
        );
        total += ns;
    }
    Ok(total / f64::from(effort.runs))
}

/// Mean kernel ns per run of `frame` through the data plane and through
/// its variant without flow accounting, each returning `code`: the two
/// alternate run by run, so the machine's drift weighs on both alike and
/// their difference stays meaningful.
fn paired(
    dp: &mut Dataplane,
    prog: Prog,
    frame: &[u8],
    code: u32,
    effort: Effort,
) -> Result<(f64, f64)> {
    let once = Effort { runs: 1, ..effort };
    let (mut with, mut without) = (0.0, 0.0);
    for _ in 0..effort.runs {
        with += repeated(dp, prog, frame, code, once)?;
        without += repeated(&mut Unaccounted(dp), prog, frame, code, once)?;
    }
    let runs = f64::from(effort.runs);
    Ok((with / runs, without / runs))
}

/// Profiling aid (`--profile`): runs `frame` unmeasured for the time asked,
/// announced on stderr, so a `perf record -a` meanwhile sees this path only.
fn profile(r: &mut dyn Runner, prog: Prog, frame: &[u8], path: &str, effort: Effort) -> Result<()> {
    let Some(seconds) = effort.profile_s else {
        return Ok(());
    };
    eprintln!("profile: start {path} on {} ({seconds} s)", prog.name());
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds {
        r.run(prog, frame, effort.repeat)?;
    }
    eprintln!("profile: end");
    Ok(())
}

/// Profiling aid (`--profile`) for the accepted first packet: single runs
/// of new connections from `src` for the time asked, announced on stderr.
/// Each run's connection is new, so the local address moves on through
/// `10.0.0.0/8` every 16,384 source ports (the rules do not look at it);
/// run long enough, the conntrack table fills and its LRU evicts, as it
/// would under a steady stream of new connections.
fn profile_accepted(dp: &mut Dataplane, prog: Prog, src: Ipv4Addr, effort: Effort) -> Result<()> {
    let Some(seconds) = effort.profile_s else {
        return Ok(());
    };
    eprintln!("profile: start accepted on {} ({seconds} s)", prog.name());
    let start = Instant::now();
    let mut i: u32 = 0;
    while start.elapsed().as_secs_f64() < seconds {
        i = i.wrapping_add(1);
        let local = Ipv4Addr::from(0x0a00_0000 | ((i >> 14) & 0x00ff_ffff));
        let sport = 1024 + (i & 0x3fff) as u16;
        dp.run(prog, &tcp4(src, sport, local, PROBE_PORT, SYN, 0), 1)?;
    }
    eprintln!("profile: end");
    Ok(())
}

/// Median kernel ns of single runs of `frame(i)`, each returning `code`.
fn singles(
    r: &mut dyn Runner,
    prog: Prog,
    mut frame: impl FnMut(u32) -> Vec<u8>,
    code: u32,
    samples: u32,
) -> Result<f64> {
    let mut ns = Vec::with_capacity(samples as usize);
    for i in 0..samples {
        let (got, t) = r.run(prog, &frame(i), 1)?;
        ensure!(
            got == code,
            "{} returned {got}, expected {code}",
            prog.name()
        );
        ns.push(t);
    }
    ns.sort_by(f64::total_cmp);
    Ok(ns[ns.len() / 2])
}

/// The empty programs' cost, both ways.
#[derive(Clone, Copy, Debug, Default)]
pub struct Baseline {
    pub repeated: f64,
    pub single: f64,
}

pub fn baseline(noop: &mut Noop, prog: Prog, effort: Effort) -> Result<Baseline> {
    let frame = tcp4(
        Ipv4Addr::new(198, 51, 100, 7),
        40000,
        ENI_V4,
        PROBE_PORT,
        SYN,
        0,
    );
    Ok(Baseline {
        repeated: repeated(noop, prog, &frame, prog.pass(), effort)?,
        single: singles(noop, prog, |_| frame.clone(), prog.pass(), effort.samples)?,
    })
}

/// Raw ns per packet of one rule count and program.
#[derive(Clone, Copy, Debug, Default)]
pub struct Costs {
    pub drop_first: f64,
    pub drop_first_single: f64,
    pub accept_first_single: f64,
    pub established: f64,
    /// The established packet again, after an apply that adds a NACL.
    pub established_nacl: f64,
    /// The same packets through the programs without flow accounting.
    pub drop_first_unaccounted: f64,
    pub established_unaccounted: f64,
}

/// The data plane with the ENI on interface 1 and a generation per
/// measurement.
pub struct Bench {
    dp: Dataplane,
    slots: SlotTable,
    generation: u32,
    /// Next source port for a new connection (unique in the run, so no
    /// sample meets an entry an earlier one left).
    next_port: u32,
}

/// Compile and write time of a generation.
pub struct Applied {
    pub compile_s: f64,
    pub write_s: f64,
    pub plan: Compiled,
}

impl Bench {
    pub fn new() -> Result<Self> {
        // The benchmark's object: the data plane and its variants on one set
        // of maps.
        let object = filter::dataplane::object::bench_object()?;
        let mut dp = Dataplane::load_object(object, None).context("loading the data plane")?;
        Unaccounted::load(&mut dp).context("loading the programs without flow accounting")?;
        Ok(Self {
            dp,
            slots: SlotTable::new(),
            generation: 0,
            next_port: 1024,
        })
    }

    /// The data plane, to attach it.
    pub fn dataplane(&mut self) -> &mut Dataplane {
        &mut self.dp
    }

    /// Compiles `rs` with its ENI on `ifindex` and writes it as the next
    /// generation.
    pub fn apply(&mut self, rs: &Ruleset, ifindex: u32) -> Result<Applied> {
        let generation = self.generation + 1;
        let start = Instant::now();
        let plan = compile(rs, generation, &|_| Some(ifindex), &mut self.slots)
            .map_err(|e| anyhow!("compiling: {e}"))?;
        let compile_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        for slot in &plan.fresh_slots {
            self.dp.reset_rule_stats(*slot)?;
        }
        self.dp
            .write_generation(&GenerationMaps::from(&plan))
            .with_context(|| format!("writing generation {generation}"))?;
        self.generation = generation;
        Ok(Applied {
            compile_s,
            write_s: start.elapsed().as_secs_f64(),
            plan,
        })
    }

    fn port(&mut self) -> Result<u16> {
        let port = u16::try_from(self.next_port)
            .map_err(|_| anyhow!("out of source ports for new connections: fewer samples"))?;
        self.next_port += 1;
        Ok(port)
    }

    pub fn stats(&self) -> Result<[u64; STAT_COUNT as usize]> {
        Ok(self.dp.stats()?)
    }

    /// Checks that `stat` moved by `n` since `before`.
    fn moved(
        &self,
        before: &[u64; STAT_COUNT as usize],
        stat: u32,
        n: u64,
        what: &str,
    ) -> Result<()> {
        let after = self.stats()?;
        let got = after[stat as usize] - before[stat as usize];
        ensure!(
            got == n,
            "{what}: counter {stat} moved by {got}, expected {n}"
        );
        Ok(())
    }

    /// Measures `bench`'s rule set on `prog`.
    pub fn measure(
        &mut self,
        bench: &rules::Bench,
        prog: Prog,
        effort: Effort,
    ) -> Result<(Costs, Applied)> {
        let applied = self.apply(&attached_for(&bench.ruleset, prog), 1)?;
        check_probes(&applied.plan, bench, prog)?;
        let remote_port = |p: u16| p;
        let mut costs = Costs::default();

        let drop_frame = tcp4(
            bench.probe_drop,
            remote_port(40000),
            ENI_V4,
            PROBE_PORT,
            SYN,
            0,
        );
        profile(&mut self.dp, prog, &drop_frame, "dropped", effort)?;
        let before = self.stats()?;
        (costs.drop_first, costs.drop_first_unaccounted) =
            paired(&mut self.dp, prog, &drop_frame, prog.drop_code(), effort)?;
        self.moved(
            &before,
            STAT_DROP_SG_RULE,
            2 * u64::from(effort.repeat * effort.runs),
            "first packet, dropped (with and without flow accounting)",
        )?;
        costs.drop_first_single = singles(
            &mut self.dp,
            prog,
            |_| drop_frame.clone(),
            prog.drop_code(),
            effort.samples,
        )?;

        let first = self.next_port;
        for _ in 0..effort.samples {
            self.port()?;
        }
        let accept = bench.probe_accept;
        profile_accepted(&mut self.dp, prog, accept, effort)?;
        let before = self.stats()?;
        costs.accept_first_single = singles(
            &mut self.dp,
            prog,
            |i| tcp4(accept, (first + i) as u16, ENI_V4, PROBE_PORT, SYN, 0),
            prog.pass(),
            effort.samples,
        )?;
        self.moved(
            &before,
            STAT_ACCEPT_NEW,
            u64::from(effort.samples),
            "first packet, accepted",
        )?;

        // A connection through its handshake; then its ACKs.
        let port = self.port()?;
        let syn = tcp4(accept, port, ENI_V4, PROBE_PORT, SYN, 0);
        let syn_ack = tcp4(ENI_V4, PROBE_PORT, accept, port, SYN | ACK, 0);
        let ack = tcp4(accept, port, ENI_V4, PROBE_PORT, ACK, 0);
        let data = tcp4(accept, port, ENI_V4, PROBE_PORT, ACK | PSH, 64);
        for (p, frame) in [(prog, &syn), (prog.other(), &syn_ack), (prog, &ack)] {
            let (code, _) = self.dp.run(p, frame, 1)?;
            ensure!(
                code == p.pass(),
                "the handshake was refused at {}",
                p.name()
            );
        }
        profile(&mut self.dp, prog, &data, "established", effort)?;
        let before = self.stats()?;
        (costs.established, costs.established_unaccounted) =
            paired(&mut self.dp, prog, &data, prog.pass(), effort)?;
        self.moved(
            &before,
            STAT_ACCEPT_TRACKED,
            2 * u64::from(effort.repeat * effort.runs),
            "established (with and without flow accounting)",
        )?;

        // The same connection after an apply that puts a NACL on the
        // vSwitch: its next packet is revalidated and meets the NACL, the
        // ones after that take the fast path, which remembers the NACL's
        // verdict.
        self.apply(&attached_for(&bench.with_nacl, prog), 1)?;
        let before = self.stats()?;
        costs.established_nacl = repeated(&mut self.dp, prog, &data, prog.pass(), effort)?;
        self.moved(
            &before,
            STAT_ACCEPT_TRACKED,
            u64::from(effort.repeat * effort.runs),
            "established, NACL on the vSwitch",
        )?;
        Ok((costs, applied))
    }
}

/// `rs` with its ENIs attached so that `prog` sees their ingress.
fn attached_for(rs: &Ruleset, prog: Prog) -> Ruleset {
    let mut rs = rs.clone();
    for eni in &mut rs.enis {
        eni.mode = prog.mode();
    }
    rs
}

/// The probes must be decided by their own rules (no generated rule at
/// priority 1 overrides them), checked on the compiled maps.
fn check_probes(plan: &Compiled, bench: &rules::Bench, prog: Prog) -> Result<()> {
    let model = Model::new(plan);
    let hook = match prog {
        Prog::Xdp => Hook::Xdp,
        Prog::Tc => Hook::Tc,
    };
    for (src, want) in [
        (bench.probe_accept, PROBE_ACCEPT),
        (bench.probe_drop, PROBE_DROP),
    ] {
        let pkt = Packet {
            src: src.into(),
            dst: ENI_V4.into(),
            proto: PROTO_TCP,
            src_port: 40000,
            dst_port: PROBE_PORT,
            icmp_type: 0,
        };
        let got = model.classify(1, hook, &pkt);
        if got.decision.reason
            != (Reason::Rule {
                id: want.to_owned(),
            })
        {
            bail!(
                "the probe from {src} is decided by {} instead of {want}",
                got.decision.reason
            );
        }
    }
    Ok(())
}
