//! Every YAML block extracted from the spec (`shared/spec/configs/`) must parse.
//!
//! Files are of three kinds (see configs/README.md): complete configs, top-level
//! fragments, and transform list items. Each is merged onto [`BASE`] (which
//! supplies the CA paths MITM mode needs): a mapping is deep-merged, a list is
//! the `transforms:` list. The docs elide some bodies with `...` (`config: ...`,
//! `config: {...}`, `replace: ...`); those are replaced with a minimal valid body
//! for that transform, and reported in the test output.

use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use super::{ok, BASE};
use crate::config::TlsConfig;

/// `shared/spec/configs`, normally `../../shared` from the crate (beside the
/// repository); the nearest ancestor that has it, so worktrees work too.
fn spec_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|a| a.join("shared/spec/configs"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "shared/spec/configs not found above {}: the spec examples are required",
                manifest.display()
            )
        })
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("spec configs missing at {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

/// A minimal valid `config:` per transform, for bodies the docs elide.
fn minimal_config(name: &str) -> Value {
    let text = match name {
        "judge" => "{name: elided, prompt: elided, rules: [{host: example.com}], provider: {type: anthropic, model: m, api_key_env: K}}",
        "grpc" => "{name: elided, target: \"localhost:9500\"}",
        _ => "{}",
    };
    serde_yaml_ng::from_str(text).expect("valid minimal config")
}

fn is_elided(v: &Value) -> bool {
    match v {
        Value::String(s) => s == "...",
        Value::Mapping(m) => m.len() == 1 && m.get("...").is_some_and(Value::is_null),
        _ => false,
    }
}

/// Replaces elided bodies; returns how many were replaced.
fn fill_elisions(v: &mut Value) -> usize {
    let mut n = 0;
    match v {
        Value::Mapping(m) => {
            let name = m.get("name").and_then(Value::as_str).map(str::to_string);
            for (k, child) in m.iter_mut() {
                if is_elided(child) {
                    *child = match (k.as_str(), &name) {
                        (Some("config"), Some(name)) => minimal_config(name),
                        (Some("replace"), _) => {
                            serde_yaml_ng::from_str("{proxy_value: elided}").expect("valid")
                        }
                        _ => continue,
                    };
                    n += 1;
                } else {
                    n += fill_elisions(child);
                }
            }
        }
        Value::Sequence(items) => n += items.iter_mut().map(fill_elisions).sum::<usize>(),
        _ => {}
    }
    n
}

fn merge(base: &mut Mapping, over: Mapping) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Mapping(b)), Value::Mapping(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The config a spec file stands for, as YAML text.
fn complete(text: &str) -> (String, usize) {
    let mut doc: Value = serde_yaml_ng::from_str(text).expect("spec file is valid YAML");
    let elided = fill_elisions(&mut doc);
    let Value::Mapping(mut base) = serde_yaml_ng::from_str(BASE).expect("base") else {
        panic!("base is a mapping")
    };
    match doc {
        Value::Mapping(m) => merge(&mut base, m),
        Value::Sequence(items) => {
            base.insert("transforms".into(), Value::Sequence(items));
        }
        other => panic!("unexpected spec file shape: {other:?}"),
    }
    (serde_yaml_ng::to_string(&base).expect("serializes"), elided)
}

#[test]
fn every_spec_config_parses() {
    let dir = spec_dir();
    let mut files = yaml_files(&dir);
    files.extend(yaml_files(&dir.join("embedded")));
    assert!(
        files.len() >= 50,
        "expected the spec's config files, found {}",
        files.len()
    );
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        let (config, elided) = complete(&text);
        if elided > 0 {
            println!("{}: {elided} elided body(ies) filled in", file.display());
        }
        let cfg = match super::parse(&config, &file.display().to_string(), &|_| None) {
            Ok(cfg) => cfg,
            Err(e) => panic!(
                "{} does not parse:\n{e}\n--- as merged:\n{config}",
                file.display()
            ),
        };
        // The spec's examples follow its own ordering advice: none puts a capture
        // after a transform that writes credentials where it captures, and none
        // exposes the management API.
        let findings = super::super::lint(&cfg);
        for f in &findings {
            println!("{}: warning: {f}", file.display());
        }
        let captures: Vec<_> = findings
            .iter()
            .filter(|f| {
                f.message.starts_with("annotate ") || f.message.starts_with("body_capture ")
            })
            .collect();
        assert!(captures.is_empty(), "{}: {captures:?}", file.display());
        // Its management API examples listen on loopback, as it advises.
        let exposed: Vec<_> = findings
            .iter()
            .filter(|f| f.path == "management.listen")
            .collect();
        assert!(exposed.is_empty(), "{}: {exposed:?}", file.display());
    }
}

/// What `iron-proxy validate` reads: every spec file as written, with no
/// merging, parses (a file that is a list of transforms is read as
/// `transforms:`; an unset CA is a warning). Only the three whose bodies the
/// docs elide with `...` are not configs. Complete configs that carry their
/// own CA have nothing left to warn about it.
#[test]
fn spec_configs_parse_as_written() {
    let dir = spec_dir();
    let mut files = yaml_files(&dir);
    files.extend(yaml_files(&dir.join("embedded")));
    let mut elided = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        let (_, n) = complete(&text);
        let name = file.display().to_string();
        match super::parse(&text, &name, &|_| None) {
            Ok(_) if n > 0 => panic!("{name} elides bodies but parses as written"),
            Ok(_) => {}
            Err(_) if n > 0 => elided.push(file.file_name().expect("name").to_owned()),
            Err(e) => panic!("{name} does not parse as written:\n{e}"),
        }
    }
    assert_eq!(elided.len(), 3, "{elided:?}");
    for name in [
        "configuration-01-full-example.yaml",
        "quickstart-02-proxy-config.yaml",
        "embedded/deploy-on-kubernetes-configmap-proxy-yaml.yaml",
    ] {
        let text = std::fs::read_to_string(spec_dir().join(name)).expect("readable");
        let cfg = ok(&text);
        assert!(!cfg.transforms.is_empty(), "{name}");
        let TlsConfig::Mitm(m) = &cfg.tls else {
            panic!("{name}: mitm")
        };
        assert!(m.ca_paths().is_ok(), "{name}");
    }
}

/// The spec's configs build into a running pipeline, not only parse, unless
/// they use a transform this build does not run yet (`grpc`); the credential
/// transforms' examples (`hmac_sign`, `aws_auth`, `oauth_token`, `gcp_auth`),
/// the `judge` and the `mcp` examples are among those that must build.
#[tokio::test]
async fn spec_configs_build_their_pipelines() {
    let dir = spec_dir();
    let mut files = yaml_files(&dir);
    files.extend(yaml_files(&dir.join("embedded")));
    let (mut built, mut signing, mut mcp, mut judges, mut grpc_tls) = (0, 0, 0, 0, 0);
    let pem = TestPem::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        let (config, _) = complete(&text);
        let mut cfg = super::parse(&config, &file.display().to_string(), &|_| None)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // The grpc examples name TLS files under /etc/iron-proxy: point them at real ones.
        for t in &mut cfg.transforms {
            if let super::TransformConfig::Grpc(g) = t {
                if let Some(tls) = &mut g.tls {
                    tls.ca_cert = tls.ca_cert.as_ref().map(|_| pem.ca.clone());
                    if let Some(c) = &mut tls.client {
                        c.cert = pem.ca.clone();
                        c.key = pem.key.clone();
                    }
                    grpc_tls += 1;
                }
            }
        }
        let names: Vec<&str> = cfg.transforms.iter().map(|t| t.name()).collect();
        // The judges' API keys come from the environment; give them one.
        let keys: Vec<(&str, &str)> = cfg
            .transforms
            .iter()
            .filter_map(|t| match t {
                super::TransformConfig::Judge(j) => Some(match &j.provider {
                    super::JudgeProvider::Anthropic(p) | super::JudgeProvider::OpenAi(p) => {
                        (p.api_key_env.as_str(), "test-key")
                    }
                }),
                _ => None,
            })
            .collect();
        let sources = crate::transforms::test_support::sources(&keys);
        judges += usize::from(!keys.is_empty());
        match crate::app::build_policy(&cfg, &sources, None) {
            Err(e) => panic!(
                "{} does not build: {e}\n--- as merged:\n{config}",
                file.display()
            ),
            Ok((policy, _)) => {
                let runs_mcp = policy
                    .pipeline
                    .transforms()
                    .iter()
                    .any(|t| t.name() == "mcp");
                mcp += usize::from(runs_mcp);
            }
        }
        built += 1;
        signing += usize::from(
            names
                .iter()
                .any(|n| matches!(*n, "hmac_sign" | "aws_auth" | "oauth_token" | "gcp_auth")),
        );
    }
    assert!(built >= 40, "only {built} spec configs built");
    assert!(
        signing >= 8,
        "the hmac_sign and aws_auth examples build ({signing})"
    );
    assert!(
        mcp >= 2,
        "the mcp examples build and run the interceptor ({mcp})"
    );
    assert!(judges >= 3, "the judge examples build ({judges})");
    assert!(
        grpc_tls >= 1,
        "the grpc example with mTLS builds ({grpc_tls})"
    );
}

/// A self-signed certificate and its key in a temporary directory.
struct TestPem {
    _dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl TestPem {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let c = rcgen::generate_simple_self_signed(vec!["policy.test".to_string()]).expect("cert");
        let (ca, key) = (dir.path().join("ca.pem"), dir.path().join("key.pem"));
        std::fs::write(&ca, c.cert.pem()).expect("write cert");
        std::fs::write(&key, c.signing_key.serialize_pem()).expect("write key");
        TestPem { _dir: dir, ca, key }
    }
}
