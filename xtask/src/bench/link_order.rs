//! `cargo xtask link-order`: writes `proxy/link-order.txt`, the functions a
//! benchmark run executes, hottest first, which release links place first
//! (`proxy/build.rs`: a linker script from `proxy/build/link_script.rs` and
//! lld's `--symbol-ordering-file`).
//!
//! The bench's iron-proxy topologies (https_listen, CONNECT, eBPF
//! interception) run once, with a key injected into every request as
//! `--secrets` does (so the casing round trip and the response's scrub are
//! serving code too), with iron-proxy under callgrind, whose output names
//! every function that ran, with its instruction count. Under valgrind
//! `/proc/self/exe` is valgrind's own tool, so the wrapper names the eBPF
//! loader child's binary in `IRON_PROXY_LOADER_EXE`; the child runs natively
//! and is not profiled (its code runs in another process). Sampling (perf) would
//! miss what runs once, at start-up or per connection, and those functions cost
//! memory too: the kernel maps code in 64 KiB blocks, so one stray function
//! keeps its neighbours resident.
//!
//! The list has two parts. Callgrind dumps a profile when the proxy leaves
//! `release_startup_pages` (the end of start-up, where the proxy unmaps the
//! read-only pages start-up touched): the functions that run after it come
//! first, hottest first, then those that ran only before it. Once start-up
//! pages are released, a serving proxy maps back only the first part.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSymbol, SymbolKind};

use super::{build_proxy, peers::ensure_apt, run, sandbox, BenchArgs};

/// The release link's view of the list (crate hashes as wildcards), shared
/// with `proxy/build.rs`.
/// `script` is the build script's; its tests run here.
#[path = "../../../proxy/build/link_script.rs"]
#[allow(dead_code)]
mod link_script;

/// Options of `cargo xtask link-order`.
#[derive(clap::Args, Debug, Clone)]
pub struct LinkOrderArgs {
    /// Profile this iron-proxy binary instead of building a release one.
    #[arg(long, value_name = "PATH")]
    pub proxy_bin: Option<PathBuf>,
    /// Where to write the list (default <workspace>/proxy/link-order.txt).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Measured seconds per bench run under callgrind (at 1 s, CONNECT
    /// completed no 64 KiB request under callgrind once).
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
}

/// The topologies whose code paths the list covers.
const TOPOLOGIES: [&str; 3] = ["iron-https", "iron-connect", "iron-intercept"];

pub fn main(root: &Path, target: &Path, args: LinkOrderArgs) -> Result<()> {
    sandbox::install_interrupt_handler();
    ensure_apt("valgrind", "/usr/bin/valgrind")?;
    let proxy_bin = match &args.proxy_bin {
        Some(p) => p.clone(),
        None => build_proxy(root, target, "release")?,
    };
    let proxy_bin = proxy_bin
        .canonicalize()
        .with_context(|| format!("{}", proxy_bin.display()))?;
    let work = target.join("link-order");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let wrapper = write_wrapper(&work, &proxy_bin)?;
    let bench = BenchArgs {
        quick: false,
        only: TOPOLOGIES.iter().map(|t| t.to_string()).collect(),
        no_peers: true,
        duration: Some(args.duration),
        repeats: Some(1),
        conns: 32,
        new_conns: 8,
        idle: Some(0),
        idle_peers: Some(0),
        profile: Some("release".into()),
        proxy_bin: Some(wrapper.clone()),
        perf: None,
        perf_topology: "iron-https".into(),
        proxy_log: false,
        out: Some(work.join("bench")),
        against: None,
        // Only the proxy's code matters here.
        unpaired: true,
        // A deployment's usual request has a credential put into it (and its
        // response searched for it): that code is serving code too. The bare
        // path is a part of this one.
        secrets: true,
        profiling: true,
    };
    sandbox::sweep_stale();
    run::run(
        root,
        target,
        &work.join("bench"),
        &wrapper,
        "release",
        &bench,
        Vec::new(),
    )?;

    let mut costs = Costs::default();
    let (mut serving, mut startup) = (0, 0);
    for entry in std::fs::read_dir(&work).with_context(|| format!("{}", work.display()))? {
        let path = entry?.path();
        let Some(phase) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(profile_phase)
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        costs.add(&text, phase);
        match phase {
            Phase::Serving => serving += 1,
            Phase::Startup => startup += 1,
        }
    }
    if serving == 0 {
        bail!("callgrind wrote no profile under {}", work.display());
    }
    if startup == 0 {
        eprintln!(
            "link-order: no start-up profile (callgrind saw no return from {STARTUP_END}); \
             the list does not separate start-up from serving"
        );
    }
    let data = std::fs::read(&proxy_bin).with_context(|| format!("{}", proxy_bin.display()))?;
    let functions = function_symbols(&data)
        .with_context(|| format!("reading the symbols of {}", proxy_bin.display()))?;
    let order = costs.order(&functions);
    if order.names.is_empty() {
        bail!(
            "none of the functions callgrind saw are in {}'s symbol table (stripped?)",
            proxy_bin.display()
        );
    }
    let bytes: u64 = order.names.iter().map(|n| functions[n.as_str()]).sum();
    let total: u64 = functions.values().sum();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("proxy/link-order.txt"));
    std::fs::write(&out, render(&order)).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "wrote {}: {} of {} functions ({:.2} of {:.2} MiB of code) ran in {} callgrind profile(s), \
         {} of them ({:.2} MiB) while serving",
        out.display(),
        order.names.len(),
        functions.len(),
        bytes as f64 / 1048576.0,
        total as f64 / 1048576.0,
        serving + startup,
        order.serving,
        order.names[..order.serving]
            .iter()
            .map(|n| functions[n.as_str()])
            .sum::<u64>() as f64
            / 1048576.0,
    );
    Ok(())
}

/// How a link-order file matches a binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    /// Names in the list the binary defines.
    pub found: usize,
    /// Names in the list.
    pub listed: usize,
    /// Names of the serving part of the list (before [`STARTUP_HEADING`])
    /// the binary does not define. Each such function, if it still runs
    /// under another name, lands among cold code and keeps a 64 KiB
    /// fault-around block of it resident.
    pub serving_missing: usize,
}

/// The line of a link-order file after which come the start-up functions.
const STARTUP_HEADING: &str = "# Then those that ran only during start-up:";

/// How many serving names may be missing before the bench warns: a handful
/// is usual right after a regeneration (functions the optimizer inlines
/// in one build and not the other).
pub const SERVING_MISSING_WARN: usize = 8;

/// How the names in `list` (a link-order file) match the binary at `bin`,
/// the way the release link matches them: with crate hashes as wildcards
/// ([`link_script::key`]), so new dependency versions or features do not
/// count as misses; request-path code renamed, added or inlined away since
/// the list was written does.
pub fn coverage(list: &Path, bin: &Path) -> Result<Coverage> {
    let text = std::fs::read_to_string(list).with_context(|| format!("{}", list.display()))?;
    let data = std::fs::read(bin).with_context(|| format!("{}", bin.display()))?;
    let functions: std::collections::HashSet<String> = function_symbols(&data)?
        .into_keys()
        .map(link_script::key)
        .collect();
    let mut serving = true;
    let mut c = Coverage {
        found: 0,
        listed: 0,
        serving_missing: 0,
    };
    for line in text.lines().map(str::trim) {
        if line == STARTUP_HEADING {
            serving = false;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        c.listed += 1;
        if functions.contains(&link_script::key(line)) {
            c.found += 1;
        } else if serving {
            c.serving_missing += 1;
        }
    }
    Ok(c)
}

/// The function whose return ends start-up (`resident::release_startup_pages`,
/// never inlined), as a callgrind pattern over mangled names.
const STARTUP_END: &str = "*8resident21release_startup_pages*";

/// Which part of a process's life a profile covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Up to the first return from [`STARTUP_END`]: `callgrind.<pid>.out.1`,
    /// the dump callgrind writes there.
    Startup,
    /// After it (or the whole run, if it never returned):
    /// `callgrind.<pid>.out`, written at exit, and `callgrind.<pid>.out.<n>`
    /// for n > 1, dumped when a reload released pages again.
    Serving,
}

/// The phase of a profile file named `name`, `None` if it is not one.
fn profile_phase(name: &str) -> Option<Phase> {
    let rest = name.strip_prefix("callgrind.")?;
    let (_pid, tail) = rest.split_once('.')?;
    match tail {
        "out" => Some(Phase::Serving),
        t => match t.strip_prefix("out.")?.parse::<u32>().ok()? {
            1 => Some(Phase::Startup),
            _ => Some(Phase::Serving),
        },
    }
}

/// A script that runs the proxy under callgrind, one profile per process,
/// plus one dump at the end of start-up.
fn write_wrapper(work: &Path, proxy_bin: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let wrapper = work.join("iron-proxy-callgrind");
    // The eBPF loader child cannot be `/proc/self/exe` under valgrind.
    let script = format!(
        "#!/bin/sh\nexport IRON_PROXY_LOADER_EXE='{bin}'\n\
         exec valgrind --tool=callgrind --callgrind-out-file={work}/callgrind.%p.out \
         --dump-after='{STARTUP_END}' \
         --dump-instr=no --compress-strings=no --compress-pos=no --demangle=no '{bin}' \"$@\"\n",
        work = work.display(),
        bin = proxy_bin.display()
    );
    std::fs::write(&wrapper, script).with_context(|| format!("writing {}", wrapper.display()))?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", wrapper.display()))?;
    Ok(wrapper)
}

/// Defined function symbols and their sizes.
fn function_symbols(elf: &[u8]) -> Result<HashMap<&str, u64>> {
    let file = object::File::parse(elf)?;
    let mut functions = HashMap::new();
    for sym in file.symbols() {
        if sym.kind() == SymbolKind::Text && sym.is_definition() && sym.size() > 0 {
            if let Ok(name) = sym.name() {
                functions.insert(name, sym.size());
            }
        }
    }
    Ok(functions)
}

/// Instructions per function name and phase, summed over callgrind profiles.
#[derive(Default, Debug)]
struct Costs {
    serving: HashMap<String, u64>,
    startup: HashMap<String, u64>,
}

/// The link order: functions that ran while serving, hottest first, then
/// those that ran only during start-up.
#[derive(Debug, PartialEq, Eq)]
struct Order {
    names: Vec<String>,
    /// How many of `names` ran while serving (the first ones).
    serving: usize,
}

impl Costs {
    /// Adds one profile written with `--compress-strings=no
    /// --compress-pos=no`: a `fn=` line names the function the following
    /// cost lines (`<line> <Ir>`) belong to; `calls=` is followed by the
    /// callee's inclusive cost, counted for the caller as well, so that a
    /// function's rank reflects the time spent under it; `cfn=` names a
    /// callee, which ran even if it has no line of its own.
    fn add(&mut self, text: &str, phase: Phase) {
        let by_name = match phase {
            Phase::Serving => &mut self.serving,
            Phase::Startup => &mut self.startup,
        };
        let mut current: Option<String> = None;
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("fn=") {
                let name = name.trim().to_string();
                by_name.entry(name.clone()).or_insert(0);
                current = Some(name);
            } else if let Some(name) = line.strip_prefix("cfn=") {
                by_name.entry(name.trim().to_string()).or_insert(0);
            } else if line.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-') {
                let ir = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok());
                // `current` was entered at its `fn=` line.
                if let (Some(total), Some(ir)) =
                    (current.as_ref().and_then(|n| by_name.get_mut(n)), ir)
                {
                    *total += ir;
                }
            }
        }
    }

    /// The functions of `functions` that ran: those that ran while
    /// serving, then the others, each part most instructions first (ties by
    /// name, so the list is stable).
    fn order(&self, functions: &HashMap<&str, u64>) -> Order {
        let ranked = |costs: &HashMap<String, u64>, skip: &HashMap<String, u64>| {
            let mut ran: Vec<(&String, u64)> = costs
                .iter()
                .filter(|(name, _)| functions.contains_key(name.as_str()))
                .filter(|(name, _)| !skip.contains_key(name.as_str()))
                .map(|(name, ir)| (name, *ir))
                .collect();
            ran.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
            ran.into_iter()
                .map(|(name, _)| name.clone())
                .collect::<Vec<_>>()
        };
        let mut names = ranked(&self.serving, &HashMap::new());
        let serving = names.len();
        names.extend(ranked(&self.startup, &self.serving));
        Order { names, serving }
    }
}

fn render(order: &Order) -> String {
    let mut text = String::from(
        "# Functions a benchmark run executes, placed first by release links\n\
         # (proxy/build.rs; crate hashes match as wildcards). Written by `cargo xtask\n\
         # link-order`; regenerate after changes to the request path's code.\n\
         # First those that run while serving, hottest first:\n",
    );
    for (i, name) in order.names.iter().enumerate() {
        if i == order.serving {
            text.push_str(STARTUP_HEADING);
            text.push('\n');
        }
        text.push_str(name);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shape of a callgrind profile written with --compress-strings=no
    // --compress-pos=no --dump-instr=no (trimmed from a real one).
    const PROFILE: &str = "\
version: 1
creator: callgrind-3.19.0
events: Ir
fl=???
fn=_ZN4main4hot17h0000000000000001E
10 500
cfl=???
cfn=_ZN4main6callee17h0000000000000002E
calls=3 12
12 900
fn=_ZN4main6callee17h0000000000000002E
20 900
fn=_ZN4main4cold17h0000000000000003E
30 7
fn=memcpy
40 100000
totals: 101407
";

    #[test]
    fn functions_are_ranked_by_instructions_and_filtered_to_the_binary() {
        let mut costs = Costs::default();
        costs.add(PROFILE, Phase::Serving);
        let functions: HashMap<&str, u64> = [
            ("_ZN4main4hot17h0000000000000001E", 64),
            ("_ZN4main6callee17h0000000000000002E", 32),
            ("_ZN4main4cold17h0000000000000003E", 16),
            ("_ZN4main5never17h0000000000000004E", 16),
        ]
        .into_iter()
        .collect();
        // hot: 500 own + 900 under its call; memcpy is libc's, not the binary's.
        assert_eq!(
            costs.order(&functions).names,
            [
                "_ZN4main4hot17h0000000000000001E",
                "_ZN4main6callee17h0000000000000002E",
                "_ZN4main4cold17h0000000000000003E",
            ]
        );
    }

    #[test]
    fn serving_functions_come_before_start_up_only_ones() {
        let mut costs = Costs::default();
        // Start-up: a heavy parser, and `shared`, which also serves.
        costs.add("fn=parse\n1 9000\nfn=shared\n1 50\n", Phase::Startup);
        costs.add("fn=shared\n1 10\nfn=serve\n1 20\n", Phase::Serving);
        let functions: HashMap<&str, u64> = [("parse", 1), ("shared", 1), ("serve", 1)]
            .into_iter()
            .collect();
        let order = costs.order(&functions);
        assert_eq!(order.names, ["serve", "shared", "parse"]);
        assert_eq!(order.serving, 2);
        let text = render(&order);
        let body: Vec<&str> = text.lines().skip(4).collect();
        assert_eq!(
            body,
            [
                "serve",
                "shared",
                "# Then those that ran only during start-up:",
                "parse"
            ]
        );
    }

    #[test]
    fn profile_files_are_told_apart_by_their_dump_suffix() {
        assert_eq!(profile_phase("callgrind.4242.out"), Some(Phase::Serving));
        assert_eq!(profile_phase("callgrind.4242.out.1"), Some(Phase::Startup));
        assert_eq!(profile_phase("callgrind.4242.out.2"), Some(Phase::Serving));
        assert_eq!(profile_phase("callgrind.4242.out.x"), None);
        assert_eq!(profile_phase("callgrind.4242.txt"), None);
        assert_eq!(profile_phase("iron-proxy-callgrind"), None);
    }

    #[test]
    fn a_callee_without_its_own_cost_lines_still_ran() {
        let mut costs = Costs::default();
        costs.add("fn=a\n1 5\ncfn=b\ncalls=1 2\n2 0\n", Phase::Serving);
        let functions: HashMap<&str, u64> = [("a", 1), ("b", 1)].into_iter().collect();
        assert_eq!(costs.order(&functions).names, ["a", "b"]);
    }

    #[test]
    fn the_list_is_one_name_per_line_after_a_comment_header() {
        let text = render(&Order {
            names: vec!["x".into(), "y".into()],
            serving: 2,
        });
        let names: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(names, ["x", "y"]);
    }

    #[test]
    fn coverage_counts_the_listed_names_the_binary_defines() {
        let exe = std::env::current_exe().unwrap();
        let data = std::fs::read(&exe).unwrap();
        let functions = function_symbols(&data).unwrap();
        let present = functions
            .keys()
            .find(|n| n.contains("coverage_counts_the_listed_names"))
            .unwrap()
            .to_string();
        // The same function after a dependency change gave its crate
        // another hash: the release link still places it, so it counts.
        let at = present.find("Cs").unwrap();
        let end = at + present[at..].find('_').unwrap();
        let rehashed = format!("{}CsZZZZZZZZZZZ{}", &present[..at], &present[end..]);
        assert_ne!(rehashed, present);
        let list = std::env::temp_dir().join(format!("link-order-test-{}", std::process::id()));
        std::fs::write(
            &list,
            format!(
                "# header\n{present}\n_ZN7missing17h0000000000000000E\n{rehashed}\n\n\
                 {STARTUP_HEADING}\n_ZN8missing217h0000000000000000E\n{present}\n"
            ),
        )
        .unwrap();
        let counted = coverage(&list, &exe);
        std::fs::remove_file(&list).unwrap();
        assert_eq!(
            counted.unwrap(),
            Coverage {
                found: 3,
                listed: 5,
                serving_missing: 1
            }
        );
    }

    #[test]
    fn the_test_binary_has_function_symbols() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let functions = function_symbols(&exe).unwrap();
        assert!(functions
            .keys()
            .any(|n| n.contains("a_callee_without_its_own_cost_lines_still_ran")));
    }

    /// The crates `cargo tree` shows with `args`, each with its features,
    /// over the edges a release binary is built from.
    fn crate_features(
        args: &[&str],
    ) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = std::process::Command::new(cargo)
            .current_dir(&root)
            .args(["tree", "--offline", "-e", "normal,build", "--no-dedupe"])
            .args(["--prefix", "none", "-f", "{p}|{f}"])
            .args(args)
            .output()
            .expect("running cargo tree");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut crates = std::collections::BTreeMap::<String, std::collections::BTreeSet<_>>::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((krate, features)) = line.split_once('|') {
                crates.entry(krate.to_string()).or_default().extend(
                    features
                        .split(',')
                        .filter(|f| !f.is_empty())
                        .map(String::from),
                );
            }
        }
        crates
    }

    /// Cargo unifies features over the packages a command builds, and a
    /// crate's features are part of its hash, which is part of every symbol
    /// name of every crate that depends on it. Were `cargo build --release`
    /// (the workspace) and `cargo build -p iron-proxy` (the package, the
    /// bench and `cargo xtask link-order`) to build different feature sets,
    /// their binaries would name the proxy's functions differently and
    /// link-order.txt would fit only one of them (round 35: a third of it
    /// missed). proxy/Cargo.toml turns on what the other members turn on.
    #[test]
    fn the_workspace_and_the_proxy_alone_build_one_crate_graph() {
        let alone = crate_features(&["-p", "iron-proxy"]);
        let workspace = crate_features(&["--workspace"]);
        assert!(
            alone.len() > 100,
            "cargo tree listed {} crates",
            alone.len()
        );
        let differ: Vec<String> = alone
            .iter()
            .filter(|(krate, features)| workspace.get(*krate) != Some(features))
            .map(|(krate, features)| {
                format!(
                    "{krate}: {features:?} alone, {:?} in the workspace",
                    workspace.get(krate)
                )
            })
            .collect();
        assert!(differ.is_empty(), "features differ: {differ:#?}");
    }
}
