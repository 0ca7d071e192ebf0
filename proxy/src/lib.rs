//! iron-proxy: an egress-control proxy for untrusted workloads.
//!
//! See `ARCHITECTURE.md` for the data flow. `main.rs` is a thin CLI over
//! [`cmd`], which starts an [`app::App`].

pub mod alloc;
pub mod app;
pub mod audit;
#[cfg(test)]
mod backend_answers;
pub mod body;
pub mod cli;
pub mod client_acl;
pub mod cmd;
pub mod config;
pub mod config_source;
pub mod console;
pub mod dns;
#[cfg(test)]
mod endless;
pub mod exchange;
#[cfg(test)]
mod h2_frames;
pub mod histogram;
pub mod init;
pub mod intercept;
pub mod listen;
pub mod mcp;
pub mod ops;
pub mod pipeline;
pub mod read_cap;
pub mod redact_url;
pub mod rep_movsb;
pub mod resident;
pub mod revoke;
pub mod rules;
pub mod scrub_response;
pub mod secrets;
pub mod state;
pub mod summary;
pub mod template;
#[cfg(test)]
mod test_http;
pub mod tls;
pub mod traffic;
pub mod transforms;
pub mod turns;
pub mod upgrade;
pub mod upstream;

/// The version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The first error of type `T` in `e`'s chain of sources, `e` included.
pub fn find_in_chain<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        cur = err.source();
    }
    None
}

/// `e` and its sources joined with ": ". Display strings leave the source
/// out (one `thiserror` enum per module, `#[source]` for the cause), so this
/// is how a message gets its whole cause, each part once: the CLI prints
/// every failure this way.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = without_errno(e.to_string());
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&without_errno(s.to_string()));
        cur = s.source();
    }
    out
}

/// An OS error's text without the ` (os error N)` the standard library adds
/// (`Address already in use`, not `Address already in use (os error 98)`):
/// the words say it, the number is noise to an operator.
fn without_errno(mut text: String) -> String {
    if let Some(at) = text.rfind(" (os error ") {
        let rest = &text[at + " (os error ".len()..];
        if rest
            .strip_suffix(')')
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            text.truncate(at);
        }
    }
    text
}

#[cfg(test)]
mod error_chain_tests {
    use super::*;

    #[test]
    fn an_os_errors_number_is_left_out() {
        #[derive(Debug, thiserror::Error)]
        #[error("binding 127.0.0.1:1")]
        struct Bind(#[source] std::io::Error);
        let e = Bind(std::io::Error::from_raw_os_error(98));
        assert_eq!(
            error_chain(&e),
            "binding 127.0.0.1:1: Address already in use"
        );
    }
}
