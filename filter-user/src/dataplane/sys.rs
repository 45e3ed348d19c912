//! The system calls aya 0.14 does not wrap.
use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
    thread,
    time::Duration,
};

/// `MEMBARRIER_CMD_GLOBAL` (linux/membarrier.h): the kernel runs
/// `synchronize_rcu()` before returning.
const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;

/// `BPF_OBJ_GET` and `BPF_LINK_DETACH` (since 5.9) in `enum bpf_cmd`
/// (linux/bpf.h).
const BPF_OBJ_GET: libc::c_int = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_MAP_LOOKUP_BATCH: libc::c_int = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_int = 26;
const BPF_LINK_DETACH: libc::c_int = 34;

/// What we wait when `membarrier` cannot give us an RCU grace period
/// (`nohz_full` kernels refuse `MEMBARRIER_CMD_GLOBAL`). A program run is
/// bounded by the verifier to well under a millisecond; this is generous.
pub(crate) const FALLBACK_GRACE: Duration = Duration::from_millis(50);

/// Waits until every XDP and TC program run that started before the call
/// has finished.
///
/// The programs run inside RCU read-side sections (XDP in NAPI or
/// `netif_receive_skb` under `rcu_read_lock`, TC under `rcu_read_lock_bh`),
/// and read `FILTER_ACTIVE` once at the start of a run. An RCU grace period
/// after the switch therefore means no program still uses the old slot.
/// `membarrier(MEMBARRIER_CMD_GLOBAL)` is the one system call that waits for
/// exactly that (`synchronize_rcu()`); when it is unavailable we sleep
/// [`FALLBACK_GRACE`].
pub(crate) fn wait_for_program_runs() {
    // SAFETY: membarrier takes no pointers; a failure only means we sleep.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc != 0 {
        thread::sleep(FALLBACK_GRACE);
    }
}

/// `union bpf_attr` for `BPF_LINK_DETACH`: just the link fd. The kernel
/// accepts a shorter attr and zero-fills the rest.
#[repr(C)]
struct LinkDetachAttr {
    link_fd: u32,
}

/// Detaches a BPF link now, whoever else still holds a file descriptor to
/// it (a pin, another process). The link object stays valid but defunct.
pub(crate) fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let fd = u32::try_from(link.as_raw_fd())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let attr = LinkDetachAttr { link_fd: fd };
    // SAFETY: `attr` is a valid, initialised `bpf_attr` prefix of the size we
    // pass, alive for the duration of the call; the kernel only reads it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            &attr as *const LinkDetachAttr,
            std::mem::size_of::<LinkDetachAttr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `union bpf_attr` for `BPF_OBJ_GET`.
#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// Opens a pinned BPF object (map, program or link) by its bpffs path.
pub(crate) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let attr = ObjGetAttr {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix of the size we pass and
    // points at a NUL-terminated path; both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &attr as *const ObjGetAttr,
            std::mem::size_of::<ObjGetAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(rc).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just returned this fd to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The interface an XDP or tcx link is attached to, from its
/// `struct bpf_link_info` (`type`, `id`, `prog_id`, then an 8-aligned union
/// whose `xdp` and `tcx` members both start with the ifindex). 0 when the
/// link is defunct (its interface is gone).
pub(crate) fn link_ifindex(link: BorrowedFd<'_>) -> io::Result<u32> {
    let fd = u32::try_from(link.as_raw_fd())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // Larger than any kernel's bpf_link_info prefix we need; zeroed, as the
    // kernel requires of the bytes it does not know.
    let mut info = [0u8; 128];
    let attr = InfoAttr {
        bpf_fd: fd,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix pointing at `info`, which
    // is writable for `info_len` bytes; both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &attr as *const InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u32::from_ne_bytes([info[16], info[17], info[18], info[19]]))
}

/// `union bpf_attr` for the `BPF_MAP_*_BATCH` commands.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

impl BatchAttr {
    /// A command on `count` entries at `keys` and `values`, without cursors.
    fn new(map_fd: u32, keys: u64, values: u64, count: u32) -> Self {
        Self {
            in_batch: 0,
            out_batch: 0,
            keys,
            values,
            count,
            map_fd,
            elem_flags: 0,
            flags: 0,
        }
    }
}

/// One `BPF_MAP_*_BATCH` system call; its return value.
///
/// # Safety
///
/// Every pointer in `attr` must be valid, for the whole call, for what
/// `cmd` reads or writes: `count` keys and values of the map's sizes, and
/// one u32 per batch cursor.
unsafe fn batch(cmd: libc::c_int, attr: &mut BatchAttr) -> libc::c_long {
    // SAFETY: the caller's.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            size_of::<BatchAttr>(),
        )
    }
}

/// One `BPF_MAP_LOOKUP_BATCH` call; the number of entries read, and the
/// error (`ENOENT`: the end).
fn lookup_batch(
    fd: BorrowedFd<'_>,
    in_batch: Option<&u32>,
    out_batch: &mut u32,
    keys: &mut [u8],
    values: &mut [u8],
    count: usize,
) -> (usize, Option<io::Error>) {
    let Ok(map_fd) = u32::try_from(fd.as_raw_fd()) else {
        return (0, Some(io::Error::from(io::ErrorKind::InvalidInput)));
    };
    let mut attr = BatchAttr {
        in_batch: in_batch.map_or(0, |b| b as *const u32 as u64),
        out_batch: out_batch as *mut u32 as u64,
        ..BatchAttr::new(
            map_fd,
            keys.as_mut_ptr() as u64,
            values.as_mut_ptr() as u64,
            u32::try_from(count).unwrap_or(u32::MAX),
        )
    };
    // SAFETY: every pointer in `attr` is valid for what the kernel writes:
    // `keys` and `values` hold `count` keys and values (the callers size
    // them), the batch cursors one u32 each (what hash maps and arrays
    // use). All outlive the call; the kernel writes the count back.
    let rc = unsafe { batch(BPF_MAP_LOOKUP_BATCH, &mut attr) };
    let err = (rc < 0).then(io::Error::last_os_error);
    (attr.count as usize, err)
}

/// The bytes one CPU's copy of a per-CPU value takes in the values the
/// kernel reads and writes from user space: the value rounded up to 8.
pub(crate) const fn percpu_copy_size(value_size: usize) -> usize {
    value_size.div_ceil(8) * 8
}

/// Reads a whole per-CPU array with `BPF_MAP_LOOKUP_BATCH` (Linux 5.6),
/// thousands of entries per call instead of one call per entry. `f` gets
/// each index and its values: one `round_up(value_size, 8)`-byte stride per
/// possible CPU.
pub(crate) fn percpu_array_lookup_batch(
    map: BorrowedFd<'_>,
    value_size: usize,
    possible_cpus: usize,
    mut f: impl FnMut(u32, &[u8]),
) -> io::Result<()> {
    let stride = percpu_copy_size(value_size) * possible_cpus;
    for_each_batched(map, 4, stride, |key, value| {
        f(u32::from_ne_bytes([key[0], key[1], key[2], key[3]]), value);
    })
}

/// Every entry of a map, with `BPF_MAP_LOOKUP_BATCH` (Linux 5.6): `f` gets
/// each key's bytes (`key_size`) and value's bytes (`value_size`, the whole
/// per-CPU stride for per-CPU maps).
pub(crate) fn for_each_batched(
    map: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
    f: impl FnMut(&[u8], &[u8]),
) -> io::Result<()> {
    walk_batched(map, key_size, value_size, None, usize::MAX, f)
}

/// The entries at `indexes` of a (shared, not per-CPU) array, with
/// `BPF_MAP_LOOKUP_BATCH`: `f` gets each index and its value. Only the
/// range is read: a slot's half of `FILTER_RULE_SETS` is 8 MiB, and the
/// first apply of a daemon walked the whole array twice.
pub(crate) fn array_for_each_in<T: aya::Pod>(
    map: BorrowedFd<'_>,
    indexes: std::ops::Range<u32>,
    mut f: impl FnMut(u32, T),
) -> io::Result<()> {
    // An array's batch goes on after the index its cursor names, and
    // returns every index in order.
    let after = indexes.start.checked_sub(1);
    walk_batched(
        map,
        4,
        size_of::<T>(),
        after,
        indexes.len(),
        |key, value| {
            let index = u32::from_ne_bytes([key[0], key[1], key[2], key[3]]);
            // SAFETY: `value` holds `size_of::<T>()` bytes (walk_batched's
            // chunks), and a `Pod` is valid for any bytes.
            f(index, unsafe {
                std::ptr::read_unaligned(value.as_ptr().cast::<T>())
            });
        },
    )
}

/// Up to `limit` entries of a map from the batch cursor `after` on (`None`:
/// the first entry), a few thousand per `BPF_MAP_LOOKUP_BATCH`. Hash maps
/// return whole buckets, so a batch too small for one bucket (`ENOSPC`
/// with nothing read) is retried twice as large.
fn walk_batched(
    map: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
    after: Option<u32>,
    mut limit: usize,
    mut f: impl FnMut(&[u8], &[u8]),
) -> io::Result<()> {
    let mut count = 4096usize;
    let mut keys = vec![0u8; count * key_size];
    let mut values = vec![0u8; count * value_size];
    let mut cursor = after;
    let mut next = 0u32;
    while limit > 0 {
        let want = count.min(limit);
        let (n, err) = lookup_batch(
            map,
            cursor.as_ref(),
            &mut next,
            &mut keys,
            &mut values,
            want,
        );
        if let Some(e) = &err {
            if e.raw_os_error() == Some(libc::ENOSPC) && n == 0 {
                count *= 2;
                keys.resize(count * key_size, 0);
                values.resize(count * value_size, 0);
                continue;
            }
        }
        let n = n.min(want);
        for (key, value) in keys
            .chunks_exact(key_size)
            .zip(values.chunks_exact(value_size))
            .take(n)
        {
            f(key, value);
        }
        match err {
            None => {}
            // The end of the map.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Some(e) => return Err(e),
        }
        if n == 0 {
            return Ok(());
        }
        limit -= n;
        cursor = Some(next);
    }
    Ok(())
}

/// Zeroes the entries at `indexes` of an array with `BPF_MAP_UPDATE_BATCH`:
/// a first apply gives every rule a fresh counter slot, and one call per
/// slot cost 100k system calls at 100k rules. `stride` is the value's size,
/// or for a per-CPU array `round_up(value_size, 8)` times the possible CPUs.
pub(crate) fn array_zero_batch(
    map: BorrowedFd<'_>,
    indexes: &[u32],
    stride: usize,
) -> io::Result<()> {
    const CHUNK: usize = 4096;
    if indexes.is_empty() {
        return Ok(());
    }
    let Ok(map_fd) = u32::try_from(map.as_raw_fd()) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    let zeros = vec![0u8; CHUNK.min(indexes.len()) * stride];
    for keys in indexes.chunks(CHUNK) {
        // SAFETY: `zeros` holds at least `keys.len()` values of the map's
        // stride (the caller passes it from the value size `Maps::take`
        // checked).
        unsafe { update_batch(map_fd, keys, zeros.as_ptr()) }?;
    }
    Ok(())
}

/// One `BPF_MAP_UPDATE_BATCH` of `keys` (u32 indexes) and the values at
/// `values`.
///
/// # Safety
/// `values` points at `keys.len()` values of the map's value size, alive
/// for the call (the kernel only reads them).
unsafe fn update_batch(map_fd: u32, keys: &[u32], values: *const u8) -> io::Result<()> {
    let mut attr = BatchAttr::new(
        map_fd,
        keys.as_ptr() as u64,
        values as u64,
        keys.len() as u32,
    );
    // SAFETY: `attr` names `keys` and, by this function's contract, as
    // many values; both outlive the call.
    if unsafe { batch(BPF_MAP_UPDATE_BATCH, &mut attr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `values` at indexes `start..` of an array with
/// `BPF_MAP_UPDATE_BATCH` (Linux 5.6): thousands of entries per call.
pub(crate) fn array_update_batch<T: aya::Pod>(
    map: BorrowedFd<'_>,
    start: u32,
    values: &[T],
) -> io::Result<()> {
    const CHUNK: usize = 16_384;
    let Ok(map_fd) = u32::try_from(map.as_raw_fd()) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    for (n, chunk) in values.chunks(CHUNK).enumerate() {
        let first = u32::try_from(n * CHUNK)
            .ok()
            .and_then(|offset| start.checked_add(offset))
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let keys: Vec<u32> = (first..).take(chunk.len()).collect();
        // SAFETY: `chunk` holds `keys.len()` values of `T`, the map's value
        // type (`Maps::take` checked its size).
        unsafe { update_batch(map_fd, &keys, chunk.as_ptr().cast()) }?;
    }
    Ok(())
}
