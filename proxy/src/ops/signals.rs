//! Process signals and lifecycle: SIGTERM/SIGINT start a graceful shutdown,
//! SIGHUP reloads the configuration, SIGUSR1 reopens the log file, [`Drain`] lets in-flight requests finish,
//! and the `sd_notify` helpers tell systemd (`Type=notify`) where we are.
//!
//! A graceful shutdown, as `run()` can do it:
//!
//! ```ignore
//! let mut stop = ShutdownSignal::install()?;       // before the listeners start
//! let drain = Drain::new();                        // accept loops select on drain.stopping()
//! notify_ready();
//! let which = stop.recv().await;
//! notify_stopping();
//! drain.drain(Duration::from_secs(30)).await;      // stop accepting, wait for in-flight work
//! if let Some(otel) = otel { otel.shutdown(Duration::from_secs(5)).await; }
//! std::process::exit(0);
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::task::JoinHandle;

use crate::ops::management::{ReloadController, Trigger};

mod drain;
mod notify;

pub use drain::{Drain, DrainGuard, DrainOutcome};
pub use notify::{notify_ready, notify_reloading, notify_stopping, sd_notify, sd_notify_to};

/// Errors from signal handling.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// Installing a signal handler failed.
    #[error("installing the {signal} handler")]
    Install {
        /// The signal's name.
        signal: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn install(kind: SignalKind, name: &'static str) -> Result<Signal, SignalError> {
    signal(kind).map_err(|source| SignalError::Install {
        signal: name,
        source,
    })
}

/// SIGTERM and SIGINT. Install it early: from then on these signals no longer
/// kill the process, they only wake [`ShutdownSignal::recv`].
pub struct ShutdownSignal {
    term: Signal,
    int: Signal,
}

impl ShutdownSignal {
    /// Installs the handlers; needs a tokio runtime.
    pub fn install() -> Result<Self, SignalError> {
        Ok(ShutdownSignal {
            term: install(SignalKind::terminate(), "SIGTERM")?,
            int: install(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    /// Resolves on the next SIGTERM or SIGINT and says which.
    pub async fn recv(&mut self) -> &'static str {
        let which = tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        };
        which
    }
}

/// A SIGHUP that arrived before [`spawn_reload_on_sighup`] (see [`catch_early`]).
static EARLY_HUP: AtomicBool = AtomicBool::new(false);
/// A SIGUSR1 that arrived before [`spawn_reopen_logs_on_sigusr1`].
static EARLY_USR1: AtomicBool = AtomicBool::new(false);

extern "C" fn note_early(sig: libc::c_int) {
    // Async-signal-safe: an atomic store and nothing else.
    match sig {
        libc::SIGHUP => EARLY_HUP.store(true, Ordering::SeqCst),
        libc::SIGUSR1 => EARLY_USR1.store(true, Ordering::SeqCst),
        _ => {}
    }
}

/// Catches SIGHUP and SIGUSR1 from the first moment of `run`, before the
/// config is read (an `s3://` fetch waits up to 30 s), the CA loaded and
/// interception attached: until a handler is installed these signals end
/// the process (their default action), and logrotate's `postrotate` sends
/// SIGUSR1 to whatever state the unit is in. One that arrives meanwhile is
/// noted, and acted on once (a reload, a log reopen) when
/// [`spawn_reload_on_sighup`] and [`spawn_reopen_logs_on_sigusr1`] take the
/// signals over at the end of start-up.
pub fn catch_early() -> Result<(), SignalError> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal as Sig};
    let action = SigAction::new(
        SigHandler::Handler(note_early),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for (sig, name) in [(Sig::SIGHUP, "SIGHUP"), (Sig::SIGUSR1, "SIGUSR1")] {
        // SAFETY: `note_early` only stores to an atomic, which is
        // async-signal-safe; the previous action is not needed.
        unsafe { sigaction(sig, &action) }.map_err(|e| SignalError::Install {
            signal: name,
            source: e.into(),
        })?;
    }
    Ok(())
}

/// Reloads through `controller` on every SIGHUP, for the life of the process.
/// Signals that arrive during a reload are coalesced into one more reload.
pub fn spawn_reload_on_sighup(
    controller: Arc<ReloadController>,
) -> Result<JoinHandle<()>, SignalError> {
    let mut hup = install(SignalKind::hangup(), "SIGHUP")?;
    let early = EARLY_HUP.swap(false, Ordering::SeqCst);
    Ok(tokio::spawn(async move {
        if early {
            tracing::info!("SIGHUP during start-up: reloading configuration");
            let _ = controller.reload(Trigger::Signal).await;
        }
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading configuration");
            // The controller logs the outcome and records it for /v1/status.
            let _ = controller.reload(Trigger::Signal).await;
        }
    }))
}

/// Reopens the log file stderr was at start-up on every SIGUSR1, after a
/// log rotation renamed it (`ops::log_file`): the stderr writer does it
/// between whole lines.
pub fn spawn_reopen_logs_on_sigusr1() -> Result<JoinHandle<()>, SignalError> {
    let mut usr1 = install(SignalKind::user_defined1(), "SIGUSR1")?;
    let early = EARLY_USR1.swap(false, Ordering::SeqCst);
    Ok(tokio::spawn(async move {
        if early {
            reopen_logs();
        }
        while usr1.recv().await.is_some() {
            reopen_logs();
        }
    }))
}

/// Reopens the log file, through the stderr writer (between whole lines)
/// when there is one.
fn reopen_logs() {
    match crate::audit::stderr_writer() {
        Some(w) => w.reopen(),
        None => crate::ops::log_file::reopen_stderr_file(),
    }
}

#[cfg(test)]
mod tests;
