use super::*;

fn zen4_glibc236() -> Host {
    Host {
        amd_fsrm: true,
        glibc: Some((2, 36)),
        secure_exec: false,
        caps_kept: true,
    }
}

fn os(s: &str) -> OsString {
    OsString::from(s)
}

#[test]
fn sets_the_tunable_on_an_affected_host() {
    let want = format!("{THRESHOLD_KEY}={THRESHOLD}");
    assert_eq!(decide(&zen4_glibc236(), None), Ok(os(&want)));
    assert_eq!(
        decide(&zen4_glibc236(), Some(OsStr::new(""))),
        Ok(os(&want))
    );
    assert_eq!(want, "glibc.cpu.x86_rep_movsb_threshold=4194304");
}

#[test]
fn keeps_the_operators_other_tunables() {
    assert_eq!(
        decide(
            &zen4_glibc236(),
            Some(OsStr::new("glibc.malloc.arena_max=2:glibc.cpu.hwcaps=-AVX512F"))
        ),
        Ok(os(
            "glibc.malloc.arena_max=2:glibc.cpu.hwcaps=-AVX512F:glibc.cpu.x86_rep_movsb_threshold=4194304"
        ))
    );
}

#[test]
fn an_operators_threshold_wins() {
    for set in [
        "glibc.cpu.x86_rep_movsb_threshold=2112",
        "glibc.malloc.arena_max=2:glibc.cpu.x86_rep_movsb_threshold=0",
        "glibc.cpu.x86_rep_movsb_threshold",
    ] {
        assert_eq!(
            decide(&zen4_glibc236(), Some(OsStr::new(set))),
            Err(Keep::AlreadySet),
            "{set}"
        );
    }
    // A longer name that starts with the key is another tunable.
    assert!(decide(
        &zen4_glibc236(),
        Some(OsStr::new("glibc.cpu.x86_rep_movsb_threshold_x=1"))
    )
    .is_ok());
}

#[test]
fn other_cpus_and_libraries_are_left_alone() {
    let host = |f: fn(&mut Host)| {
        let mut h = zen4_glibc236();
        f(&mut h);
        decide(&h, None)
    };
    assert_eq!(host(|h| h.amd_fsrm = false), Err(Keep::Cpu));
    assert_eq!(host(|h| h.glibc = None), Err(Keep::Libc));
    assert_eq!(host(|h| h.glibc = Some((2, 40))), Err(Keep::Libc));
    assert_eq!(host(|h| h.glibc = Some((3, 0))), Err(Keep::Libc));
    assert!(host(|h| h.glibc = Some((2, 39))).is_ok());
    assert!(host(|h| h.glibc = Some((2, 31))).is_ok());
    assert_eq!(host(|h| h.secure_exec = true), Err(Keep::SecureExec));
    assert_eq!(host(|h| h.caps_kept = false), Err(Keep::Capabilities));
}

fn status(prm: &str, bnd: &str, amb: &str) -> String {
    format!(
        "Name:\tiron-proxy\nCapInh:\t0000000000000000\nCapPrm:\t{prm}\nCapEff:\t{prm}\nCapBnd:\t{bnd}\nCapAmb:\t{amb}\nNoNewPrivs:\t1\n"
    )
}

#[test]
fn root_keeps_its_capabilities_when_permitted_is_the_bounding_set() {
    // Root as usual, and under the systemd unit's CapabilityBoundingSet.
    assert!(exec_keeps_caps(
        &status("000001ffffffffff", "000001ffffffffff", "0000000000000000"),
        true
    ));
    assert!(exec_keeps_caps(
        &status("000000c000001400", "000000c000001400", "000000c000001400"),
        true
    ));
    // Root that dropped a permitted capability would get it back.
    assert!(!exec_keeps_caps(
        &status("000001fffffffffe", "000001ffffffffff", "0000000000000000"),
        true
    ));
}

#[test]
fn other_users_keep_only_ambient_capabilities() {
    // No capabilities at all.
    assert!(exec_keeps_caps(
        &status("0000000000000000", "000001ffffffffff", "0000000000000000"),
        false
    ));
    // AmbientCapabilities= for a non-root User=.
    assert!(exec_keeps_caps(
        &status("000000c000001400", "000001ffffffffff", "000000c000001400"),
        false
    ));
    // Permitted but not ambient: lost on execve.
    assert!(!exec_keeps_caps(
        &status("000000c000001400", "000001ffffffffff", "0000000000001000"),
        false
    ));
    // Unreadable status: do not risk it.
    assert!(!exec_keeps_caps("Name:\tx\n", false));
    assert!(!exec_keeps_caps("CapPrm:\tzz\nCapBnd:\tzz\n", true));
}

#[test]
fn glibc_versions() {
    assert_eq!(parse_glibc_version("2.36"), Some((2, 36)));
    assert_eq!(parse_glibc_version("2.41\n"), Some((2, 41)));
    assert_eq!(parse_glibc_version("2.39.9000"), Some((2, 39)));
    assert_eq!(parse_glibc_version("2.28-devel"), Some((2, 28)));
    assert_eq!(parse_glibc_version("two"), None);
    assert_eq!(parse_glibc_version("2"), None);
}

fn entries(list: &[&str]) -> Vec<CString> {
    list.iter().map(|e| CString::new(*e).unwrap()).collect()
}

#[test]
fn the_new_environment_keeps_every_other_entry_as_it_is() {
    let raw = entries(&[
        "PATH=/usr/bin",
        "GLIBC_TUNABLES=glibc.malloc.arena_max=2",
        "NO_EQUALS_SIGN",
        "EMPTY=",
        "=leading",
        "IRON_PROXY_REEXECUTED=stale",
        "GLIBC_TUNABLES_NOT=kept",
        "GLIBC_TUNABLES=second",
        "GLIBC_TUNABLES",
    ]);
    let got = environment(
        raw.iter().map(CString::as_c_str),
        OsStr::new("glibc.malloc.arena_max=2:glibc.cpu.x86_rep_movsb_threshold=4194304"),
        b"iron-proxy",
    );
    assert_eq!(
        got,
        entries(&[
            "PATH=/usr/bin",
            "NO_EQUALS_SIGN",
            "EMPTY=",
            "=leading",
            "GLIBC_TUNABLES_NOT=kept",
            "GLIBC_TUNABLES=glibc.malloc.arena_max=2:glibc.cpu.x86_rep_movsb_threshold=4194304",
            "IRON_PROXY_REEXECUTED=iron-proxy",
        ])
    );
}
