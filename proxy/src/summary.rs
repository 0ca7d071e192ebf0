//! `iron-proxy summary`: turns an audit log into a GitHub job summary.
//!
//! Reads audit records (JSON lines; anything else, such as operational log
//! lines, is skipped), counts per host how many requests were allowed, warned
//! (allowed by `warn: true` although the allowlist would have refused them)
//! and denied, and renders a GitHub-flavoured markdown table plus a
//! collapsible per-path breakdown. The output stays under GitHub's 1 MiB
//! step-summary limit: rows that do not fit are dropped with a note.
//!
//! Hosts and paths come from the workload, which is untrusted: they are
//! percent-encoded outside a conservative character set and shown as code
//! spans, so a crafted Host header cannot inject markdown or HTML.
//!
//! `-suggest-rules FILE` writes an egress-rules file (the GitHub Action's
//! format) allowing every host that was warned or refused by the allowlist:
//! learning mode.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

mod render;

/// GitHub's limit on one step's summary.
pub const STEP_SUMMARY_LIMIT: usize = 1024 * 1024;

/// The longest line read as a possible audit record. A record is far
/// shorter (its workload-chosen strings are bounded; only `body_capture`'s
/// bodies, at the operator's cap, make it long); a longer line is skipped
/// unparsed and counted ([`Summary::oversized`]), so that a log with no
/// newline in gigabytes is read in constant memory.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// `iron-proxy summary` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SummaryArgs {
    /// Refused: summary reads an audit log.
    #[command(flatten)]
    pub no_config: crate::cli::NoConfig,
    /// The audit log (JSON lines; other lines are skipped).
    #[arg(
        long = "log-file",
        value_name = "FILE",
        default_value = "/var/log/iron-proxy.log"
    )]
    pub log_file: PathBuf,
    /// Add a per-path breakdown (paths as logged) in a collapsible section.
    /// Off by default: a job summary is readable by anyone who can read the
    /// repository, and paths can carry identifiers.
    #[arg(long = "show-full-paths")]
    pub show_full_paths: bool,
    /// Also write an egress-rules file allowing every warned or denied host (learning mode).
    #[arg(long = "suggest-rules", value_name = "OUT")]
    pub suggest_rules: Option<PathBuf>,
}

/// Errors from `summary`.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// The audit log could not be read.
    #[error("reading audit log {path}")]
    ReadLog {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The summary could not be written.
    #[error("writing summary to {path}")]
    WriteSummary {
        /// `$GITHUB_STEP_SUMMARY` or `<stdout>`.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The suggested rules could not be written.
    #[error("writing suggested rules to {path}")]
    WriteRules {
        /// The output file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// How one request ended, for the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded, and the allowlist allowed it.
    Allowed,
    /// Forwarded only because the allowlist is in warn mode.
    Warned,
    /// Refused by policy or hygiene checks (or a deny CIDR).
    Denied,
    /// The proxy or the upstream failed; counted in TOTAL only.
    Failed,
}

/// Counts for one host or path.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Every record.
    pub total: u64,
    /// [`Outcome::Allowed`].
    pub allowed: u64,
    /// [`Outcome::Warned`].
    pub warned: u64,
    /// [`Outcome::Denied`].
    pub denied: u64,
}

impl Counts {
    fn add(&mut self, o: Outcome) {
        self.total += 1;
        match o {
            Outcome::Allowed => self.allowed += 1,
            Outcome::Warned => self.warned += 1,
            Outcome::Denied => self.denied += 1,
            Outcome::Failed => {}
        }
    }
}

/// Per-host statistics.
#[derive(Debug, Default, Clone)]
pub struct HostStats {
    /// Totals for the host.
    pub counts: Counts,
    /// Per path, as logged; empty unless the per-path breakdown was asked for.
    pub paths: BTreeMap<String, Counts>,
    /// Whether the allowlist refused (or, in warn mode, would have refused) it.
    pub suggest: bool,
}

/// The aggregated log.
#[derive(Debug, Default)]
pub struct Summary {
    /// Keyed by host as logged.
    pub hosts: BTreeMap<String, HostStats>,
    /// Audit records read.
    pub records: u64,
    /// Lines that were not audit records.
    pub skipped: u64,
    /// Lines longer than [`MAX_LINE_BYTES`], skipped unparsed (not in `skipped`).
    pub oversized: u64,
    pub(crate) full_paths: bool,
}

/// Classifies one parsed audit record.
pub fn outcome(rec: &serde_json::Value) -> Option<Outcome> {
    let action = rec.get("action")?.as_str()?;
    Some(match action {
        "allow" if warned(rec) => Outcome::Warned,
        "allow" => Outcome::Allowed,
        "reject" => Outcome::Denied,
        "error" if rec.get("reason").and_then(|r| r.as_str()) == Some("deny_cidr") => {
            Outcome::Denied
        }
        _ => Outcome::Failed,
    })
}

fn warned(rec: &serde_json::Value) -> bool {
    rec.get("request_transforms")
        .and_then(|t| t.as_array())
        .is_some_and(|ts| {
            ts.iter().any(|t| {
                t.get("name").and_then(|n| n.as_str()) == Some("allowlist")
                    && t.pointer("/annotations/action").and_then(|a| a.as_str()) == Some("warn")
            })
        })
}

impl Summary {
    /// An empty summary; `full_paths` keeps the per-path breakdown.
    pub fn new(full_paths: bool) -> Self {
        Summary {
            full_paths,
            ..Default::default()
        }
    }

    /// Adds one log line; returns whether it was an audit record.
    pub fn add_line(&mut self, line: &str) -> bool {
        let line = line.trim();
        let rec: serde_json::Value = match serde_json::from_str(line) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            _ => {
                self.skipped += 1;
                return false;
            }
        };
        let Some(o) = outcome(&rec) else {
            self.skipped += 1;
            return false;
        };
        self.records += 1;
        let host = rec
            .get("host")
            .and_then(|h| h.as_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let host = if host.is_empty() {
            "(unknown)".to_string()
        } else {
            host
        };
        let by_allowlist = o == Outcome::Warned
            || (o == Outcome::Denied
                && rec.get("reason").and_then(|r| r.as_str()) == Some("not_allowlisted"));
        let stats = self.hosts.entry(host).or_default();
        stats.counts.add(o);
        if self.full_paths {
            let path = match rec.get("path").and_then(|p| p.as_str()) {
                Some(p) if !p.is_empty() => p.to_string(),
                _ => "(connection)".to_string(),
            };
            stats.paths.entry(path).or_default().add(o);
        }
        stats.suggest |= by_allowlist;
        true
    }

    /// Reads every line of `r`; a line longer than [`MAX_LINE_BYTES`] is
    /// skipped and counted in [`Summary::oversized`].
    pub fn read(&mut self, r: impl BufRead) -> std::io::Result<()> {
        self.read_capped(r, MAX_LINE_BYTES)
    }

    /// [`read`](Self::read) with lines of at most `max` bytes (without the
    /// newline): what is read of a longer one is dropped as it comes, so
    /// memory stays at `max` whatever the line's length.
    fn read_capped(&mut self, mut r: impl BufRead, max: usize) -> std::io::Result<()> {
        let mut line = Vec::new();
        // The current line passed `max`: the rest of it is skipped.
        let mut over = false;
        loop {
            let chunk = match r.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let (taken, ends) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None if chunk.is_empty() => (0, true),
                None => (chunk.len(), false),
            };
            let eof = chunk.is_empty();
            let text = &chunk[..taken - usize::from(ends && !eof)];
            if !over && line.len() + text.len() > max {
                over = true;
                line = Vec::new();
            }
            if !over {
                line.extend_from_slice(text);
            }
            r.consume(taken);
            if ends {
                if over {
                    self.oversized += 1;
                } else if !(eof && line.is_empty()) {
                    self.add_line(&String::from_utf8_lossy(&line));
                }
                over = false;
                line.clear();
            }
            if eof {
                return Ok(());
            }
        }
    }

    /// Hosts ordered by (warned + denied) desc, total desc, name.
    fn ordered(&self) -> Vec<(&String, &HostStats)> {
        let mut v: Vec<_> = self.hosts.iter().collect();
        v.sort_by(|a, b| {
            let key = |s: &HostStats| (s.counts.warned + s.counts.denied, s.counts.total);
            key(b.1).cmp(&key(a.1)).then_with(|| a.0.cmp(b.0))
        });
        v
    }

    /// The markdown summary, at most `budget` bytes.
    pub fn to_markdown(&self, budget: usize) -> String {
        render::markdown(self, &self.ordered(), budget)
    }

    /// An egress-rules YAML allowing the hosts the allowlist warned about or refused.
    pub fn suggested_rules(&self, source: &str) -> String {
        let mut domains = Vec::new();
        let mut cidrs = Vec::new();
        for (host, stats) in &self.hosts {
            if !stats.suggest {
                continue;
            }
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            match bare.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => cidrs.push(format!("{ip}/32")),
                Ok(IpAddr::V6(ip)) => cidrs.push(format!("{ip}/128")),
                Err(_) if render::is_hostname(host) => domains.push(host.clone()),
                Err(_) => {}
            }
        }
        let mut out = format!(
            "# Suggested by `iron-proxy summary` from {}: every host the allowlist\n\
             # warned about or refused. Review each entry before committing it:\n\
             # every line widens what the workload may reach.\n",
            source.replace('\n', " ")
        );
        let list = |out: &mut String, key: &str, items: &[String]| {
            out.push_str(&format!("{key}:"));
            if items.is_empty() {
                out.push_str(" []\n");
            } else {
                out.push('\n');
                for i in items {
                    out.push_str(&format!("  - \"{i}\"\n"));
                }
            }
        };
        list(&mut out, "domains", &domains);
        if !cidrs.is_empty() {
            list(&mut out, "cidrs", &cidrs);
        }
        out
    }
}

/// `iron-proxy summary`: reads `log_file`, appends the markdown to
/// `$GITHUB_STEP_SUMMARY` (stdout when unset) and optionally writes suggested
/// rules. Returns the number of audit records read.
pub fn run(
    log_file: &Path,
    full_paths: bool,
    suggest_rules: Option<&Path>,
) -> Result<u64, SummaryError> {
    let read_err = |source| SummaryError::ReadLog {
        path: log_file.to_path_buf(),
        source,
    };
    // A regular file only: a FIFO would wait for a writer, and a device such as
    // `/dev/zero` never ends.
    let file = crate::config_source::file::open_named(log_file).map_err(read_err)?;
    let mut summary = Summary::new(full_paths);
    summary
        .read(std::io::BufReader::new(file))
        .map_err(read_err)?;
    match std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) {
        Some(p) => {
            let path = PathBuf::from(p);
            let used = std::fs::metadata(&path)
                .map(|m| m.len() as usize)
                .unwrap_or(0);
            let md = summary.to_markdown(STEP_SUMMARY_LIMIT.saturating_sub(used));
            let write_err = |source| SummaryError::WriteSummary {
                path: path.clone(),
                source,
            };
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(write_err)?;
            f.write_all(md.as_bytes()).map_err(write_err)?;
        }
        None => {
            let md = summary.to_markdown(STEP_SUMMARY_LIMIT);
            std::io::stdout()
                .write_all(md.as_bytes())
                .map_err(|source| SummaryError::WriteSummary {
                    path: "<stdout>".into(),
                    source,
                })?;
        }
    }
    if let Some(out) = suggest_rules {
        let text = summary.suggested_rules(&log_file.display().to_string());
        std::fs::write(out, text).map_err(|source| SummaryError::WriteRules {
            path: out.to_path_buf(),
            source,
        })?;
    }
    Ok(summary.records)
}

#[cfg(test)]
mod tests;
