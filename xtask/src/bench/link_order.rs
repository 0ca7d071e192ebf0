//! `cargo xtask link-order`: writes `proxy/link-order.txt`, the functions a
//! benchmark run executes, hottest first, for lld's `--symbol-ordering-file`
//! (`proxy/build.rs` passes it to release links).
//!
//! The bench's iron-proxy topologies (https_listen, CONNECT, eBPF
//! interception) run once with iron-proxy under callgrind, whose output names
//! every function that ran, with its instruction count. Under valgrind
//! `/proc/self/exe` is valgrind's own tool, so the wrapper names the eBPF
//! loader child's binary in `IRON_PROXY_LOADER_EXE`; the child runs natively
//! and is not profiled (its code runs in another process). Sampling (perf) would
//! miss what runs once, at start-up or per connection, and those functions cost
//! memory too: the kernel maps code in 64 KiB blocks, so one stray function
//! keeps its neighbours resident.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSymbol, SymbolKind};

use super::{build_proxy, peers::ensure_apt, run, sandbox, BenchArgs};

/// Options of `cargo xtask link-order`.
#[derive(clap::Args, Debug, Clone)]
pub struct LinkOrderArgs {
    /// Profile this iron-proxy binary instead of building a release one.
    #[arg(long, value_name = "PATH")]
    pub proxy_bin: Option<PathBuf>,
    /// Where to write the list (default <workspace>/proxy/link-order.txt).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Measured seconds per bench run under callgrind.
    #[arg(long, default_value_t = 1.0)]
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
        proxy_log: false,
        out: Some(work.join("bench")),
    };
    sandbox::sweep_stale();
    run::run(root, &work.join("bench"), &wrapper, "release", &bench)?;

    let mut costs = Costs::default();
    let mut files = 0;
    for entry in std::fs::read_dir(&work).with_context(|| format!("{}", work.display()))? {
        let path = entry?.path();
        let is_profile = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("callgrind.") && n.ends_with(".out"));
        if is_profile {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            costs.add(&text);
            files += 1;
        }
    }
    if files == 0 {
        bail!("callgrind wrote no profile under {}", work.display());
    }
    let data = std::fs::read(&proxy_bin).with_context(|| format!("{}", proxy_bin.display()))?;
    let functions = function_symbols(&data)
        .with_context(|| format!("reading the symbols of {}", proxy_bin.display()))?;
    let order = costs.order(&functions);
    if order.is_empty() {
        bail!(
            "none of the functions callgrind saw are in {}'s symbol table (stripped?)",
            proxy_bin.display()
        );
    }
    let bytes: u64 = order.iter().map(|n| functions[n.as_str()]).sum();
    let total: u64 = functions.values().sum();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("proxy/link-order.txt"));
    std::fs::write(&out, render(&order)).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "wrote {}: {} of {} functions ({:.2} of {:.2} MiB of code) ran in {} callgrind profile(s)",
        out.display(),
        order.len(),
        functions.len(),
        bytes as f64 / 1048576.0,
        total as f64 / 1048576.0,
        files
    );
    Ok(())
}

/// How many of the names in `list` (a link-order file) the binary at `bin`
/// defines, and how many there are; a list written for other dependency
/// versions or another profile matches few, and orders little.
pub fn coverage(list: &Path, bin: &Path) -> Result<(usize, usize)> {
    let text = std::fs::read_to_string(list).with_context(|| format!("{}", list.display()))?;
    let data = std::fs::read(bin).with_context(|| format!("{}", bin.display()))?;
    let functions = function_symbols(&data)?;
    let names: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let found = names.iter().filter(|n| functions.contains_key(*n)).count();
    Ok((found, names.len()))
}

/// A script that runs the proxy under callgrind, one profile per process.
fn write_wrapper(work: &Path, proxy_bin: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let wrapper = work.join("iron-proxy-callgrind");
    // The eBPF loader child cannot be `/proc/self/exe` under valgrind.
    let script = format!(
        "#!/bin/sh\nexport IRON_PROXY_LOADER_EXE='{bin}'\n\
         exec valgrind --tool=callgrind --callgrind-out-file={work}/callgrind.%p.out \
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

/// Instructions per function name, summed over callgrind profiles.
#[derive(Default, Debug)]
struct Costs {
    by_name: HashMap<String, u64>,
}

impl Costs {
    /// Adds one profile written with `--compress-strings=no
    /// --compress-pos=no`: a `fn=` line names the function the following
    /// cost lines (`<line> <Ir>`) belong to; `calls=` is followed by the
    /// callee's inclusive cost, counted for the caller as well, so that a
    /// function's rank reflects the time spent under it; `cfn=` names a
    /// callee, which ran even if it has no line of its own.
    fn add(&mut self, text: &str) {
        let mut current: Option<String> = None;
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("fn=") {
                let name = name.trim().to_string();
                self.by_name.entry(name.clone()).or_insert(0);
                current = Some(name);
            } else if let Some(name) = line.strip_prefix("cfn=") {
                self.by_name.entry(name.trim().to_string()).or_insert(0);
            } else if line.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-') {
                let ir = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok());
                // `current` was entered at its `fn=` line.
                if let (Some(total), Some(ir)) =
                    (current.as_ref().and_then(|n| self.by_name.get_mut(n)), ir)
                {
                    *total += ir;
                }
            }
        }
    }

    /// The functions of `functions` that ran, most instructions first (ties
    /// by name, so the list is stable).
    fn order(&self, functions: &HashMap<&str, u64>) -> Vec<String> {
        let mut ran: Vec<(&String, u64)> = self
            .by_name
            .iter()
            .filter(|(name, _)| functions.contains_key(name.as_str()))
            .map(|(name, ir)| (name, *ir))
            .collect();
        ran.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        ran.into_iter().map(|(name, _)| name.clone()).collect()
    }
}

fn render(order: &[String]) -> String {
    let mut text = String::from(
        "# Functions a benchmark run executes, hottest first: lld's --symbol-ordering-file\n\
         # for release builds (proxy/build.rs). Written by `cargo xtask link-order`;\n\
         # regenerate after dependency or profile changes (names carry their crate's hash).\n",
    );
    for name in order {
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
        costs.add(PROFILE);
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
            costs.order(&functions),
            [
                "_ZN4main4hot17h0000000000000001E",
                "_ZN4main6callee17h0000000000000002E",
                "_ZN4main4cold17h0000000000000003E",
            ]
        );
    }

    #[test]
    fn a_callee_without_its_own_cost_lines_still_ran() {
        let mut costs = Costs::default();
        costs.add("fn=a\n1 5\ncfn=b\ncalls=1 2\n2 0\n");
        let functions: HashMap<&str, u64> = [("a", 1), ("b", 1)].into_iter().collect();
        assert_eq!(costs.order(&functions), ["a", "b"]);
    }

    #[test]
    fn the_list_is_one_name_per_line_after_a_comment_header() {
        let text = render(&["x".into(), "y".into()]);
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
        let list = std::env::temp_dir().join(format!("link-order-test-{}", std::process::id()));
        std::fs::write(
            &list,
            format!("# header\n{present}\n_ZN7missing17h0000000000000000E\n\n"),
        )
        .unwrap();
        let counted = coverage(&list, &exe);
        std::fs::remove_file(&list).unwrap();
        assert_eq!(counted.unwrap(), (1, 2));
    }

    #[test]
    fn the_test_binary_has_function_symbols() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let functions = function_symbols(&exe).unwrap();
        assert!(functions
            .keys()
            .any(|n| n.contains("a_callee_without_its_own_cost_lines_still_ran")));
    }
}
