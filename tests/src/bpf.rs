//! The real data-plane object, loaded for one test with fresh, unpinned
//! maps: run crafted frames through both programs with BPF_PROG_TEST_RUN,
//! read the verdict counters, attach to an interface.
//!
//! Without `ctx_in`, a test run sees the packet arrive on interface 1
//! (loopback of the caller's namespace) in both programs; with empty maps
//! that interface is not a guarded ENI.
use std::{collections::BTreeMap, fmt};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{Map, MapData, PerCpuArray},
    programs::{
        tc::{self, SchedClassifierLinkId},
        xdp::XdpLinkId,
        ProgramInfo, SchedClassifier, TcAttachType, TestRun, TestRunOptions, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use filter::ruleset::{AttachMode, Direction};
use filter_common::{names, STAT_COUNT, STAT_LABELS};

/// XDP return codes.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
/// TC return codes (`TC_ACT_*`).
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;

/// One of the two programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prog {
    /// `filter_xdp`: interface ingress.
    Xdp,
    /// `filter_tc`: interface egress (clsact/tcx).
    Tc,
}

impl Prog {
    pub const BOTH: [Prog; 2] = [Prog::Xdp, Prog::Tc];

    /// The program's name in the object.
    pub fn name(self) -> &'static str {
        match self {
            Self::Xdp => names::PROG_XDP,
            Self::Tc => names::PROG_TC,
        }
    }

    /// What the program returns for `verdict`.
    pub fn code(self, verdict: Verdict) -> u32 {
        match (self, verdict) {
            (Self::Xdp, Verdict::Pass) => XDP_PASS,
            (Self::Xdp, Verdict::Drop) => XDP_DROP,
            (Self::Tc, Verdict::Pass) => TC_ACT_OK,
            (Self::Tc, Verdict::Drop) => TC_ACT_SHOT,
            (_, Verdict::Other(code)) => code,
        }
    }

    /// The verdict a return code means for this program.
    pub fn verdict(self, code: u32) -> Verdict {
        match (self, code) {
            (Self::Xdp, XDP_PASS) | (Self::Tc, TC_ACT_OK) => Verdict::Pass,
            (Self::Xdp, XDP_DROP) | (Self::Tc, TC_ACT_SHOT) => Verdict::Drop,
            (_, code) => Verdict::Other(code),
        }
    }

    /// The ENI direction this program sees on an interface in `mode`
    /// (SPEC §2.4).
    pub fn direction(self, mode: AttachMode) -> Direction {
        match (mode, self) {
            (AttachMode::Tap, Prog::Xdp) | (AttachMode::Nic, Prog::Tc) => Direction::Egress,
            (AttachMode::Tap, Prog::Tc) | (AttachMode::Nic, Prog::Xdp) => Direction::Ingress,
        }
    }

    /// The program that sees ENI direction `dir` on an interface in `mode`.
    pub fn seeing(mode: AttachMode, dir: Direction) -> Prog {
        match (mode, dir) {
            (AttachMode::Tap, Direction::Egress) | (AttachMode::Nic, Direction::Ingress) => {
                Prog::Xdp
            }
            (AttachMode::Tap, Direction::Ingress) | (AttachMode::Nic, Direction::Egress) => {
                Prog::Tc
            }
        }
    }

    /// Runs `frame` through this program of `dp` once (BPF_PROG_TEST_RUN):
    /// its verdict.
    pub fn test_run(self, dp: &mut filter::dataplane::Dataplane, frame: &[u8]) -> Result<Verdict> {
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..Default::default()
        };
        let code = match self {
            Prog::Xdp => dp.xdp_program()?.test_run(opts),
            Prog::Tc => dp.tc_program()?.test_run(opts),
        }
        .with_context(|| format!("BPF_PROG_TEST_RUN of {self}"))?
        .return_value;
        Ok(self.verdict(code))
    }
}

impl fmt::Display for Prog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Xdp => "xdp",
            Self::Tc => "tc",
        })
    }
}

/// A program's decision, independent of which program made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `XDP_PASS` / `TC_ACT_OK`.
    Pass,
    /// `XDP_DROP` / `TC_ACT_SHOT`.
    Drop,
    /// Any other return code (never expected).
    Other(u32),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pass => f.write_str("PASS"),
            Self::Drop => f.write_str("DROP"),
            Self::Other(code) => write!(f, "return code {code}"),
        }
    }
}

/// The `FILTER_STATS` counters summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats(pub [u64; STAT_COUNT as usize]);

impl Stats {
    /// Reads every counter of a `FILTER_STATS` map.
    pub fn read(map: &Map) -> Result<Self> {
        let array = PerCpuArray::<_, u64>::try_from(map)
            .context("FILTER_STATS is not a per-CPU array of u64")?;
        let mut out = [0u64; STAT_COUNT as usize];
        for (index, slot) in (0u32..).zip(out.iter_mut()) {
            let values = array
                .get(&index, 0)
                .with_context(|| format!("reading FILTER_STATS[{index}]"))?;
            *slot = values.iter().copied().fold(0u64, u64::wrapping_add);
        }
        Ok(Self(out))
    }

    /// Reads a `FILTER_STATS` map pinned at `path`.
    pub fn read_pinned(path: &std::path::Path) -> Result<Self> {
        let data = MapData::from_pin(path)
            .with_context(|| format!("opening pinned {}", path.display()))?;
        Self::read(&Map::PerCpuArray(data))
    }

    pub fn get(&self, index: u32) -> u64 {
        self.0.get(index as usize).copied().unwrap_or_default()
    }

    /// What changed since `before`.
    pub fn since(&self, before: &Stats) -> StatsDelta {
        StatsDelta(
            (0u32..)
                .zip(self.0.iter().zip(before.0.iter()))
                .filter(|(_, (a, b))| a != b)
                .map(|(i, (a, b))| (i, a.wrapping_sub(*b)))
                .collect(),
        )
    }
}

/// Counters that moved, by index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsDelta(pub BTreeMap<u32, u64>);

impl StatsDelta {
    /// The change that "`stat` moved by one and nothing else did" is.
    pub fn only(stat: u32) -> Self {
        Self(BTreeMap::from([(stat, 1)]))
    }
    pub fn get(&self, stat: u32) -> u64 {
        self.0.get(&stat).copied().unwrap_or_default()
    }
    pub fn total(&self) -> u64 {
        self.0.values().copied().fold(0, u64::wrapping_add)
    }
    /// The drop counters that moved.
    pub fn drops(&self) -> Self {
        Self(
            self.0
                .iter()
                .filter(|(i, _)| filter_common::stat_is_drop(**i))
                .map(|(i, v)| (*i, *v))
                .collect(),
        )
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for StatsDelta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no counter moved");
        }
        for (n, (index, delta)) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} +{delta}", stat_label(*index))?;
        }
        Ok(())
    }
}

/// The label of a counter (`filterctl status` names), or `stat[N]`.
pub fn stat_label(index: u32) -> String {
    STAT_LABELS.iter().find(|(i, _)| *i == index).map_or_else(
        || format!("stat[{index}]"),
        |(_, label)| (*label).to_owned(),
    )
}

/// One test run: what the program returned and which counters moved.
#[derive(Clone, Debug)]
pub struct Run {
    pub verdict: Verdict,
    pub delta: StatsDelta,
}

/// Both programs attached to one interface.
#[derive(Debug)]
pub struct Attached {
    xdp: XdpLinkId,
    tc: SchedClassifierLinkId,
}

/// The loaded object. Dropping it detaches whatever is still attached and
/// unloads the programs and maps.
#[derive(Debug)]
pub struct Dataplane {
    ebpf: Ebpf,
}

impl Dataplane {
    /// Loads the object embedded in `filter` and both programs, with fresh
    /// maps nothing else shares. A verifier rejection shows the log.
    pub fn load() -> Result<Self> {
        crate::require_root()?;
        let object = filter::dataplane::object::object()?;
        let mut ebpf = EbpfLoader::new()
            .load(object)
            .context("loading the eBPF object (maps)")?;
        let xdp: &mut Xdp = program_mut(&mut ebpf, names::PROG_XDP)?.try_into()?;
        xdp.load()
            .with_context(|| format!("loading {}", names::PROG_XDP))?;
        let tc: &mut SchedClassifier = program_mut(&mut ebpf, names::PROG_TC)?.try_into()?;
        tc.load()
            .with_context(|| format!("loading {}", names::PROG_TC))?;
        Ok(Self { ebpf })
    }

    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    pub fn xdp(&self) -> Result<&Xdp> {
        Ok(program(&self.ebpf, names::PROG_XDP)?.try_into()?)
    }

    pub fn xdp_mut(&mut self) -> Result<&mut Xdp> {
        Ok(program_mut(&mut self.ebpf, names::PROG_XDP)?.try_into()?)
    }

    pub fn tc(&self) -> Result<&SchedClassifier> {
        Ok(program(&self.ebpf, names::PROG_TC)?.try_into()?)
    }

    pub fn tc_mut(&mut self) -> Result<&mut SchedClassifier> {
        Ok(program_mut(&mut self.ebpf, names::PROG_TC)?.try_into()?)
    }

    /// The program's kernel info (id, run count while stats are enabled).
    pub fn info(&self, prog: Prog) -> Result<ProgramInfo> {
        Ok(match prog {
            Prog::Xdp => self.xdp()?.info()?,
            Prog::Tc => self.tc()?.info()?,
        })
    }

    /// Runs `frame` through `prog` once (BPF_PROG_TEST_RUN) and returns the
    /// raw return code. The kernel refuses (`EINVAL`, before the program
    /// runs) frames shorter than an Ethernet header, and for TC also frames
    /// whose EtherType is IPv4 or IPv6 but whose fixed IP header is cut.
    pub fn test_run_raw(&self, prog: Prog, frame: &[u8]) -> Result<u32> {
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..Default::default()
        };
        let result = match prog {
            Prog::Xdp => self.xdp()?.test_run(opts),
            Prog::Tc => self.tc()?.test_run(opts),
        };
        Ok(result
            .with_context(|| {
                format!(
                    "BPF_PROG_TEST_RUN of {} with a {}-byte frame",
                    prog.name(),
                    frame.len()
                )
            })?
            .return_value)
    }

    /// Runs `frame` through `prog` and reports the verdict and exactly which
    /// counters moved.
    pub fn run(&self, prog: Prog, frame: &[u8]) -> Result<Run> {
        let before = self.stats()?;
        let code = self.test_run_raw(prog, frame)?;
        let delta = self.stats()?.since(&before);
        Ok(Run {
            verdict: prog.verdict(code),
            delta,
        })
    }

    /// `FILTER_STATS`, summed over CPUs.
    pub fn stats(&self) -> Result<Stats> {
        Stats::read(self.map(names::STATS)?)
    }

    pub fn map(&self, name: &str) -> Result<&Map> {
        self.ebpf
            .map(name)
            .ok_or_else(|| anyhow!("the eBPF object has no map {name}"))
    }

    /// Attaches XDP (mode chosen by the kernel) and TC egress (tcx, or a
    /// clsact filter on kernels before 6.6) to `iface`. Interface names and
    /// netlink resolve in the calling thread's network namespace: call it
    /// from [`crate::netns::Netns::run`].
    pub fn attach(&mut self, iface: &str) -> Result<Attached> {
        let xdp = self
            .xdp_mut()?
            .attach(iface, XdpMode::default())
            .with_context(|| format!("attaching XDP to {iface}"))?;
        match tc::qdisc_add_clsact(iface) {
            // Already there is fine (tcx, used from kernel 6.6, does not
            // need it at all; older kernels attach a clsact filter).
            Ok(()) | Err(tc::TcError::AlreadyAttached) => {}
            Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(anyhow!(e).context(format!("adding clsact to {iface}"))),
        }
        let tc = self
            .tc_mut()?
            .attach(iface, TcAttachType::Egress)
            .with_context(|| format!("attaching TC egress to {iface}"))?;
        Ok(Attached { xdp, tc })
    }

    /// Detaches what [`Dataplane::attach`] attached (in the same namespace).
    pub fn detach(&mut self, attached: Attached) -> Result<()> {
        self.xdp_mut()?
            .detach(attached.xdp)
            .context("detaching XDP")?;
        self.tc_mut()?.detach(attached.tc).context("detaching TC")?;
        Ok(())
    }

    /// Ids of the two programs in the kernel.
    pub fn program_ids(&self) -> Result<[u32; 2]> {
        Ok([self.info(Prog::Xdp)?.id(), self.info(Prog::Tc)?.id()])
    }
}

fn program<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a aya::programs::Program> {
    ebpf.program(name)
        .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))
}

/// Whether a program with this id is still loaded anywhere in the kernel.
pub fn program_loaded(id: u32) -> Result<bool> {
    for info in aya::programs::loaded_programs() {
        match info {
            Ok(info) if info.id() == id => return Ok(true),
            Ok(_) => {}
            // A program unloaded while we iterate: not ours to report.
            Err(aya::programs::ProgramError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => bail!("listing loaded programs: {e}"),
        }
    }
    Ok(false)
}
