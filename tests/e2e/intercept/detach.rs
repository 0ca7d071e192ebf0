//! `intercept status|detach` when the config does not load, with `-pin-path`, and when
//! nothing is pinned: the emergency detach must not depend on the config that broke the
//! restart, and must not claim to have removed what was never there.

use std::ffi::OsStr;

use iron_proxy_tests::*;

use super::lab::*;

#[test]
fn detach_works_on_a_broken_config_and_says_when_nothing_was_pinned() {
    require_root!();
    let net = FakeInternet::new();
    let lab = Lab::start(&net);
    let pins = lab.pins.path().as_os_str();

    let (exit, out) = intercept_args(&["status".as_ref(), "-pin-path".as_ref(), pins]);
    assert_eq!(exit, 0, "{out}");
    assert!(
        out.contains("links attached") && out.contains("attached"),
        "{out}"
    );

    // The same config with an unknown key: it does not load, yet names its pin path.
    let dir = tempfile::tempdir().expect("temp dir");
    let broken = dir.path().join("broken.yaml");
    let mut config = lab.config.clone();
    config["no_such_key"] = serde_json::json!(1);
    std::fs::write(&broken, serde_json::to_string(&config).expect("json")).expect("write");
    let (exit, out) = intercept_args(&["detach".as_ref(), "-config".as_ref(), broken.as_os_str()]);
    assert_eq!(exit, 0, "detach on a broken config:\n{out}");
    assert!(
        out.contains("no_such_key"),
        "the config error is printed: {out}"
    );
    assert!(
        out.contains("pins under") && out.contains("removed"),
        "{out}"
    );
    assert!(!lab.pins.is_pinned(), "detach removed the pins");

    let (exit, out) = intercept_args(&["detach".as_ref(), "-pin-path".as_ref(), pins]);
    assert_eq!(exit, 0, "{out}");
    assert!(
        out.contains("nothing pinned at") && out.contains("nothing to detach"),
        "{out}"
    );
    assert!(!out.contains("removed"), "{out}");
    let (exit, out) = intercept_args(&["status".as_ref(), "-pin-path".as_ref(), pins]);
    assert_eq!(exit, 0, "{out}");
    assert!(out.contains("interception: off"), "{out}");
}

#[test]
fn a_config_with_no_readable_pin_path_points_at_the_flag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "intercept: [\n").expect("write");
    let (exit, out) =
        intercept_args(&[OsStr::new("detach"), "-config".as_ref(), broken.as_os_str()]);
    assert_ne!(exit, 0, "{out}");
    assert!(out.contains("-pin-path PATH"), "{out}");
}
