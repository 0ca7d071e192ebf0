//! The `bpf(2)` link commands, which aya 0.14 does not expose fully (it
//! cannot pin a cgroup/getsockopt link, nor update or force-detach a link):
//! creating a cgroup link, pinning, opening a pin, replacing a link's program
//! (`BPF_LINK_UPDATE`), forcing a link off (`BPF_LINK_DETACH`) and reading a
//! link's info. Plus the element commands the origin lookup needs on a
//! shared map handle (aya's `remove` wants `&mut`), and the kernel and
//! filesystem checks the loader runs first.
//!
//! Each attribute struct is the prefix of `union bpf_attr` that the command
//! reads; the kernel accepts a shorter attribute and zero-fills the rest.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_LINK_DETACH: libc::c_long = 34;

/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// `statfs` magic of cgroup2.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[repr(C)]
#[derive(Default)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkDetachAttr {
    link_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `struct bpf_link_info` for cgroup links.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct LinkInfo {
    /// `enum bpf_link_type`.
    pub link_type: u32,
    /// Link id.
    pub id: u32,
    /// Id of the attached program.
    pub prog_id: u32,
    pad: u32,
    /// Id of the cgroup, 0 once the cgroup is gone.
    pub cgroup_id: u64,
    /// `enum bpf_attach_type`.
    pub attach_type: u32,
    pad2: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised `#[repr(C)]` prefix of
    // `union bpf_attr` for `cmd`, and its size is passed alongside it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens a pinned BPF object (map, program or link).
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        ..Default::default()
    };
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    let fd = i32::try_from(fd).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    // SAFETY: a successful BPF_OBJ_GET returns a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Pins a BPF object at `path` on bpffs.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd_u32(fd)?,
        ..Default::default()
    };
    bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

/// # Safety
/// `map`'s key size must be `size_of::<K>()` and its value size
/// `size_of::<V>()`: the kernel reads and writes that many bytes.
unsafe fn map_elem<K: aya::Pod, V: aya::Pod>(
    cmd: libc::c_long,
    map: BorrowedFd<'_>,
    key: &K,
    value: Option<&mut V>,
) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: fd_u32(map)?,
        key: key as *const K as u64,
        value: value.map_or(0, |v| v as *mut V as u64),
        ..Default::default()
    };
    bpf(cmd, &mut attr).map(drop)
}

/// Copies the value stored under `key` into `value`.
///
/// # Safety
/// As [`map_elem`]: `K` and `V` have the map's key and value sizes.
pub(crate) unsafe fn map_lookup<K: aya::Pod, V: aya::Pod>(
    map: BorrowedFd<'_>,
    key: &K,
    value: &mut V,
) -> io::Result<()> {
    // SAFETY: the caller's promise.
    unsafe { map_elem(BPF_MAP_LOOKUP_ELEM, map, key, Some(value)) }
}

/// Removes `key`'s entry.
///
/// # Safety
/// As [`map_elem`]: `K` has the map's key size.
pub(crate) unsafe fn map_delete<K: aya::Pod>(map: BorrowedFd<'_>, key: &K) -> io::Result<()> {
    // SAFETY: the caller's promise; no value is passed.
    unsafe { map_elem::<K, u8>(BPF_MAP_DELETE_ELEM, map, key, None) }
}

/// Copies the value stored under `key` into `value` and removes the entry, in
/// one step. Hash maps support it since Linux 5.14; older kernels answer
/// `ENOTSUPP` (524).
///
/// # Safety
/// As [`map_elem`]: `K` and `V` have the map's key and value sizes.
pub(crate) unsafe fn map_lookup_and_delete<K: aya::Pod, V: aya::Pod>(
    map: BorrowedFd<'_>,
    key: &K,
    value: &mut V,
) -> io::Result<()> {
    // SAFETY: the caller's promise.
    unsafe { map_elem(BPF_MAP_LOOKUP_AND_DELETE_ELEM, map, key, Some(value)) }
}

/// Attaches a program to a cgroup as a link, exclusively (no
/// `BPF_F_ALLOW_MULTI`, no override below), and returns the link.
pub fn link_create(
    prog: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: fd_u32(prog)?,
        target_fd: fd_u32(cgroup)?,
        attach_type,
        flags: 0,
    };
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    let fd = i32::try_from(fd).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    // SAFETY: a successful BPF_LINK_CREATE returns a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Atomically replaces the program of a link.
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkUpdateAttr {
        link_fd: fd_u32(link)?,
        new_prog_fd: fd_u32(prog)?,
        ..Default::default()
    };
    bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
}

/// Detaches a link from its cgroup even while other fds or pins hold it.
pub fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkDetachAttr {
        link_fd: fd_u32(link)?,
    };
    bpf(BPF_LINK_DETACH, &mut attr).map(drop)
}

/// Reads the cgroup-link part of a link's info.
pub fn link_info(link: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    let mut info = LinkInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: fd_u32(link)?,
        info_len: std::mem::size_of::<LinkInfo>() as u32,
        info: &mut info as *mut LinkInfo as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}

fn fd_u32(fd: BorrowedFd<'_>) -> io::Result<u32> {
    u32::try_from(fd.as_raw_fd()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

fn fs_magic(path: &Path) -> io::Result<i64> {
    let st = nix::sys::statfs::statfs(path).map_err(io::Error::from)?;
    #[allow(clippy::unnecessary_cast)] // the field's width differs per arch
    Ok(st.filesystem_type().0 as i64)
}

/// Whether `path` lies on a bpffs mount.
pub fn is_bpffs(path: &Path) -> io::Result<bool> {
    Ok(fs_magic(path)? == BPF_FS_MAGIC)
}

/// Whether `path` lies on a cgroup v2 mount.
pub fn is_cgroup2(path: &Path) -> io::Result<bool> {
    Ok(fs_magic(path)? == CGROUP2_SUPER_MAGIC)
}

/// The running kernel's (major, minor) version and release string.
pub fn kernel_version() -> io::Result<((u32, u32), String)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?
        .trim()
        .to_owned();
    Ok((parse_release(&release).unwrap_or((0, 0)), release))
}

/// Parses "6.18.44-foo" into (6, 18).
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}
