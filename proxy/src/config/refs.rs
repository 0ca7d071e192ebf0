//! Files and environment variables a valid config points at but that are not
//! there: facts about this machine, not about the config text. Those the
//! proxy cannot start without ([`Reference::stops_start`]) are errors in
//! `validate`; the others (a secret's variable, read when a request needs
//! it) are warnings, errors under `-strict`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::credentials::{AwsCredentials, GcpCredentials};
use super::judge::JudgeProvider;
use super::oauth::OAuthGrant;
use super::sections::TlsConfig;
use super::sources::SecretSourceConfig;
use super::transforms::TransformConfig;
use super::Config;

/// A missing file or unset variable, with the field that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Field path, e.g. `transforms[1].config.secrets[0].source.var`.
    pub path: String,
    /// What is missing.
    pub kind: ReferenceKind,
    /// Whether the proxy refuses to start without it (the MITM CA, the
    /// management key, a judge's key, a gRPC TLS file, an intercepted user),
    /// as opposed to what it starts without and fails closed on when a
    /// request needs it (a secret source's variable, a `gcp_auth` keyfile,
    /// a cgroup made later).
    pub stops_start: bool,
}

/// What is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceKind {
    /// A file that does not exist.
    MissingFile(PathBuf),
    /// An environment variable that is not set (or empty).
    UnsetEnv(String),
    /// A field the proxy needs to start that the config leaves unset.
    UnsetField(super::CaUnset),
    /// An `intercept.uids` user name this machine does not know.
    UnknownUser(String),
    /// An `intercept.cgroups` directory that does not exist (yet), resolved
    /// under the cgroup v2 mount.
    MissingCgroup(PathBuf),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ReferenceKind::MissingFile(p) => {
                write!(f, "{}: file {} does not exist", self.path, p.display())
            }
            ReferenceKind::UnsetEnv(v) => {
                write!(f, "{}: environment variable {v} is not set", self.path)
            }
            // The message names the field.
            ReferenceKind::UnsetField(u) => write!(f, "{u}"),
            ReferenceKind::UnknownUser(n) => write!(
                f,
                "{}: user {n} does not exist on this machine (interception would not start)",
                self.path
            ),
            ReferenceKind::MissingCgroup(p) => write!(
                f,
                "{}: cgroup {} does not exist (yet) on this machine (interception would not \
                 start until it does)",
                self.path,
                p.display()
            ),
        }
    }
}

/// The walk over the fields that name files and variables, keeping those
/// the checks say are missing.
struct Walk<'e> {
    missing_var: &'e dyn Fn(&str) -> bool,
    missing_file: &'e dyn Fn(&Path) -> bool,
    machine: &'e Machine<'e>,
    out: Vec<Reference>,
}

/// What the machine knows of interception's users and cgroups.
struct Machine<'e> {
    /// True for a user name it does not know.
    unknown_user: &'e dyn Fn(&str) -> bool,
    /// The resolved directory of a configured cgroup path that does not exist.
    missing_cgroup: &'e dyn Fn(&Path) -> Option<PathBuf>,
}

impl Walk<'_> {
    fn file(&mut self, path: String, file: &Path) {
        self.file_of(path, file, false);
    }

    /// A file the proxy reads at start and refuses to start without.
    fn file_to_start(&mut self, path: String, file: &Path) {
        self.file_of(path, file, true);
    }

    fn file_of(&mut self, path: String, file: &Path, stops_start: bool) {
        if (self.missing_file)(file) {
            self.out.push(Reference {
                path,
                kind: ReferenceKind::MissingFile(file.to_path_buf()),
                stops_start,
            });
        }
    }

    /// A variable the proxy reads at start and refuses to start without
    /// (secret sources' variables are read when a request needs them: see
    /// [`Walk::source`]).
    fn var_to_start(&mut self, path: String, var: &str) {
        if (self.missing_var)(var) {
            self.out.push(Reference {
                path,
                kind: ReferenceKind::UnsetEnv(var.to_string()),
                stops_start: true,
            });
        }
    }

    fn source_var(&mut self, path: String, var: &str) {
        if (self.missing_var)(var) {
            self.out.push(Reference {
                path,
                kind: ReferenceKind::UnsetEnv(var.to_string()),
                stops_start: false,
            });
        }
    }

    fn source(&mut self, path: String, src: &SecretSourceConfig) {
        for (field, var) in src.env_vars() {
            self.source_var(format!("{path}.{field}"), var);
        }
    }

    fn intercept(&mut self, ic: &super::InterceptConfig) {
        for (i, u) in ic.uids.iter().enumerate() {
            if let super::UidSpec::Name(name) = u {
                if (self.machine.unknown_user)(name) {
                    self.out.push(Reference {
                        path: format!("intercept.uids[{i}]"),
                        kind: ReferenceKind::UnknownUser(name.clone()),
                        // `app::intercept::settings` resolves each name.
                        stops_start: true,
                    });
                }
            }
        }
        for (i, c) in ic.cgroups.iter().enumerate() {
            if let Some(dir) = (self.machine.missing_cgroup)(c) {
                self.out.push(Reference {
                    path: format!("intercept.cgroups[{i}]"),
                    kind: ReferenceKind::MissingCgroup(dir),
                    // Linked once it is made (`app::cgroup_watch`).
                    stops_start: false,
                });
            }
        }
    }

    fn opt_source(&mut self, path: String, src: Option<&SecretSourceConfig>) {
        if let Some(s) = src {
            self.source(path, s);
        }
    }
}

/// Lists referenced files that don't exist and environment variables that aren't set.
pub fn check_references(cfg: &Config, env: &dyn Fn(&str) -> Option<String>) -> Vec<Reference> {
    // No cgroup v2 mount here: `validate` may run where the proxy does not.
    let mount = crate::intercept::cgroup2_mount().ok();
    let machine = Machine {
        unknown_user: &|name| matches!(nix::unistd::User::from_name(name), Ok(None)),
        missing_cgroup: &|path| {
            let dir = crate::intercept::resolve_cgroup(mount.as_deref()?, path).ok()?;
            (!dir.is_dir()).then_some(dir)
        },
    };
    walk(
        cfg,
        &|var| env(var).is_none_or(|v| v.is_empty()),
        &|file| !file.exists(),
        &machine,
    )
}

/// The variables and files of [`check_references`] that the proxy reads
/// its secrets and keys from (users and cgroups left out: `intercept` is
/// fixed at startup, and a cgroup may come later). A reload whose config
/// names one that is missing is refused: it would replace a working
/// credential with one that fails every request it should serve. Startup
/// logs them as warnings (it has no working policy to keep; the transforms
/// fail closed, `secret_unavailable`).
pub fn missing_inputs(cfg: &Config, env: &dyn Fn(&str) -> Option<String>) -> Vec<Reference> {
    check_references(cfg, env)
        .into_iter()
        .filter(|r| {
            matches!(
                r.kind,
                ReferenceKind::UnsetEnv(_) | ReferenceKind::MissingFile(_)
            )
        })
        .collect()
}

/// The path of every field [`check_references`] may name, whatever the
/// machine holds: the config keeps where these were set (see `positions`).
pub(crate) fn reference_paths(cfg: &Config) -> Vec<String> {
    let machine = Machine {
        unknown_user: &|_| true,
        missing_cgroup: &|p| Some(p.to_path_buf()),
    };
    walk(cfg, &|_| true, &|_| true, &machine)
        .into_iter()
        .map(|r| r.path)
        .collect()
}

/// The fields a transform's build checks that are not references (a gRPC
/// target, its TLS block), so that `validate` places a build error at its
/// field like any other; and every listener start-up and a reload bind
/// (`app::listeners`, DNS, interception, management), so that an address in
/// use is reported at its line.
pub(crate) fn build_paths(cfg: &Config) -> Vec<String> {
    let mut out: Vec<String> = [
        "proxy.http_listen",
        "proxy.https_listen",
        "proxy.tunnel_listen",
        "metrics.listen",
        "intercept.listen",
        "dns.listen",
        "management.listen",
    ]
    .map(String::from)
    .to_vec();
    for (i, t) in cfg.transforms.iter().enumerate() {
        if let TransformConfig::Grpc(_) = t {
            out.push(format!("transforms[{i}].config.target"));
            out.push(format!("transforms[{i}].config.tls"));
        }
    }
    out
}

/// The name of every environment variable the config names (secret
/// sources' `var`, `api_key_env`, ...), whether it is set or not.
pub(crate) fn variable_names(cfg: &Config) -> Vec<String> {
    let machine = Machine {
        unknown_user: &|_| false,
        missing_cgroup: &|_| None,
    };
    walk(cfg, &|_| true, &|_| false, &machine)
        .into_iter()
        .filter_map(|r| match r.kind {
            ReferenceKind::UnsetEnv(var) => Some(var),
            _ => None,
        })
        .collect()
}

fn walk(
    cfg: &Config,
    missing_var: &dyn Fn(&str) -> bool,
    missing_file: &dyn Fn(&Path) -> bool,
    machine: &Machine<'_>,
) -> Vec<Reference> {
    let mut w = Walk {
        missing_var,
        missing_file,
        machine,
        out: Vec::new(),
    };
    if let Some(ic) = &cfg.intercept {
        w.intercept(ic);
    }
    if let TlsConfig::Mitm(m) = &cfg.tls {
        for (field, file) in [("tls.ca_cert", &m.ca_cert), ("tls.ca_key", &m.ca_key)] {
            if let Some(file) = file {
                w.file_to_start(field.into(), file);
            }
        }
        for u in m.unset() {
            w.out.push(Reference {
                path: format!("tls.{}", u.field),
                kind: ReferenceKind::UnsetField(u),
                stops_start: true,
            });
        }
    }
    if let Some(mg) = &cfg.management {
        w.var_to_start("management.api_key_env".into(), &mg.api_key_env);
    }
    for (i, t) in cfg.transforms.iter().enumerate() {
        let p = format!("transforms[{i}].config");
        match t {
            TransformConfig::Secrets(s) => {
                for (j, e) in s.secrets.iter().enumerate() {
                    w.source(format!("{p}.secrets[{j}].source"), &e.source);
                }
            }
            TransformConfig::GcpAuth(g) => match &g.credentials {
                GcpCredentials::KeyfilePath(f) => w.file(format!("{p}.keyfile_path"), f),
                GcpCredentials::Keyfile(s) => w.source(format!("{p}.keyfile"), s),
                GcpCredentials::WorkloadIdentity => {}
            },
            TransformConfig::OauthToken(o) => {
                for (j, tok) in o.tokens.iter().enumerate() {
                    let q = format!("{p}.tokens[{j}]");
                    oauth_grant(&mut w, &q, &tok.grant);
                    for (name, src) in &tok.token_endpoint_headers {
                        w.source(format!("{q}.token_endpoint_headers.{name}"), src);
                    }
                }
            }
            TransformConfig::AwsAuth(a) => {
                if let AwsCredentials::Static {
                    access_key_id,
                    secret_access_key,
                    session_token,
                } = &a.credentials
                {
                    w.source(format!("{p}.access_key_id"), access_key_id);
                    w.source(format!("{p}.secret_access_key"), secret_access_key);
                    w.opt_source(format!("{p}.session_token"), session_token.as_ref());
                }
            }
            TransformConfig::HmacSign(h) => {
                for (name, src) in &h.credentials {
                    w.source(format!("{p}.credentials.{name}"), src);
                }
            }
            TransformConfig::Grpc(g) => {
                if let Some(tls) = &g.tls {
                    if let Some(ca) = &tls.ca_cert {
                        w.file_to_start(format!("{p}.tls.ca_cert"), ca);
                    }
                    if let Some(c) = &tls.client {
                        w.file_to_start(format!("{p}.tls.cert"), &c.cert);
                        w.file_to_start(format!("{p}.tls.key"), &c.key);
                    }
                }
            }
            TransformConfig::Judge(j) => {
                let (JudgeProvider::Anthropic(pc) | JudgeProvider::OpenAi(pc)) = &j.provider;
                w.var_to_start(format!("{p}.provider.api_key_env"), &pc.api_key_env);
            }
            TransformConfig::Allowlist(_)
            | TransformConfig::BodyCapture(_)
            | TransformConfig::Annotate(_)
            | TransformConfig::HeaderAllowlist(_) => {}
        }
    }
    w.out
}

fn oauth_grant(w: &mut Walk<'_>, q: &str, grant: &OAuthGrant) {
    match grant {
        OAuthGrant::RefreshToken {
            refresh_token,
            client_id,
            client_secret,
        } => {
            w.source(format!("{q}.refresh_token"), refresh_token);
            w.source(format!("{q}.client_id"), client_id);
            w.opt_source(format!("{q}.client_secret"), client_secret.as_ref());
        }
        OAuthGrant::ClientCredentials {
            client_id,
            client_secret,
        } => {
            w.source(format!("{q}.client_id"), client_id);
            w.source(format!("{q}.client_secret"), client_secret);
        }
        OAuthGrant::Password {
            username,
            password,
            client_id,
            client_secret,
        } => {
            w.source(format!("{q}.username"), username);
            w.source(format!("{q}.password"), password);
            w.source(format!("{q}.client_id"), client_id);
            w.opt_source(format!("{q}.client_secret"), client_secret.as_ref());
        }
        OAuthGrant::JwtBearer {
            issuer,
            subject,
            private_key,
            private_key_id,
            ..
        } => {
            w.source(format!("{q}.issuer"), issuer);
            w.source(format!("{q}.subject"), subject);
            w.source(format!("{q}.private_key"), private_key);
            w.opt_source(format!("{q}.private_key_id"), private_key_id.as_ref());
        }
    }
}
