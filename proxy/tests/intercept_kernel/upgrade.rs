//! Taking over pins left by a build whose maps had another layout (an
//! upgrade that added a counter, say): the old maps are moved aside and
//! replaced, the links switch to the new programs, and a workload stays
//! intercepted throughout, with no `detach` needed.

use aya::maps::MapData;
use iron_proxy::intercept::Interceptor;

use super::support::*;
use super::{attach, Lab};

#[test]
fn takeover_replaces_a_map_whose_layout_changed() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let Lab {
        cg, pins, direct, ..
    } = &lab;
    let port = direct.port().to_string();
    let s = lab.settings();
    drop(attach(&s));
    let before = Interceptor::status(&pins.path).expect("status");

    // Fake an older build's counters map: pin a map of another type and size
    // under its name (the old one stays referenced by the attached programs).
    let maps = pins.path.join("maps");
    let counters = maps.join("iron_counters");
    std::fs::remove_file(&counters).expect("unpin counters");
    MapData::from_pin(maps.join("iron_uids"))
        .expect("open a map of another layout")
        .pin(&counters)
        .expect("pin it as iron_counters");
    let ran = run_workload(cg, None, &["tcp", "127.0.0.2", &port]);
    assert_eq!(
        ran.lines,
        vec![format!("tcp ok 127.0.0.2 {port} proxy|127.0.0.2:{port}")],
        "the old programs still intercept"
    );

    let _ic = attach(&s);
    let after = Interceptor::status(&pins.path).expect("status");
    for (b, a) in before.links.iter().zip(&after.links) {
        assert_eq!(b.link_id, a.link_id, "{}: the link is kept", a.hook);
        assert_ne!(b.prog_id, a.prog_id, "{} got the new program", a.hook);
    }
    let leftovers: Vec<_> = std::fs::read_dir(&maps)
        .expect("maps dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("_replaced"))
        .collect();
    assert!(leftovers.is_empty(), "replaced pins removed: {leftovers:?}");

    let ran = run_workload(cg, None, &["tcp", "127.0.0.2", &port]);
    assert_eq!(
        ran.lines,
        vec![format!("tcp ok 127.0.0.2 {port} proxy|127.0.0.2:{port}")],
        "intercepted by the new programs"
    );
    let counters = Interceptor::status(&pins.path)
        .expect("status")
        .counters
        .expect("a fresh counters map of the right layout");
    assert_eq!(counters.redirected, 1, "counters restart with the new map");
}

/// The maps older builds pinned and this one no longer uses, each an
/// `LRU_HASH` of 65,536 entries keyed by socket cookie: (name, value size).
const OLD_MAPS: [(&str, u32); 2] = [("iron_by_cookie", 64), ("iron_proxy_socks", 4)];

/// Creates an unpinned `LRU_HASH` map (key 8 bytes, value `value_size`,
/// 65,536 entries: the layout of an old map in [`OLD_MAPS`]) and pins it at
/// `path`.
fn pin_old_lru(path: &std::path::Path, value_size: u32) {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    #[repr(C)]
    #[derive(Default)]
    struct Create {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Pin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> libc::c_long {
        // SAFETY: `attr` is a live `#[repr(C)]` prefix of `union bpf_attr`
        // for `cmd`, with its size passed alongside.
        unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *mut T as *mut libc::c_void,
                std::mem::size_of::<T>(),
            )
        }
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
    let fd = bpf(
        BPF_MAP_CREATE,
        &mut Create {
            map_type: BPF_MAP_TYPE_LRU_HASH,
            key_size: 8,
            value_size,
            max_entries: 65536,
            ..Default::default()
        },
    );
    assert!(
        fd >= 0,
        "creating an LRU map: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a successful BPF_MAP_CREATE returns a new fd that we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("pin path");
    let mut pin = Pin {
        pathname: c.as_ptr() as u64,
        bpf_fd: std::os::fd::AsRawFd::as_raw_fd(&fd) as u32,
        ..Default::default()
    };
    assert_eq!(
        bpf(BPF_OBJ_PIN, &mut pin),
        0,
        "pinning {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

#[test]
fn takeover_removes_the_pin_of_a_map_no_longer_used() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let Lab {
        cg, pins, direct, ..
    } = &lab;
    let port = direct.port().to_string();
    let s = lab.settings();
    drop(attach(&s));

    // What builds that kept origins, and proxy socket marks, by socket
    // cookie left pinned.
    let maps = pins.path.join("maps");
    for (name, value_size) in OLD_MAPS {
        pin_old_lru(&maps.join(name), value_size);
    }
    let _ic = attach(&s);
    let names: Vec<String> = std::fs::read_dir(&maps)
        .expect("maps dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for (old, _) in OLD_MAPS {
        assert!(
            !names.iter().any(|n| n.starts_with(old)),
            "the obsolete {old} pin is removed: {names:?}"
        );
    }
    assert!(
        ["iron_cookie_origin", "iron_sk_origin", "iron_sk_proxy"]
            .iter()
            .all(|m| names.iter().any(|n| n == m))
            && !names.iter().any(|n| n.ends_with("_replaced")),
        "{names:?}"
    );
    let status = Interceptor::status(&pins.path).expect("status");
    assert!(
        status.counters.is_some() && status.links.iter().all(|l| l.attached),
        "status reads the new maps: {status}"
    );
    let ran = run_workload(cg, None, &["tcp", "127.0.0.2", &port]);
    assert_eq!(
        ran.lines,
        vec![format!("tcp ok 127.0.0.2 {port} proxy|127.0.0.2:{port}")],
        "intercepted, origin found and getpeername restored"
    );

    // detach removes leftover obsolete pins too.
    for (name, value_size) in OLD_MAPS {
        pin_old_lru(&maps.join(name), value_size);
    }
    Interceptor::detach(&pins.path).expect("detach");
    assert!(!pins.path.exists(), "every pin removed");
}
