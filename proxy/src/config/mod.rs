//! The YAML configuration: typed, fully validated at load, with errors that
//! name the file, line, column and field path of every problem found.
//!
//! Entry points: [`load`] (file + process environment), [`parse`] (text +
//! any environment), [`check_references`] (files and variables the config
//! points at that are missing, for `validate`).
//!
//! Sections whose absence changes behaviour are `Option`s (`dns`, `mcp`,
//! `management`, `intercept`: absent means off). `proxy`, `tls`, `metrics` and
//! `log` always exist: every field has a default, except `tls.ca_cert`/`ca_key`
//! which MITM mode (the default) needs to start (unset, they are a warning of
//! `validate`, like a CA file that is not there: [`check_references`]). The metrics endpoint has no
//! documented off switch, so it always listens (default `:9090`).

mod aws_region;
mod common;
mod conflicts;
mod credentials;
mod decode;
mod dns;
mod env;
mod env_vars;
mod error;
mod grpc;
mod hmac;
mod intercept;
mod judge;
mod lint;
mod lookalike;
mod mcp;
mod oauth;
mod positions;
mod proxy_values;
mod refs;
mod secrets;
mod sections;
mod sources;
mod transforms;
mod values;
mod yaml;

use std::collections::HashMap;
use std::path::Path;

pub use credentials::{AwsAuthConfig, AwsCredentials, GcpAuthConfig, GcpCredentials};
pub use dns::{DnsConfig, DnsRecord, DnsRecordValue, MAX_CNAME_CHAIN};
pub use env_vars::{process_names, read_variables, unknown_variables};
pub use error::{ConfigError, ConfigErrors};
pub use grpc::{GrpcClientCert, GrpcConfig, GrpcTlsConfig};
pub use hmac::{
    HmacAlgorithm, HmacHeader, HmacSignConfig, HmacSignature, HmacTimestamp, KeyEncoding,
    OutputEncoding, TimestampFormat, HMAC_HEADER_FIELDS, HMAC_MESSAGE_FIELDS,
};
pub use intercept::{InterceptConfig, InterceptMode, UidSpec, DEFAULT_PIN_PATH};
pub use judge::{CircuitBreakerConfig, JudgeConfig, JudgeFallback, JudgeProvider, ProviderConfig};
pub use lint::{lint, Lint};
pub use mcp::{ArgCondition, ArgMatcher, McpConfig, McpErrorConfig, McpServer, McpTool};
pub use oauth::{OAuthGrant, OAuthTokenConfig, OAuthTokenEntry};
pub use positions::Location;
pub use refs::{check_references, missing_inputs, Reference, ReferenceKind};
pub use secrets::{InjectConfig, ReplaceConfig, SecretEntry, SecretMode, SecretsConfig};
pub use sections::{
    default_deny_cidrs, CaUnset, LogConfig, LogFormat, LogLevel, ManagementConfig, MetricsConfig,
    MitmConfig, ProxyConfig, TlsConfig, DEFAULT_API_KEY_ENV, DEFAULT_DENY_CIDRS,
};
pub use sources::{OpRef, SecretSourceConfig};
pub use transforms::{
    AllowlistConfig, AnnotateConfig, AnnotationGroup, BodyCaptureConfig, HeaderAllowlistConfig,
    TransformConfig, TRANSFORM_NAMES,
};
pub use values::{
    GoDuration, HeaderMatcher, ListenAddr, NonNegativeDuration, PositiveDuration, ValueError,
};

use decode::{Cx, Decode, Failed, Res};
use positions::Positions;
use yaml::{Node, Pos};

/// A whole, valid configuration. Field names are the YAML keys.
#[derive(Debug, Clone)]
pub struct Config {
    /// Built-in DNS server; `None` when the block is absent.
    pub dns: Option<DnsConfig>,
    /// Listeners and upstream limits.
    pub proxy: ProxyConfig,
    /// MITM or SNI passthrough.
    pub tls: TlsConfig,
    /// The pipeline, in order.
    pub transforms: Vec<TransformConfig>,
    /// MCP tool policies; `None` when absent.
    pub mcp: Option<McpConfig>,
    /// Management API; `None` (disabled) when absent.
    pub management: Option<ManagementConfig>,
    /// Metrics endpoint (always on).
    pub metrics: MetricsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Transparent interception (ours); `None` when absent.
    pub intercept: Option<InterceptConfig>,
    /// The findings about this config ([`lint`]), placed at load.
    pub(crate) findings: Vec<Lint>,
    /// Where the fields [`check_references`] may name were set. Only those:
    /// the document itself is dropped once the config is decoded.
    pub(crate) positions: Positions,
}

impl Config {
    /// Where the field at `path` was set, for a field [`check_references`]
    /// names (`tls.ca_cert`, `transforms[1].config.secrets[0].source.var`):
    /// `proxy.yaml:14:5`, or the `IRON_*` variable that set it. A field left at
    /// its default is placed at the nearest enclosing field the file has.
    /// Positions are looked up at load, for those fields only; any other path
    /// gets the nearest enclosing one of them, else the file alone.
    pub fn locate(&self, path: &str) -> Location {
        self.positions.locate(path)
    }
}

const TOP_FIELDS: [&str; 9] = [
    "dns",
    "proxy",
    "tls",
    "transforms",
    "mcp",
    "management",
    "metrics",
    "log",
    "intercept",
];

/// Reads and parses `path`, applying `IRON_*` overrides from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: None,
            column: None,
            path: String::new(),
            message: format!("cannot read config: {e}"),
        }])
    })?;
    parse_with_process_env(&text, &file)
}

/// [`parse`] with the `IRON_*` overrides of the process environment. One
/// whose value is not UTF-8 is an error naming the variable (not the
/// value), as a bad value is: read as unset, it would be ignored without a
/// word.
pub fn parse_with_process_env(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let not_utf8 = env::not_utf8(&|var| std::env::var_os(var));
    let parsed = parse(text, file, &|var| std::env::var(var).ok());
    if not_utf8.is_empty() {
        return parsed;
    }
    let mut errors = parsed.err().map(|e| e.0).unwrap_or_default();
    errors.extend(not_utf8);
    Err(ConfigErrors(errors))
}

/// Parses config `text` (named `file` in errors), applying `IRON_*` overrides looked up with `env`.
pub fn parse(
    text: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let parsed = yaml::parse(text).map_err(|e| {
        let (line, column) = match e.pos {
            Pos::File { line, column } => (Some(line), Some(column)),
            Pos::Env(_) => (None, None),
        };
        ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line,
            column,
            path: String::new(),
            message: format!("invalid YAML: {}", e.message),
        }])
    })?;
    // An empty file is a mistake (a truncated write, an unmounted ConfigMap), not
    // "all defaults": it would otherwise fail later as a missing `tls.ca_cert`.
    let Some(mut root) = parsed else {
        return Err(ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line: None,
            column: None,
            path: String::new(),
            message: "config file is empty".into(),
        }]));
    };
    let mut cx = Cx::new(file);
    if let yaml::Kind::Seq(_) = root.kind {
        // A file that is only a list of transforms (as the spec's transform
        // examples are written) is the `transforms:` of a config with every
        // other key at its default.
        let pos = root.pos;
        cx.warn(
            pos,
            "the file is a list: read as the transforms: of a config with every other key at \
             its default",
        );
        root = yaml::Node {
            pos,
            kind: yaml::Kind::Map(vec![(yaml::Node::plain("transforms", pos), root)]),
        };
    }
    env::apply(&mut root, env, &mut cx);
    let config = decode_config(root, &mut cx);
    cx.explain_misplaced();
    let mut errors = cx.errors;
    // File errors in line order, environment errors after them (stable otherwise).
    errors.sort_by_key(|e| (e.line.is_none(), e.line, e.column));
    match config {
        Ok(config) if errors.is_empty() => Ok(config),
        _ if errors.is_empty() => Err(ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line: None,
            column: None,
            path: String::new(),
            message: "invalid config".into(),
        }])),
        _ => Err(ConfigErrors(bounded(errors, file))),
    }
}

/// At most this many errors are reported; the rest are counted.
const MAX_ERRORS: usize = 50;
/// A message is cut to this many characters (it may echo a value as long
/// as the file: a pasted blob would otherwise fill the log, the reload
/// answer and `/v1/status`).
const MAX_MESSAGE_CHARS: usize = 300;

/// The first [`MAX_ERRORS`] errors, each message cut to
/// [`MAX_MESSAGE_CHARS`], and a last line counting the rest.
fn bounded(mut errors: Vec<ConfigError>, file: &str) -> Vec<ConfigError> {
    let more = errors.len().saturating_sub(MAX_ERRORS);
    errors.truncate(MAX_ERRORS);
    for e in &mut errors {
        let n = e.message.chars().count();
        if n > MAX_MESSAGE_CHARS {
            let cut: String = e.message.chars().take(MAX_MESSAGE_CHARS).collect();
            e.message = format!(
                "{cut}… ({} more characters not shown)",
                n - MAX_MESSAGE_CHARS
            );
        }
    }
    if more > 0 {
        errors.push(ConfigError {
            file: file.to_string(),
            line: None,
            column: None,
            path: String::new(),
            message: format!("… and {more} more errors, not shown (fix these first)"),
        });
    }
    errors
}

/// Decodes a section that always exists: an absent block decodes as an empty one.
fn section<T: Decode>(root: &Node, cx: &mut Cx, key: &str) -> Res<T> {
    let empty = Node::empty_map(root.pos);
    let node = root.get(key).filter(|n| !n.is_null()).unwrap_or(&empty);
    cx.key(key, |cx| T::decode(node, cx))
}

fn decode_config(root: Node, cx: &mut Cx) -> Res<Config> {
    let m = cx.map(&root, &TOP_FIELDS)?;
    // The sections a file may leave out, so that a key of one is said to
    // belong there when it is found elsewhere (the others are always decoded).
    cx.known_section("dns", &dns::DNS_FIELDS);
    cx.known_section("mcp", &mcp::MCP_FIELDS);
    cx.known_section("management", &sections::MANAGEMENT_FIELDS);
    cx.known_section("intercept", &intercept::INTERCEPT_FIELDS);
    let dns = m.opt::<DnsConfig>(cx, "dns");
    let proxy = section::<ProxyConfig>(&root, cx, "proxy");
    let tls = section::<TlsConfig>(&root, cx, "tls");
    let transforms = m.or_default::<Vec<TransformConfig>>(cx, "transforms");
    let mcp = m.opt::<McpConfig>(cx, "mcp");
    let management = m.opt::<ManagementConfig>(cx, "management");
    let metrics = section::<MetricsConfig>(&root, cx, "metrics");
    let log = section::<LogConfig>(&root, cx, "log");
    let intercept = m.opt::<InterceptConfig>(cx, "intercept");
    let judges = unique_judge_names(&root, cx);
    judges?;
    let (dns, intercept) = (dns?, intercept?);
    intercept_dns(dns.is_some(), intercept.as_ref(), &root, cx)?;
    let mut config = Config {
        dns,
        proxy: proxy?,
        tls: tls?,
        transforms: transforms?,
        mcp: mcp?,
        management: management?,
        metrics: metrics?,
        log: log?,
        intercept,
        findings: Vec::new(),
        positions: Positions::default(),
    };
    conflicts::check(&config, &root, cx)?;
    place(&mut config, cx, &root);
    // `root` is dropped here: the config keeps places, not the document.
    Ok(config)
}

/// Finds the lint findings and looks up in the document where their fields,
/// and those [`check_references`] may name, were set. The findings the
/// decoder recorded about single values come first, in file order; those
/// about proxy tokens that meet ([`proxy_values`]) last.
fn place(config: &mut Config, cx: &mut Cx, root: &Node) {
    let file = cx.file();
    let unplaced = lint::find(config);
    let paths: Vec<String> = unplaced.iter().map(|f| f.path.clone()).collect();
    let locations = positions::locate_all(file, root, &paths);
    let placed = unplaced
        .into_iter()
        .zip(locations)
        .map(|(f, location)| f.at(location));
    let mut paths = refs::reference_paths(config);
    paths.extend(refs::build_paths(config));
    let positions = Positions::new(file, root, paths);
    let tokens = proxy_values::check(config, root, file);
    config.findings = std::mem::take(&mut cx.findings);
    config.findings.extend(placed);
    config.findings.extend(tokens);
    config.positions = positions;
}

/// Judge names must be unique. Checked on the document, so a duplicate is
/// reported even when other entries have errors.
fn unique_judge_names(root: &Node, cx: &mut Cx) -> Res<()> {
    let Some(yaml::Kind::Seq(items)) = root.get("transforms").map(|n| &n.kind) else {
        return Ok(());
    };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut ok = true;
    for (i, entry) in items.iter().enumerate() {
        if entry.get("name").and_then(Node::scalar) != Some("judge") {
            continue;
        }
        let Some(name_node) = entry.get("config").and_then(|c| c.get("name")) else {
            continue;
        };
        let Some(name) = name_node.scalar() else {
            continue;
        };
        match seen.get(name) {
            Some(first) => {
                let msg = format!("duplicate judge name '{name}' (also used by transforms[{first}]); judge names must be unique");
                cx.error_at_path(name_node.pos, format!("transforms[{i}].config.name"), msg);
                ok = false;
            }
            None => {
                seen.insert(name, i);
            }
        }
    }
    if ok {
        Ok(())
    } else {
        Err(Failed)
    }
}

/// `intercept.dns: true` needs the DNS server.
fn intercept_dns(
    dns: bool,
    intercept: Option<&InterceptConfig>,
    root: &Node,
    cx: &mut Cx,
) -> Res<()> {
    match intercept {
        Some(ic) if ic.dns == Some(true) && !dns => {
            let pos = root
                .get("intercept")
                .and_then(|n| n.get("dns"))
                .map_or(root.pos, |n| n.pos);
            let msg = "DNS redirection needs a dns block (the proxy's DNS server)";
            Err(cx.error_at_path(pos, "intercept.dns".into(), msg))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
