//! `iron-proxy intercept status|detach`, and the hidden `intercept load`
//! that `run` starts as its eBPF loader child.

use std::path::Path;
use std::process::ExitCode;

use crate::config;
use crate::console::{errln, outln, printed};

/// `iron-proxy intercept status|detach -config FILE`. Detach is the only way
/// interception ends: the pinned programs outlive the proxy so that workloads
/// fail closed when it stops.
pub fn intercept(arg: &Path, detach: bool) -> ExitCode {
    let Some((_, cfg, _)) = super::load_config(arg, |_, _| {}) else {
        return ExitCode::FAILURE;
    };
    if let Some(ic) = cfg
        .intercept
        .as_ref()
        .filter(|ic| ic.mode == crate::config::InterceptMode::Nftables)
    {
        return intercept_nftables(&ic.pin_path, detach);
    }
    let pin = match &cfg.intercept {
        Some(ic) => ic.pin_path.clone(),
        None => std::path::PathBuf::from(crate::config::DEFAULT_PIN_PATH),
    };
    if detach {
        return match crate::intercept::Interceptor::detach(&pin) {
            Ok(()) => printed(outln!(
                "interception detached; pins under {} removed",
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
