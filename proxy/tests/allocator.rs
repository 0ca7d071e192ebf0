//! The binary's allocator settings: mimalloc's eager arena commit is off
//! unless the environment says otherwise (see `mimalloc_defaults` in
//! src/main.rs). mimalloc prints its options with `MIMALLOC_VERBOSE=1`.

use std::process::Command;

fn eager_commit(env: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iron-proxy"));
    cmd.arg("--version").env("MIMALLOC_VERBOSE", "1");
    cmd.env_remove("MIMALLOC_ARENA_EAGER_COMMIT");
    if let Some(v) = env {
        cmd.env("MIMALLOC_ARENA_EAGER_COMMIT", v);
    }
    let out = cmd.output().expect("run iron-proxy --version");
    assert!(out.status.success(), "iron-proxy --version failed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("option 'arena_eager_commit': "))
        .unwrap_or_else(|| panic!("mimalloc printed no arena_eager_commit option:\n{stderr}"))
        .trim()
        .to_string()
}

#[test]
fn eager_arena_commit_is_off_unless_the_environment_sets_it() {
    assert_eq!(eager_commit(None), "0", "the binary's default");
    assert_eq!(eager_commit(Some("1")), "1", "an explicit setting wins");
}
