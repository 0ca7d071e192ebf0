//! The open-file limit. Every client connection costs the proxy a file
//! descriptor, and one it forwards costs two; at the soft `RLIMIT_NOFILE`
//! (often 1024 when started from a shell or a container runtime) accepts
//! fail and the data plane stops taking connections. Like the Go runtime
//! does for every Go program since Go 1.19, the proxy raises its soft limit
//! to the hard limit at start-up: no privilege is needed to do that.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The soft limit before and after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    /// The soft limit the process started with.
    pub from: u64,
    /// The soft limit now (the hard limit).
    pub to: u64,
}

/// Raises the soft open-file limit to the hard limit. `Ok(None)` when it
/// already is there.
pub fn raise() -> Result<Option<Raised>, nix::Error> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= hard {
        return Ok(None);
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(Some(Raised {
        from: soft,
        to: hard,
    }))
}
