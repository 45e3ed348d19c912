//! What the collector last reported, saved in the state dir at every
//! window boundary, so that a daemon started after a crash reports what
//! was counted meanwhile instead of taking it as its baseline
//! (`docs/FLOWLOGS.md`, "Restarts").
//!
//! A versioned little-endian binary file: a JSON list of a full connection
//! table would be several times larger, and it is rewritten every window.
//! A file of another version or layout is ignored with a warning (the next
//! start then takes the maps as its baseline, as without a file).
use std::{
    mem::size_of,
    path::{Path, PathBuf},
};

use filter_common::{CtKey, RejectKey};
use thiserror::Error;

use super::window::{Key, TAG_CT, TAG_REJECT};
use crate::daemon::store::write_atomic;

/// Its name in the state dir.
pub const FILE_NAME: &str = "flowlog-reported";
const MAGIC: &[u8; 8] = b"FLREPORT";
/// Bumped whenever the layout below or of a key changes.
const VERSION: u32 = 1;

/// One ENI's `FILTER_REJECTS` total as far as records and `packets_lost`
/// accounted for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EniAccount {
    pub ifindex: u32,
    pub eni_index: u32,
    pub accounted: u64,
}

/// One flow incarnation and the counts its records carried so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowAccount {
    pub(super) key: Key,
    pub created_ns: u64,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
}

/// Everything the collector reported, as of a window boundary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    pub enis: Vec<EniAccount>,
    pub flows: Vec<FlowAccount>,
}

#[derive(Debug, Error)]
pub enum ReportedError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {what}", path.display())]
    Format { path: PathBuf, what: String },
    #[error("saving {0}")]
    Store(#[from] crate::daemon::store::StoreError),
}

impl Reported {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.enis.len() * 16 + self.flows.len() * 90);
        out.extend_from_slice(MAGIC);
        for n in [
            VERSION,
            size_of::<CtKey>() as u32,
            size_of::<RejectKey>() as u32,
            self.enis.len() as u32,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        for e in &self.enis {
            out.extend_from_slice(&e.ifindex.to_le_bytes());
            out.extend_from_slice(&e.eni_index.to_le_bytes());
            out.extend_from_slice(&e.accounted.to_le_bytes());
        }
        out.extend_from_slice(&(self.flows.len() as u64).to_le_bytes());
        for f in &self.flows {
            let (tag, key) = f.key.tagged_bytes();
            out.push(tag);
            out.extend_from_slice(key);
            for n in [
                f.created_ns,
                f.packets[0],
                f.packets[1],
                f.bytes[0],
                f.bytes[1],
            ] {
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        out
    }

    /// Reads what [`Reported::encode`] wrote; an error names what does not
    /// fit (another version, another key layout, a cut file).
    pub fn decode(bytes: &[u8]) -> Result<Reported, String> {
        let mut r = Reader { bytes };
        if r.take(MAGIC.len())? != MAGIC {
            return Err("not a flow-log report file".to_owned());
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(format!("version {version}, this filterd reads {VERSION}"));
        }
        let (ct, reject) = (r.u32()? as usize, r.u32()? as usize);
        if (ct, reject) != (size_of::<CtKey>(), size_of::<RejectKey>()) {
            return Err(format!("keys of {ct} and {reject} bytes"));
        }
        let mut out = Reported::default();
        for _ in 0..r.u32()? {
            out.enis.push(EniAccount {
                ifindex: r.u32()?,
                eni_index: r.u32()?,
                accounted: r.u64()?,
            });
        }
        let flows = r.u64()?;
        for _ in 0..flows {
            let key = match r.take(1)?.first() {
                Some(&TAG_CT) => Key::Ct(r.pod()?),
                Some(&TAG_REJECT) => Key::Reject(r.pod()?),
                _ => return Err("an unknown kind of flow".to_owned()),
            };
            out.flows.push(FlowAccount {
                key,
                created_ns: r.u64()?,
                packets: [r.u64()?, r.u64()?],
                bytes: [r.u64()?, r.u64()?],
            });
        }
        if !r.bytes.is_empty() {
            return Err(format!("{} bytes after the end", r.bytes.len()));
        }
        Ok(out)
    }

    /// Saves to `path` whole or not at all (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<(), ReportedError> {
        Ok(write_atomic(path, &self.encode())?)
    }

    /// What `path` holds: `None` when there is no such file.
    pub fn load(path: &Path) -> Result<Option<Reported>, ReportedError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ReportedError::Io {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Reported::decode(&bytes)
            .map(Some)
            .map_err(|what| ReportedError::Format {
                path: path.to_owned(),
                what,
            })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err("the file is cut short".to_owned());
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn pod<T: aya::Pod>(&mut self) -> Result<T, String> {
        let b = self.take(size_of::<T>())?;
        // SAFETY: exactly `size_of::<T>()` bytes; `Pod` types are integers
        // and byte arrays, for which any bytes are a value.
        Ok(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;

    fn sample() -> Reported {
        Reported {
            enis: vec![EniAccount {
                ifindex: 7,
                eni_index: 0,
                accounted: 12,
            }],
            flows: vec![
                FlowAccount {
                    key: Key::Ct(CtKey {
                        ifindex: 7,
                        port_a: 80,
                        ..CtKey::default()
                    }),
                    created_ns: 5,
                    packets: [3, 2],
                    bytes: [180, 120],
                },
                FlowAccount {
                    key: Key::Reject(RejectKey {
                        ifindex: 7,
                        dport: 22,
                        ..RejectKey::default()
                    }),
                    created_ns: 6,
                    packets: [1, 0],
                    bytes: [40, 0],
                },
            ],
        }
    }

    #[test]
    fn what_is_saved_reads_back() {
        let r = sample();
        assert_eq!(Reported::decode(&r.encode()), Ok(r));
    }

    /// Another version, another key layout, a cut or padded file: an
    /// error to warn about, never a panic or a wrong reading.
    #[test]
    fn a_file_of_another_layout_is_refused() {
        let good = sample().encode();
        let mut newer = good.clone();
        newer[8] = 2;
        assert!(Reported::decode(&newer).unwrap_err().contains("version 2"));
        let mut other = good.clone();
        other[12] = 41;
        assert!(Reported::decode(&other).unwrap_err().contains("keys of 41"));
        for cut in 0..good.len() {
            assert!(Reported::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(Reported::decode(&longer).is_err());
        assert!(Reported::decode(b"{\"json\": true}").is_err());
    }

    #[test]
    fn saves_atomically_and_loads() {
        let dir = std::env::temp_dir().join(format!("filter-reported-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flowlog-reported");
        assert!(Reported::load(&path).unwrap().is_none());
        sample().save(&path).unwrap();
        assert_eq!(Reported::load(&path).unwrap(), Some(sample()));
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(
            Reported::load(&path),
            Err(ReportedError::Format { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
