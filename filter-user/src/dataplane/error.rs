//! The one error type of the data plane module.
use std::{io, path::PathBuf};

use aya::{
    maps::MapError,
    pin::PinError,
    programs::{links::LinkError, ProgramError},
    EbpfError,
};
use thiserror::Error;

use super::object::MissingObject;

/// Everything that can go wrong loading, pinning, attaching or writing the
/// data plane. Each variant names the object (map, program, path,
/// interface) it is about; the underlying error is the `source`.
#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error(transparent)]
    MissingObject(#[from] MissingObject),

    #[error("cannot mount bpffs at {path}")]
    MountBpffs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },

    #[error("{path} is not on a BPF filesystem: pins must live on bpffs (e.g. under /sys/fs/bpf)")]
    NotBpffs { path: PathBuf },

    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("pin directory {path} is in use by another process (a running filterd?)")]
    PinDirBusy { path: PathBuf },

    #[error("cannot load the eBPF object")]
    Load(#[source] EbpfError),

    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),

    #[error("the eBPF object has no program {0}")]
    MissingProgram(&'static str),

    /// A map that was already pinned (by an earlier daemon) does not have
    /// the layout this build expects. Adopting it would misread every entry.
    #[error(
        "pinned map {name} has {what} {found}, this build expects {expected}: it was created by an \
         incompatible version (run `filterctl detach` to remove the old data plane)"
    )]
    PinnedLayout {
        name: &'static str,
        what: &'static str,
        found: String,
        expected: String,
    },

    /// The verifier rejected a program; its log says why.
    #[error(
        "the kernel rejected program {program}: {io_error}\n--- verifier log ---\n{verifier_log}"
    )]
    Verifier {
        program: &'static str,
        io_error: io::Error,
        verifier_log: String,
    },

    #[error("program {program}: {op}")]
    Program {
        program: &'static str,
        op: &'static str,
        #[source]
        source: ProgramError,
    },

    #[error("map {map}: {op}")]
    Map {
        map: &'static str,
        op: &'static str,
        #[source]
        source: MapError,
    },

    /// The generation given to `write_generation` cannot be written without
    /// touching the running one (or names entries outside its own slot).
    #[error("generation {generation} rejected: {reason}")]
    BadGeneration { generation: u32, reason: String },

    /// A map that grows to the need (`FILTER_BOUNDS`, `FILTER_CELLS`)
    /// cannot hold a generation beside the running one, and cannot grow:
    /// it would pass its largest size, or the maps are not pinned (growing
    /// swaps the programs of pinned links).
    #[error(
        "{map}: {needed} more entries do not fit beside the running generation's in its \
         {capacity}, and it cannot grow: {why}"
    )]
    Full {
        map: &'static str,
        needed: u32,
        capacity: u32,
        why: &'static str,
    },

    #[error("{map} of {entries} entries: the size must be from {min} to {max}")]
    MapSize {
        map: &'static str,
        entries: u32,
        min: u32,
        max: u32,
    },

    #[error("invalid interface name {0:?}")]
    InvalidInterfaceName(String),

    #[error("no network interface named {0:?}")]
    UnknownInterface(String),

    /// Another filterd's program is on the hook (tcx allows several; two
    /// daemons must not guard one interface with two rule sets).
    #[error("{ifname}: {program} of another filterd is attached at its {hook}")]
    HookTaken {
        ifname: String,
        hook: &'static str,
        program: String,
    },

    #[error("cannot pin {path}")]
    Pin {
        path: PathBuf,
        #[source]
        source: PinError,
    },

    #[error("link {path}: {op}")]
    Link {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: LinkError,
    },

    /// In pinned mode every link must be a BPF link (an fd that can be
    /// pinned); the kernel gave a netlink attachment instead.
    #[error("{hook} attachment on {ifname} is not a pinnable BPF link (kernel too old for {hook} links?)")]
    NotPinnable { ifname: String, hook: &'static str },

    #[error("cannot add the clsact qdisc to {ifname}")]
    Clsact {
        ifname: String,
        #[source]
        source: aya::programs::tc::TcError,
    },

    #[error("{call} failed")]
    Syscall {
        call: &'static str,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = DataplaneError> = std::result::Result<T, E>;

impl DataplaneError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn map(map: &'static str, op: &'static str, source: MapError) -> Self {
        Self::Map { map, op, source }
    }

    /// A program error; a load failure keeps the verifier log in the message.
    pub(crate) fn program(program: &'static str, op: &'static str, source: ProgramError) -> Self {
        match source {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => Self::Verifier {
                program,
                io_error,
                verifier_log: verifier_log.to_string(),
            },
            source => Self::Program {
                program,
                op,
                source,
            },
        }
    }
}
