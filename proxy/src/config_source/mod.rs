//! Where the config comes from: a local file, or an S3 object
//! (`-config s3://bucket/key`, fetched with a signed `GetObject`).
//!
//! Validation, startup and every reload read the config through a
//! [`ConfigSource`], so a reload re-fetches the object. Errors, and the
//! locations of config errors, are named by the source as given on the
//! command line: `proxy.yaml:12:3: ...` or `s3://bucket/key:12:3: ...`.

mod encoding;
pub mod file;
pub mod s3;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{self, Config, ConfigError, ConfigErrors};
use crate::secrets::aws::{AwsOverrides, AwsShared};
use crate::secrets::http::HttpClient;
use crate::secrets::EnvLookup;

pub use s3::{S3Error, S3Object};

/// A config's origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A local file.
    File(PathBuf),
    /// An S3 object.
    S3(S3Object),
}

/// Why a config could not be read (not why it is invalid).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file could not be read.
    #[error("cannot read config")]
    File(#[source] std::io::Error),
    /// The S3 object could not be fetched.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// The file is larger than [`MAX_CONFIG_BYTES`] (in MiB).
    #[error("cannot read config: the file is larger than {0} MiB; is it the config?")]
    TooLarge(usize),
    /// The path (or the end of the links it is) is not a regular file: a
    /// FIFO, a device, a socket, a directory.
    #[error("cannot read config: it is {}", not_regular(.kind, .target.as_deref()))]
    NotRegular {
        /// What it is: "a FIFO (named pipe)", "a directory".
        kind: &'static str,
        /// Where the symbolic link the path is leads, when it is one.
        target: Option<PathBuf>,
    },
    /// Reading the file on a reload took longer than [`READ_TIMEOUT`] (a
    /// hung network file system): the reload gives up rather than waiting.
    #[error("cannot read config: reading the file took longer than {} s", .0.as_secs())]
    TimedOut(Duration),
    /// The runtime for the fetch could not start.
    #[error("starting the runtime for the S3 fetch")]
    Runtime(#[source] std::io::Error),
}

impl ConfigSource {
    /// The source the `-config` argument names: `s3://bucket/key`, else a path.
    pub fn parse(arg: &Path) -> Result<Self, S3Error> {
        match arg.to_str() {
            Some(s) if s.starts_with(s3::SCHEME) => S3Object::parse(s).map(ConfigSource::S3),
            _ => Ok(ConfigSource::File(arg.to_path_buf())),
        }
    }

    /// Reads the whole config. S3 fetches use `aws` (credentials, region,
    /// endpoint and the backend HTTP client).
    pub async fn read(&self, aws: &AwsShared) -> Result<Vec<u8>, SourceError> {
        match self {
            ConfigSource::File(path) => {
                let path = path.clone();
                let read = tokio::task::spawn_blocking(move || file::read(&path));
                // A read that never returns (a hung NFS server) must not
                // hold the reload, and every reload queued behind it, forever:
                // its thread is left to finish on its own.
                match tokio::time::timeout(READ_TIMEOUT, read).await {
                    Ok(joined) => {
                        joined.map_err(|e| SourceError::File(std::io::Error::other(e)))?
                    }
                    Err(_) => Err(SourceError::TimedOut(READ_TIMEOUT)),
                }
            }
            ConfigSource::S3(obj) => Ok(obj.fetch(aws).await?),
        }
    }

    /// [`read`](Self::read) outside a runtime (startup, `validate`): a
    /// file is read directly; an S3 object is fetched on a short-lived
    /// runtime with the default AWS chain and a client resolving with the OS
    /// configuration (the config, and so `dns`, is not known yet).
    pub fn read_blocking(&self) -> Result<Vec<u8>, SourceError> {
        match self {
            ConfigSource::File(path) => file::read(path),
            ConfigSource::S3(obj) => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(SourceError::Runtime)?;
                rt.block_on(async {
                    let aws = AwsShared::new(
                        AwsOverrides::default(),
                        HttpClient::new(),
                        EnvLookup::Process,
                    );
                    Ok(obj.fetch(&aws).await?)
                })
            }
        }
    }

    /// Reads and parses the config, applying `IRON_*` overrides from the
    /// process environment. Returns the bytes too (their hash is the
    /// management API's `config_hash`).
    pub fn load_blocking(&self) -> Result<(Config, Vec<u8>), ConfigErrors> {
        let name = self.to_string();
        let bytes = self.read_blocking().map_err(|e| {
            let chain = crate::error_chain(&e);
            // S3 errors name the object already; the error names it once.
            let prefix = format!("{name}: ");
            one_error(&name, chain.strip_prefix(&prefix).unwrap_or(&chain).into())
        })?;
        let cfg = parse(&bytes, &name)?;
        Ok((cfg, bytes))
    }
}

/// "a FIFO (named pipe), not a regular file; ...", through the link when
/// the path is one.
fn not_regular(kind: &str, target: Option<&Path>) -> String {
    let what = match target {
        Some(t) => format!("a symbolic link to {}, {kind}", t.display()),
        None => kind.to_string(),
    };
    let why = if kind.contains("FIFO") {
        "; the config is read again on every reload, so it must be a file (not a pipe, \
         /dev/stdin or a process substitution)"
    } else {
        ""
    };
    format!("{what}, not a regular file{why}")
}

/// Parses config `bytes` named `name` in errors, with the process environment.
pub fn parse(bytes: &[u8], name: &str) -> Result<Config, ConfigErrors> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let why = encoding::not_utf8(bytes, &e);
        ConfigErrors(vec![ConfigError {
            file: name.to_string(),
            line: why.at.map(|(line, _)| line),
            column: why.at.map(|(_, column)| column),
            path: String::new(),
            message: why.message,
        }])
    })?;
    config::parse_with_process_env(text, name)
}

fn one_error(name: &str, message: String) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        file: name.to_string(),
        line: None,
        column: None,
        path: String::new(),
        message,
    }])
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(path) => write!(f, "{}", path.display()),
            ConfigSource::S3(obj) => write!(f, "{obj}"),
        }
    }
}

/// How long one S3 fetch may take, credentials included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a reload waits for the config file to be read.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest config read, from a file or from S3: larger than any real
/// config (Kubernetes caps a ConfigMap at 1 MiB), small enough that a log
/// file or a device given by mistake costs little.
pub const MAX_CONFIG_BYTES: usize = 16 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_paths_and_s3_urls_become_objects() {
        assert_eq!(
            ConfigSource::parse(Path::new("/etc/iron/proxy.yaml")).unwrap(),
            ConfigSource::File("/etc/iron/proxy.yaml".into())
        );
        // A relative path that merely contains the scheme is still a path.
        assert!(matches!(
            ConfigSource::parse(Path::new("./s3://x/y")).unwrap(),
            ConfigSource::File(_)
        ));
        let src = ConfigSource::parse(Path::new("s3://my-bucket/iron/proxy.yaml")).unwrap();
        assert_eq!(src.to_string(), "s3://my-bucket/iron/proxy.yaml");
        assert!(ConfigSource::parse(Path::new("s3://my-bucket")).is_err());
    }

    #[test]
    fn config_errors_name_the_source() {
        let err = parse(
            b"tls: {mode: sni-only}\nproxy:\n  bogus: 1\n",
            "s3://b-1/k.yaml",
        )
        .unwrap_err();
        let first = err.0[0].to_string();
        assert!(
            first.starts_with("s3://b-1/k.yaml:3:3: proxy: unknown field 'bogus'"),
            "{first}"
        );
        let err = parse(b"a: \xff", "s3://b-1/k.yaml").unwrap_err();
        assert!(
            err.0[0]
                .to_string()
                .starts_with("s3://b-1/k.yaml:1:4: cannot read config: the config is not UTF-8: "),
            "{err}"
        );
    }

    /// A file over the limit is refused by its size, `-config /dev/zero`
    /// (endless) by its type: neither is read to the end.
    #[test]
    fn a_config_larger_than_the_limit_or_endless_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("big.yaml");
        std::fs::write(&path, vec![b'#'; MAX_CONFIG_BYTES + 1]).expect("write");
        let err = ConfigSource::File(path).load_blocking().unwrap_err().0[0].to_string();
        assert!(
            err.ends_with("cannot read config: the file is larger than 16 MiB; is it the config?"),
            "{err}"
        );
        let err = ConfigSource::File("/dev/zero".into())
            .load_blocking()
            .unwrap_err()
            .0[0]
            .to_string();
        assert_eq!(
            err,
            "/dev/zero: cannot read config: it is a character device, not a regular file"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let src = ConfigSource::File("/nonexistent/iron-proxy.yaml".into());
        let err = src.load_blocking().unwrap_err().0[0].to_string();
        assert!(
            err.starts_with("/nonexistent/iron-proxy.yaml: cannot read config: "),
            "{err}"
        );
    }
}
