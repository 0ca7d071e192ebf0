//! Every `IRON_*` environment variable the proxy reads, in one list, and
//! the warning about any other that is set: a misspelt override
//! (`IRON_PROXY_LOG_LEVL`) would otherwise be ignored without a word.
//! `iron-proxy validate` prints these warnings and the proxy logs them when
//! it starts, each at the variable's name, as findings about the config are
//! placed at their field.
//!
//! The list is made of the readers' own constants (the overrides' table in
//! `env.rs`, `IRON_LOG_FILTER`, the loader's and the re-execution's
//! variables), so a variable cannot be read without being on it; a test
//! fails if a source file names an `IRON_*` variable that is not.
//!
//! Not warned about either: the variables the config itself names (a
//! secret source's `var`, `api_key_env`, ...), and the names of the tools
//! around the proxy (its test harness, packaging and the documentation's
//! control plane), which share its environment without being meant for it.

use super::env::{DNS_ENABLED, LOG_LEVEL, OVERRIDES};
use super::{positions::Location, Config, Lint, DEFAULT_API_KEY_ENV};

/// The variables read outside the config overrides.
const READ_ELSEWHERE: [&str; 4] = [
    crate::ops::logs::FILTER_ENV,
    crate::intercept::LOADER_ENV,
    crate::rep_movsb::MARK_VAR,
    DEFAULT_API_KEY_ENV,
];

/// Names in the proxy's environment that are not meant for it: the test
/// harness's and build's (tests/README.md, scripts/, proxy/build.rs), the
/// GitHub Action's (packaging/github-action), and the documentation's
/// control plane and deployment pages (`IRON_API_KEY`,
/// `IRON_ENROLLMENT_TOKEN`, `IRON_PROXY_VERSION`).
const NOT_OURS: [&str; 17] = [
    "IRON_PROXY_BIN",
    "IRON_TEST_VENV",
    "IRON_TEST_NODE",
    "IRON_SKIP_PRIVILEGED",
    "IRON_TEST_THREADS",
    "IRON_TOOLS_DIR",
    "IRON_HELM",
    "IRON_PROXY_LINK_ORDER",
    "IRON_PROXY_TEST_PYTHON",
    "IRON_PROXY_DEB",
    "IRON_PROXY_ROOT",
    "IRON_PROXY_RUNNER_USER",
    "IRON_PROXY_RELEASES",
    "IRON_PROXY_LOG",
    "IRON_API_KEY",
    "IRON_ENROLLMENT_TOKEN",
    "IRON_PROXY_VERSION",
];

/// Every `IRON_*` variable the proxy reads, whatever the config says.
pub fn read_variables() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = OVERRIDES.iter().map(|o| o.0).collect();
    out.extend([DNS_ENABLED, LOG_LEVEL]);
    out.extend(READ_ELSEWHERE);
    out
}

/// The names of the process's environment variables (values are not
/// read), for [`unknown_variables`]. A name that is not UTF-8 is given
/// lossily (its odd bytes as U+FFFD): no variable the proxy reads is named
/// so, and an `IRON_` one is then warned about rather than dropped. The
/// environment is the one the process started with; what the config names
/// may change at each reload, so start-up and every reload look again.
pub fn process_names() -> impl Iterator<Item = String> {
    std::env::vars_os().map(|(k, _)| k.to_string_lossy().into_owned())
}

/// A finding for each name in `names` (the environment's variable names)
/// that starts with `IRON_` (in any case) and that neither the proxy reads,
/// nor `cfg` names, nor the tools around it use: it has no effect, and is
/// most likely a misspelt one. Each is placed at the variable and names
/// the closest variable the proxy reads. Values are never looked at.
pub fn unknown_variables<I, S>(cfg: &Config, names: I) -> Vec<Lint>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let read = read_variables();
    let named = super::refs::variable_names(cfg);
    let mut unknown: Vec<String> = names
        .into_iter()
        .map(|n| n.as_ref().to_string())
        .filter(|n| n.to_ascii_uppercase().starts_with("IRON_"))
        .filter(|n| {
            !read.contains(&n.as_str())
                && !NOT_OURS.contains(&n.as_str())
                && !named.iter().any(|v| v == n)
        })
        .collect();
    unknown.sort();
    unknown.dedup();
    unknown
        .into_iter()
        .map(|name| {
            let message = message(&name, &read);
            Lint {
                location: Location {
                    file: name,
                    line: None,
                    column: None,
                },
                path: String::new(),
                message,
            }
        })
        .collect()
}

/// What is said about `name`, which the proxy does not read.
fn message(name: &str, read: &[&str]) -> String {
    let upper = name.to_ascii_uppercase();
    if read.contains(&upper.as_str()) {
        return format!(
            "iron-proxy reads no variable of this name, so it has no effect; did you mean \
             {upper}? (variable names are case-sensitive)"
        );
    }
    match closest(&upper, read) {
        (Some(v), true) => format!(
            "iron-proxy reads no variable of this name, so it has no effect; did you mean {v}?"
        ),
        (Some(v), false) => format!(
            "iron-proxy reads no variable of this name, so it has no effect (the closest it \
             reads is {v}; docs/operations.md lists them all)"
        ),
        (None, _) => "iron-proxy reads no variable of this name, so it has no effect".into(),
    }
}

/// The name in `read` closest to `name` (upper case), and whether it is close
/// enough to be a likely typo. Names are compared whole and without their
/// `IRON_` and `PROXY_` prefixes, so `IRON_PROXY_LOG_LEVL` is one letter from
/// `IRON_LOG_LEVEL`.
fn closest<'r>(name: &str, read: &[&'r str]) -> (Option<&'r str>, bool) {
    let core = |n: &str| -> String {
        let n = n.strip_prefix("IRON_").unwrap_or(n);
        n.strip_prefix("PROXY_").unwrap_or(n).to_string()
    };
    let distance = |v: &str| {
        strsim::damerau_levenshtein(name, v).min(strsim::damerau_levenshtein(&core(name), &core(v)))
    };
    let Some((d, best)) = read
        .iter()
        .map(|v| (distance(v), *v))
        .min_by_key(|(d, _)| *d)
    else {
        return (None, false);
    };
    (Some(best), d <= (core(name).len() / 3).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        let text = format!("{}{text}", crate::config::tests::BASE);
        crate::config::parse(&text, "proxy.yaml", &|_| None).expect("valid config")
    }

    fn found(cfg: &Config, names: &[&str]) -> Vec<String> {
        unknown_variables(cfg, names)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_misspelt_variable_is_named_with_the_one_meant() {
        let cfg = config("");
        assert_eq!(
            found(
                &cfg,
                &[
                    "PATH",
                    "IRON_PROXY_LOG_LEVL",
                    "IRON_TLS_MODE",
                    "IRON_TLS_MOD",
                    "iron_log_level",
                    "IRON_PROXY_HTTP_LISTN",
                    "IRON_LOG_FILTER",
                ]
            ),
            [
                "IRON_PROXY_HTTP_LISTN: iron-proxy reads no variable of this name, so it has no \
                 effect; did you mean IRON_PROXY_HTTP_LISTEN?",
                "IRON_PROXY_LOG_LEVL: iron-proxy reads no variable of this name, so it has no \
                 effect; did you mean IRON_LOG_LEVEL?",
                "IRON_TLS_MOD: iron-proxy reads no variable of this name, so it has no effect; \
                 did you mean IRON_TLS_MODE?",
                "iron_log_level: iron-proxy reads no variable of this name, so it has no effect; \
                 did you mean IRON_LOG_LEVEL? (variable names are case-sensitive)",
            ]
        );
    }

    /// A name far from every variable read still names the closest one.
    #[test]
    fn a_name_far_from_every_variable_names_the_closest_and_the_list() {
        let found = found(&config(""), &["IRON_TOTALLY_UNRELATED_THING"]);
        assert_eq!(found.len(), 1, "{found:?}");
        let line = &found[0];
        assert!(
            line.starts_with(
                "IRON_TOTALLY_UNRELATED_THING: iron-proxy reads no variable of this name, so it \
                 has no effect (the closest it reads is IRON_"
            ) && line.ends_with("; docs/operations.md lists them all)"),
            "{line}"
        );
    }

    /// What the config names, what the proxy reads and what the tools around
    /// it set are no typos.
    #[test]
    fn variables_the_config_names_or_the_proxy_reads_are_not_flagged() {
        let cfg = config(
            "management: {listen: \"127.0.0.1:9092\", api_key_env: IRON_MGMT_TOKEN}\n\
             transforms:\n  - name: secrets\n    config:\n      secrets:\n        - source: \
             {type: env, var: IRON_OPENAI_KEY}\n          inject: {header: X-Key}\n",
        );
        let mut names = read_variables();
        names.extend(NOT_OURS);
        names.extend(["IRON_MGMT_TOKEN", "IRON_OPENAI_KEY"]);
        assert_eq!(found(&cfg, &names), Vec::<String>::new());
        // Without the config naming them, they are flagged.
        assert_eq!(found(&config(""), &["IRON_OPENAI_KEY"]).len(), 1);
    }

    /// The single source of truth: every `"IRON_..."` string literal in the
    /// proxy's sources (outside tests) is a variable on the list, or one of
    /// the names it leaves alone. A new reader that is not on the list fails
    /// here, and so would start to be warned about.
    #[test]
    fn every_iron_variable_the_sources_name_is_on_the_list() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let literal = regex::Regex::new(r#""(IRON_[A-Z0-9_]+)""#).expect("regex");
        let read = read_variables();
        let mut seen = Vec::new();
        let mut stack = vec![src];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("readable source dir") {
                let path = entry.expect("dir entry").path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if path.is_dir() {
                    if name != "tests" {
                        stack.push(path);
                    }
                    continue;
                }
                if !name.ends_with(".rs") || matches!(name, "tests.rs" | "testutil.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("readable source");
                // A file's unit tests sit at its end, after `#[cfg(test)]`.
                let code = text.split("#[cfg(test)]\nmod ").next().unwrap_or("");
                for c in literal.captures_iter(code) {
                    let var = c[1].to_string();
                    assert!(
                        read.contains(&var.as_str()) || NOT_OURS.contains(&var.as_str()),
                        "{} names {var}, which is not on the list in config/env_vars.rs",
                        path.display()
                    );
                    seen.push(var);
                }
            }
        }
        // The walk found the readers (the overrides' table among them).
        for v in ["IRON_TLS_MODE", "IRON_LOG_FILTER", "IRON_PROXY_LOADER_EXE"] {
            assert!(seen.iter().any(|s| s == v), "{v} not found in the sources");
        }
    }
}
