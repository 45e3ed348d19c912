//! What one map lookup costs here (`filter-ebpf/src/bench/lookup_cost.rs`),
//! net of the empty XDP program: the floor under the goals.
//!
//! The programs run on a private copy of the object's maps, at their real
//! sizes: a conntrack key is put in `FILTER_CT` and another one's bytes in
//! `FILTER_REJECTS` from user space, and frames carry one of them after the
//! Ethernet header and two bytes of padding. Every measurement checks the
//! program's answer (pass for a hit, drop for a miss), so a number always
//! belongs to the lookup it names.
use anyhow::{bail, ensure, Context as _, Result};
use aya::{
    maps::HashMap,
    programs::{SchedClassifier, Xdp},
    Ebpf, EbpfLoader,
};
use filter_common::{names, CtEntry, CtKey, RejectEntry, RejectKey, FAMILY_V4, PROTO_TCP};

use crate::testrun::{as_xdp, repeated, Effort, Noop, Prog, Runner, XDP_DROP, XDP_PASS};

const CT: &str = "filter_cost_ct_xdp";
const CT_REJECT: &str = "filter_cost_ct_reject_xdp";
const ARRAY: &str = "filter_cost_array_xdp";

/// Interface of the key in `FILTER_CT`; the other key (in `FILTER_REJECTS`
/// only) differs in this alone.
const TRACKED_IFINDEX: u32 = 1;
const REJECTED_IFINDEX: u32 = 2;
const SRC: [u8; 4] = [198, 51, 100, 7];
const DST: [u8; 4] = [192, 0, 2, 1];
const SPORT: u16 = 40000;
const DPORT: u16 = 443;

/// Timed runs per lookup, alternating with as many of the empty program.
pub const LOOKUP_RUNS: usize = 9;

/// ns per packet of each lookup, net of the empty program.
#[derive(Clone, Copy, Debug, Default)]
pub struct LookupCosts {
    pub ct_hit: f64,
    pub ct_miss: f64,
    pub ct_miss_reject_hit: f64,
    pub array_hit: f64,
}

pub struct Lookups {
    ebpf: Ebpf,
}

/// One of the programs, as a `Runner` (XDP only).
struct One<'a> {
    ebpf: &'a mut Ebpf,
    name: &'static str,
}

impl Runner for One<'_> {
    fn xdp(&mut self) -> Result<&mut Xdp> {
        as_xdp(self.ebpf.program_mut(self.name), self.name)
    }

    fn tc(&mut self) -> Result<&mut SchedClassifier> {
        bail!("{} is an XDP program", self.name)
    }
}

fn addr(a: [u8; 4]) -> [u8; 16] {
    let mut out = [0; 16];
    out[..4].copy_from_slice(&a);
    out
}

/// The 44 bytes both key types share, as a frame: an Ethernet header
/// (IPv4's ethertype, though no IP header follows) and two bytes of
/// padding, then the key, which is laid out the same way in both
/// (`ifindex`, four bytes, two addresses, two ports).
fn frame(ifindex: u32) -> Vec<u8> {
    let mut f = vec![
        0x02, 0, 0, 0, 0, 0x0b, 0x02, 0, 0, 0, 0, 0x0a, 0x08, 0x00, 0, 0,
    ];
    f.extend_from_slice(&ifindex.to_ne_bytes());
    f.extend_from_slice(&[FAMILY_V4, PROTO_TCP, 0, 0]);
    f.extend_from_slice(&addr(SRC));
    f.extend_from_slice(&addr(DST));
    f.extend_from_slice(&SPORT.to_ne_bytes());
    f.extend_from_slice(&DPORT.to_ne_bytes());
    f.resize(64, 0);
    f
}

impl Lookups {
    pub fn load() -> Result<Self> {
        let object = filter::dataplane::object::bench_object()?;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::FRAGS, 1)
            .load(object)
            .context("loading the eBPF object")?;
        for name in [CT, CT_REJECT, ARRAY] {
            as_xdp(ebpf.program_mut(name), name)?.load()?;
        }
        let ct_key = CtKey {
            ifindex: TRACKED_IFINDEX,
            family: FAMILY_V4,
            proto: PROTO_TCP,
            _pad: 0,
            addr_a: addr(SRC),
            addr_b: addr(DST),
            port_a: SPORT,
            port_b: DPORT,
        };
        let reject_key = RejectKey {
            ifindex: REJECTED_IFINDEX,
            family: FAMILY_V4,
            proto: PROTO_TCP,
            dir: 0,
            action: 0,
            src: addr(SRC),
            dst: addr(DST),
            sport: SPORT,
            dport: DPORT,
        };
        let mut ct: HashMap<_, CtKey, CtEntry> =
            HashMap::try_from(ebpf.map_mut(names::CT).context("no FILTER_CT")?)?;
        ct.insert(ct_key, CtEntry::default(), 0)?;
        let mut rejects: HashMap<_, RejectKey, RejectEntry> =
            HashMap::try_from(ebpf.map_mut(names::REJECTS).context("no FILTER_REJECTS")?)?;
        rejects.insert(reject_key, RejectEntry::default(), 0)?;
        Ok(Self { ebpf })
    }

    /// Program `name`'s fastest of `LOOKUP_RUNS` timed runs minus the
    /// empty program's fastest, the two alternating run by run. On this
    /// shared machine noise only ever adds time, in bursts that can cover a
    /// whole run: the fastest run of each is the one nearest its true cost,
    /// where a mean carries every burst and a single lookup's few
    /// nanoseconds drown.
    fn net(
        &mut self,
        noop: &mut Noop,
        name: &'static str,
        frame: &[u8],
        code: u32,
        effort: Effort,
    ) -> Result<f64> {
        let once = Effort { runs: 1, ..effort };
        let mut one = One {
            ebpf: &mut self.ebpf,
            name,
        };
        let (mut empty, mut lookup) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..LOOKUP_RUNS {
            empty = empty.min(repeated(noop, Prog::Xdp, frame, XDP_PASS, once)?);
            lookup = lookup.min(repeated(&mut one, Prog::Xdp, frame, code, once)?);
        }
        Ok(lookup - empty)
    }

    /// Each lookup's ns per packet, net of the empty program.
    pub fn measure(&mut self, noop: &mut Noop, effort: Effort) -> Result<LookupCosts> {
        let tracked = frame(TRACKED_IFINDEX);
        let rejected = frame(REJECTED_IFINDEX);
        // The array table learns the key on its first run (a miss).
        let mut one = One {
            ebpf: &mut self.ebpf,
            name: ARRAY,
        };
        let (code, _) = one.run(Prog::Xdp, &tracked, 1)?;
        ensure!(code == XDP_DROP, "{ARRAY} found a key it was never given");
        Ok(LookupCosts {
            ct_hit: self.net(noop, CT, &tracked, XDP_PASS, effort)?,
            ct_miss: self.net(noop, CT, &rejected, XDP_DROP, effort)?,
            ct_miss_reject_hit: self.net(noop, CT_REJECT, &rejected, XDP_PASS, effort)?,
            array_hit: self.net(noop, ARRAY, &tracked, XDP_PASS, effort)?,
        })
    }
}
