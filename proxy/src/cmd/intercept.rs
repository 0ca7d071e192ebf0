//! `iron-proxy intercept status|detach`, and the hidden `intercept load`
//! that `run` starts as its eBPF loader child.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{self, InterceptMode};
use crate::config_source::ConfigSource;
use crate::console::{errln, outln, printed};

/// `iron-proxy intercept status|detach [-config FILE | -pin-path PATH]`.
/// Detach is the only way interception ends: the pinned programs outlive the
/// proxy so that workloads fail closed when it stops. It must work when the
/// config does not (the reason a restart failed), so `-pin-path` reads no
/// config, a config that does not load is read again for
/// `intercept.pin_path` and `intercept.mode` alone, and with neither flag
/// the default pin path is used.
pub fn intercept(config: Option<&Path>, pin_path: Option<&Path>, detach: bool) -> ExitCode {
    let verb = if detach { "detach" } else { "status" };
    let (pin, mode) = match (config, pin_path) {
        (Some(_), Some(_)) => {
            errln!("iron-proxy intercept {verb}: give -config FILE or -pin-path PATH, not both");
            return ExitCode::from(2);
        }
        (None, Some(pin)) => (pin.to_owned(), InterceptMode::Ebpf),
        (None, None) => {
            errln!(
                "iron-proxy intercept {verb}: no -config or -pin-path: using the default pin path {}",
                config::DEFAULT_PIN_PATH
            );
            (PathBuf::from(config::DEFAULT_PIN_PATH), InterceptMode::Ebpf)
        }
        (Some(arg), None) => match target_of_config(arg, verb) {
            Some(t) => t,
            None => return ExitCode::FAILURE,
        },
    };
    if mode == InterceptMode::Nftables {
        return intercept_nftables(&pin, detach);
    }
    if detach {
        return match crate::intercept::Interceptor::detach(&pin) {
            Ok(true) => printed(outln!(
                "interception detached; pins under {} removed",
                pin.display()
            )),
            Ok(false) => printed(outln!(
                "nothing pinned at {}; nothing to detach",
                pin.display()
            )),
            Err(e) => {
                errln!("iron-proxy intercept detach: {}", crate::error_chain(&e));
                ExitCode::FAILURE
            }
        };
    }
    match crate::intercept::Interceptor::status(&pin) {
        Ok(status) => printed(outln!("{status}")),
        Err(e) => {
            errln!("iron-proxy intercept status: {}", crate::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The pin path and mode `-config` names. A config that does not load has
/// its errors printed and is read again, leniently, for `intercept.pin_path`
/// and `intercept.mode` alone; `None` once that too failed and is printed.
fn target_of_config(arg: &Path, verb: &str) -> Option<(PathBuf, InterceptMode)> {
    if let Some((_, cfg, _)) = super::load_config(arg, crate::console::err, |_, _| {}) {
        return Some(match cfg.intercept {
            Some(ic) => (ic.pin_path, ic.mode),
            None => (PathBuf::from(config::DEFAULT_PIN_PATH), InterceptMode::Ebpf),
        });
    }
    let hint = format!(
        "give the pin directory with -pin-path PATH (default {})",
        config::DEFAULT_PIN_PATH
    );
    let lenient = match super::config_source(arg, crate::console::err) {
        Some(ConfigSource::File(file)) => std::fs::read_to_string(&file)
            .map_err(|e| format!("reading {}: {e}", file.display()))
            .and_then(|text| lenient_target(&text)),
        Some(ConfigSource::S3(_)) => Err("it is not a local file".to_owned()),
        None => Err("its location is malformed".to_owned()),
    };
    match lenient {
        Ok((pin, mode)) => {
            errln!(
                "iron-proxy intercept {verb}: the config does not load (above); using intercept.pin_path {} read from it alone",
                pin.display()
            );
            Some((pin, mode))
        }
        Err(why) => {
            errln!(
                "iron-proxy intercept {verb}: the config does not load (above), and intercept.pin_path cannot be read from it: {why}; {hint}"
            );
            None
        }
    }
}

/// `intercept.pin_path` and `intercept.mode` of a config's YAML text, read
/// without building the config: absent ones take their defaults; present
/// ones of the wrong kind are an error.
fn lenient_target(text: &str) -> Result<(PathBuf, InterceptMode), String> {
    use serde_yaml_ng::Value;
    let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let Some(ic) = doc.get("intercept").filter(|v| !v.is_null()) else {
        return Ok((PathBuf::from(config::DEFAULT_PIN_PATH), InterceptMode::Ebpf));
    };
    let pin = match ic.get("pin_path") {
        None | Some(Value::Null) => PathBuf::from(config::DEFAULT_PIN_PATH),
        Some(Value::String(s)) if Path::new(s).is_absolute() => PathBuf::from(s),
        Some(_) => return Err("intercept.pin_path is not an absolute path".to_owned()),
    };
    let mode = match ic.get("mode") {
        None | Some(Value::Null) => InterceptMode::Ebpf,
        Some(Value::String(s)) if s == "ebpf" => InterceptMode::Ebpf,
        Some(Value::String(s)) if s == "nftables" => InterceptMode::Nftables,
        Some(_) => return Err("intercept.mode is neither ebpf nor nftables".to_owned()),
    };
    Ok((pin, mode))
}

/// `iron-proxy intercept load` (hidden): the eBPF loader child that `run`
/// starts; settings as JSON on stdin, outcome on stdout.
pub fn intercept_load(log_level: &str, log_format: config::LogFormat) -> ExitCode {
    crate::ops::logs::init(log_level, log_format);
    crate::intercept::loader_main()
}

/// `intercept status|detach` in nftables mode: the table of this pin path.
fn intercept_nftables(pin: &Path, detach: bool) -> ExitCode {
    use crate::intercept::nft::{table_name, NftInterceptor};
    if detach {
        return match NftInterceptor::detach(pin) {
            Ok(()) => printed(outln!(
                "interception detached; table inet {} removed",
                table_name(pin)
            )),
            Err(e) => {
                errln!("iron-proxy intercept detach: {}", crate::error_chain(&e));
                ExitCode::FAILURE
            }
        };
    }
    match NftInterceptor::status(pin) {
        Ok(status) => printed(outln!("{status}")),
        Err(e) => {
            errln!("iron-proxy intercept status: {}", crate::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_config_still_names_its_pin_path_and_mode() {
        let text = "proxy: {listen: nonsense}\nintercept:\n  mode: nftables\n  pin_path: /sys/fs/bpf/ci\n  bogus: 1\n";
        assert_eq!(
            lenient_target(text),
            Ok((PathBuf::from("/sys/fs/bpf/ci"), InterceptMode::Nftables))
        );
        assert_eq!(
            lenient_target("intercept: {cgroups: [x]}\n"),
            Ok((PathBuf::from(config::DEFAULT_PIN_PATH), InterceptMode::Ebpf))
        );
        assert!(lenient_target("intercept: {pin_path: relative}\n").is_err());
        assert!(lenient_target("intercept: [\n").is_err());
    }
}
