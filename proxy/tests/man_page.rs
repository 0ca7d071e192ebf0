//! `docs/man/iron-proxy.1` against the command line the binary really has:
//! every subcommand has a `.SS` section, every flag is described in its
//! command's section (global flags under OPTIONS), every `IRON_*` variable
//! the binary reads is under ENVIRONMENT, and the page names no flag the
//! binary does not have. Then `groff -man -ww -z` must print no warning.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use clap::CommandFactory;
use iron_proxy::cli::Cli;

fn page_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/man/iron-proxy.1")
}

fn page() -> String {
    let path = page_path();
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading the man page {}: {e}", path.display()))
}

/// The text of section `heading` (`.SH NAME` or `.SS name`) up to the next heading of either kind.
fn section<'a>(page: &'a str, heading: &str) -> &'a str {
    let start = page
        .lines()
        .scan(0usize, |off, l| {
            let here = *off;
            *off += l.len() + 1;
            Some((here, l))
        })
        .find(|(_, l)| l.trim_end() == heading)
        .map(|(off, l)| off + l.len())
        .unwrap_or_else(|| panic!("the man page has no `{heading}` heading"));
    let rest = &page[start..];
    let end = rest
        .find("\n.SH ")
        .into_iter()
        .chain(rest.find("\n.SS "))
        .min()
        .unwrap_or(rest.len());
    &rest[..end]
}

/// How a flag is written in roff: `-intercept-user` becomes `\-intercept\-user`.
fn roff(flag: &str) -> String {
    flag.replace('-', "\\-")
}

/// Whether `text` mentions `flag` as a whole word (`\-warn` is not found inside `\-warning`).
fn mentions(text: &str, flag: &str) -> bool {
    let needle = roff(flag);
    text.match_indices(&needle).any(|(i, _)| {
        let after = &text[i + needle.len()..];
        !after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '\\')
    })
}

/// The long flags of `cmd` its help shows (without help), as `-name`: a
/// hidden one (`-config` on a command that refuses it) is not offered.
fn flags(cmd: &clap::Command) -> Vec<String> {
    cmd.get_arguments()
        .filter(|a| a.get_id() != "help" && !a.is_hide_set())
        .filter_map(|a| a.get_long().map(|l| format!("-{l}")))
        .collect()
}

#[test]
fn every_subcommand_and_flag_is_documented() {
    let page = page();
    let cli = Cli::command();
    let options = section(&page, ".SH OPTIONS");
    let mut missing = Vec::new();
    let mut known: BTreeSet<String> = ["-h", "-help", "-v"].map(String::from).into();
    for flag in flags(&cli) {
        if !mentions(options, &flag) {
            missing.push(format!("global flag {flag} (under OPTIONS)"));
        }
        known.insert(flag);
    }
    let mut stack: Vec<(String, &clap::Command)> = cli
        .get_subcommands()
        .map(|c| (c.get_name().to_string(), c))
        .collect();
    while let Some((name, cmd)) = stack.pop() {
        // Hidden commands are internal (`intercept load`, which the proxy runs as
        // its eBPF loader child), not part of the user's interface.
        if cmd.get_name() == "help" || cmd.is_hide_set() {
            continue;
        }
        let Some(top) = name.split(' ').next() else {
            continue;
        };
        let heading = format!(".SS {}", roff(top));
        if !page.lines().any(|l| l.trim_end() == heading) {
            missing.push(format!("command {name} (a `{heading}` section)"));
            continue;
        }
        let text = section(&page, &heading);
        if name.contains(' ') && !text.contains(&format!(".B {}", cmd.get_name())) {
            missing.push(format!(
                "command {name} (`.B {}` in {heading})",
                cmd.get_name()
            ));
        }
        for alias in cmd.get_visible_aliases().chain(cmd.get_all_aliases()) {
            if !text.contains(alias) {
                missing.push(format!("alias {alias} of {name}"));
            }
        }
        for flag in flags(cmd) {
            if !mentions(text, &flag) {
                missing.push(format!("flag {flag} of {name}"));
            }
            known.insert(flag);
        }
        for sub in cmd.get_subcommands() {
            stack.push((format!("{name} {}", sub.get_name()), sub));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/man/iron-proxy.1 lacks:\n  {}",
        missing.join("\n  ")
    );

    // The other way round: every `\fB\-flag` / `.BI \-flag` the page names exists.
    let mut stale = BTreeSet::new();
    for line in page.lines().filter(|l| !l.starts_with(".\\\"")) {
        for (i, _) in line.match_indices("\\-") {
            let before = &line[..i];
            let bold = before.ends_with(".B ")
                || before.ends_with(".BI ")
                || before.ends_with(".BR ")
                || before.ends_with(".RB [ ")
                || before.ends_with(", ");
            if !bold || i == 0 {
                continue;
            }
            let word: String = line[i..]
                .replace("\\-", "-")
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if word.len() > 1 && !known.contains(&word) {
                stale.insert(word);
            }
        }
    }
    assert!(
        stale.is_empty(),
        "docs/man/iron-proxy.1 names flags the binary does not have: {stale:?}"
    );
}

#[test]
fn every_environment_override_is_documented() {
    let page = page();
    let env = section(&page, ".SH ENVIRONMENT");
    // Every `IRON_*` variable the binary reads, from the one list its readers share.
    let vars: BTreeSet<&str> = iron_proxy::config::read_variables().into_iter().collect();
    assert!(
        vars.len() >= 10,
        "found too few IRON_* names in the list: {vars:?}"
    );
    let missing: Vec<_> = vars.iter().filter(|v| !env.contains(**v)).collect();
    assert!(
        missing.is_empty(),
        "docs/man/iron-proxy.1 ENVIRONMENT lacks {missing:?}"
    );
}

#[test]
fn groff_renders_without_warnings() {
    let out = Command::new("groff")
        .args(["-man", "-ww", "-z"])
        .arg(page_path())
        .output()
        .expect("running groff (apt-get install groff-base; scripts/setup-test-env.sh does)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "groff -man -ww -z warns about docs/man/iron-proxy.1:\n{stderr}"
    );
}
