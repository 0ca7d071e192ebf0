//! The listeners a reload can move: `proxy.http_listen`,
//! `proxy.https_listen`, `proxy.tunnel_listen` (added, removed or moved) and
//! `metrics.listen`. Startup opens them through the same two steps.
//!
//! A change is made in two steps, so that it is all or nothing:
//! [`Listeners::prepare`] binds every address the new config adds (and
//! shares each socket with the connection workers), touching nothing that
//! runs; any failure drops the new sockets and names the field and address.
//! [`Listeners::commit`] cannot fail: it starts the new accept loops, then
//! stops the loops of the addresses the config no longer has (their sockets
//! close, so a new connection there is refused) and waits for them to end.
//! Connections already accepted on a closed listener are tasks of their own
//! and run to their natural end (keep-alive included). An address in both
//! the old and the new config keeps its socket: no rebind, no gap.
//!
//! The proxy's own-address list (backend calls refuse these, see
//! [`OwnListeners`]) follows: a new socket is added before its loops start,
//! a closed one removed once its loops ended. An address given up by one
//! listener can be taken by another only in a later reload (the old socket
//! still holds it while the new ones are bound).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::listen::sniffed::Intake;
use crate::listen::workers::{SharedListener, Workers, WorkersError};
use crate::ops::{Drain, Metrics, ReadyFn};
use crate::secrets::http::OwnListeners;

/// How long a reload waits for a closed listener's accept loops to end.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Why a listener could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The address could not be bound.
    #[error("{at}{field}: binding {addr}")]
    Bind {
        /// Where the field was set, as `proxy.yaml:3:17: ` (with the
        /// separator; empty for a config that was not read from a file).
        at: String,
        /// The config field (`proxy.https_listen`).
        field: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The DNS server's sockets on `dns.listen` could not be bound (or
    /// marked as the proxy's).
    #[error("{at}dns.listen")]
    Dns {
        /// Where `dns.listen` was set, as in [`ListenError::Bind`].
        at: String,
        /// What failed, naming the protocol and the address.
        #[source]
        source: crate::dns::DnsError,
    },
    /// The socket could not be shared with the connection workers.
    #[error("{field}")]
    Share {
        /// The config field.
        field: &'static str,
        /// The cause.
        #[source]
        source: WorkersError,
    },
}

/// A listener whose address a reload can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `proxy.http_listen`.
    Http,
    /// `proxy.https_listen`.
    Https,
    /// `proxy.tunnel_listen`.
    Tunnel,
    /// `metrics.listen`.
    Metrics,
}

impl Kind {
    /// Every kind, in the order startup logs them.
    pub const ALL: [Kind; 4] = [Kind::Http, Kind::Https, Kind::Tunnel, Kind::Metrics];
    /// The data plane's listeners.
    pub const DATA: [Kind; 3] = [Kind::Http, Kind::Https, Kind::Tunnel];

    /// The config field.
    pub fn field(self) -> &'static str {
        match self {
            Kind::Http => "proxy.http_listen",
            Kind::Https => "proxy.https_listen",
            Kind::Tunnel => "proxy.tunnel_listen",
            Kind::Metrics => "metrics.listen",
        }
    }

    /// The listener's name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Https => "https",
            Kind::Tunnel => "tunnel",
            Kind::Metrics => "metrics",
        }
    }

    /// The addresses `cfg` asks this listener to bind (none: off).
    pub fn wanted(self, cfg: &Config) -> Vec<SocketAddr> {
        match self {
            Kind::Http => cfg.proxy.http_listen.socket_addrs(),
            Kind::Https => cfg.proxy.https_listen.socket_addrs(),
            Kind::Tunnel => cfg
                .proxy
                .tunnel_listen
                .as_ref()
                .map(|t| t.socket_addrs())
                .unwrap_or_default(),
            Kind::Metrics => vec![cfg.metrics.listen.to_socket_addr()],
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One open socket: the address configured, the one bound (they differ for
/// port 0) and its accept loops.
struct Socket {
    configured: SocketAddr,
    bound: SocketAddr,
    loops: Vec<JoinHandle<()>>,
}

/// A bound socket, not yet accepting: the data plane's are shared with the
/// workers, the metrics endpoint's is served on the main runtime.
enum Ready {
    Http(SharedListener),
    Https(SharedListener),
    Tunnel(SharedListener),
    Metrics(TcpListener),
}

impl Ready {
    fn kind(&self) -> Kind {
        match self {
            Ready::Http(_) => Kind::Http,
            Ready::Https(_) => Kind::Https,
            Ready::Tunnel(_) => Kind::Tunnel,
            Ready::Metrics(_) => Kind::Metrics,
        }
    }
}

/// The sockets a change adds, bound but not accepting (see the module
/// docs). Dropped, they close and nothing changed.
pub struct Prepared {
    /// The kinds being set, with the addresses wanted for each.
    wanted: Vec<(Kind, Vec<SocketAddr>)>,
    /// New sockets: (configured, bound, socket).
    new: Vec<(SocketAddr, SocketAddr, Ready)>,
}

/// A listener whose bound addresses a commit changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Which listener.
    pub kind: Kind,
    /// The addresses before (empty: it was off).
    pub old: Vec<SocketAddr>,
    /// The addresses now (empty: it is off).
    pub new: Vec<SocketAddr>,
}

/// What the accept loops serve with.
pub struct Serving {
    /// The connection workers.
    pub workers: Workers,
    /// State and TLS handling of the data plane.
    pub intake: Intake,
    /// The metrics registry served on `metrics.listen`.
    pub metrics: Arc<Metrics>,
    /// `/readyz`.
    pub ready: ReadyFn,
    /// Ends the metrics endpoint's loop at shutdown.
    pub drain: Drain,
    /// The proxy's own addresses, kept in step.
    pub own: OwnListeners,
}

#[derive(Default)]
struct State {
    /// By [`Kind::index`].
    sockets: [Vec<Socket>; 4],
    /// Set by [`Listeners::stop_data_plane`]: no loop starts after it.
    stopped: bool,
}

/// The open listeners of [`Kind`]; shared by startup, reload and shutdown.
pub struct Listeners {
    serving: Serving,
    state: Mutex<State>,
}

/// `proxy.yaml:3:17: `, where `field` was set (a default: the nearest
/// enclosing field the file has, or the file), or the `IRON_*` variable that
/// set it; empty when the config has no file (tests).
pub(super) fn placed(cfg: &Config, field: &str) -> String {
    let at = cfg.locate(field);
    if at.file.is_empty() {
        String::new()
    } else {
        format!("{at}: ")
    }
}

impl Listeners {
    /// No listener open yet.
    pub fn new(serving: Serving) -> Self {
        Listeners {
            serving,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Binds the addresses `cfg` gives the listeners of `kinds` that are not
    /// open yet. Nothing running changes; on error the sockets bound so far
    /// close again.
    pub fn prepare(&self, cfg: &Config, kinds: &[Kind]) -> Result<Prepared, ListenError> {
        let state = self.state();
        let mut prepared = Prepared {
            wanted: Vec::new(),
            new: Vec::new(),
        };
        for &kind in kinds {
            let wanted = kind.wanted(cfg);
            let open = &state.sockets[kind.index()];
            for &addr in &wanted {
                if open.iter().any(|s| s.configured == addr) {
                    continue;
                }
                let field = kind.field();
                let at = placed(cfg, field);
                let bind_err = |source| ListenError::Bind {
                    at: at.clone(),
                    field,
                    addr,
                    source,
                };
                let (bound, ready) = if kind == Kind::Metrics {
                    let l = crate::ops::bind(addr).map_err(bind_err)?;
                    (l.local_addr().map_err(bind_err)?, Ready::Metrics(l))
                } else {
                    let l = super::bind_addr(addr).map_err(bind_err)?;
                    let bound = l.local_addr().map_err(bind_err)?;
                    let shared = self
                        .serving
                        .workers
                        .share(l)
                        .map_err(|source| ListenError::Share { field, source })?;
                    let ready = match kind {
                        Kind::Http => Ready::Http(shared),
                        Kind::Https => Ready::Https(shared),
                        _ => Ready::Tunnel(shared),
                    };
                    (bound, ready)
                };
                prepared.new.push((addr, bound, ready));
            }
            prepared.wanted.push((kind, wanted));
        }
        Ok(prepared)
    }

    /// Puts `prepared` in force (see the module docs) and returns what
    /// changed. After [`Listeners::stop_data_plane`] it does nothing.
    pub async fn commit(&self, prepared: Prepared) -> Vec<Change> {
        let Prepared { wanted, new } = prepared;
        let mut changes = Vec::new();
        let mut closed = Vec::new();
        {
            let mut state = self.state();
            if state.stopped {
                return changes;
            }
            let before: Vec<Vec<SocketAddr>> = state
                .sockets
                .iter()
                .map(|open| open.iter().map(|s| s.bound).collect())
                .collect();
            for (configured, bound, ready) in new {
                self.serving.own.add_listener(bound);
                let kind = ready.kind();
                let loops = self.spawn(ready);
                state.sockets[kind.index()].push(Socket {
                    configured,
                    bound,
                    loops,
                });
            }
            for (kind, wanted) in wanted {
                let open = std::mem::take(&mut state.sockets[kind.index()]);
                let (mut keep, gone): (Vec<Socket>, Vec<Socket>) = open
                    .into_iter()
                    .partition(|s| wanted.contains(&s.configured));
                // In the config's order.
                keep.sort_by_key(|s| wanted.iter().position(|w| *w == s.configured));
                let now: Vec<SocketAddr> = keep.iter().map(|s| s.bound).collect();
                state.sockets[kind.index()] = keep;
                closed.extend(gone);
                let old = before[kind.index()].clone();
                if old != now {
                    changes.push(Change {
                        kind,
                        old,
                        new: now,
                    });
                }
            }
        }
        for s in &closed {
            for l in &s.loops {
                l.abort();
            }
        }
        for s in closed {
            for l in s.loops {
                // The socket closes when the last loop holding it is dropped.
                let _ = tokio::time::timeout(STOP_WAIT, l).await;
            }
            self.serving.own.remove_listener(s.bound);
        }
        changes
    }

    /// Starts the accept loops of one new socket.
    fn spawn(&self, ready: Ready) -> Vec<JoinHandle<()>> {
        let s = &self.serving;
        match ready {
            Ready::Http(l) => {
                let sh = s.intake.shared.clone();
                s.workers
                    .spawn_accept(l, move |l| crate::listen::http::run(l, sh.clone()))
            }
            Ready::Https(l) => {
                let i = s.intake.clone();
                s.workers
                    .spawn_accept(l, move |l| crate::listen::https::run(l, i.clone()))
            }
            Ready::Tunnel(l) => {
                let i = s.intake.clone();
                s.workers
                    .spawn_accept(l, move |l| crate::listen::tunnel::run(l, i.clone()))
            }
            Ready::Metrics(l) => {
                // Up until the drain is over, not only until it begins.
                let (metrics, ready, finished) =
                    (s.metrics.clone(), s.ready.clone(), s.drain.finished());
                vec![tokio::spawn(async move {
                    let _ = crate::ops::metrics::serve(l, metrics, ready, finished).await;
                })]
            }
        }
    }

    /// The bound addresses, by listener name, in [`Kind::ALL`] order.
    pub fn bound(&self) -> Vec<(&'static str, SocketAddr)> {
        let state = self.state();
        Kind::ALL
            .iter()
            .flat_map(|k| state.sockets[k.index()].iter().map(|s| (k.name(), s.bound)))
            .collect()
    }

    /// Shutdown: stops accepting on the data plane's listeners (the metrics
    /// endpoint ends with the drain); no reload starts a loop after this.
    pub fn stop_data_plane(&self) {
        let mut state = self.state();
        state.stopped = true;
        for kind in Kind::DATA {
            for s in &state.sockets[kind.index()] {
                for l in &s.loops {
                    l.abort();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bind error names where its field was set, as config errors do: the
    /// listeners' places are kept from the load (the document is not), for a
    /// field the file sets, one an `IRON_*` variable sets, and a default
    /// (the nearest enclosing field the file has).
    #[test]
    fn a_listener_is_placed_at_its_line_or_variable() {
        let text = "tls: {mode: sni-only}\nproxy:\n  http_listen: \"127.0.0.1:18085\"\nmetrics:\n  listen: \"127.0.0.1:9\"\n";
        let env = |v: &str| (v == "IRON_PROXY_TUNNEL_LISTEN").then(|| "127.0.0.1:7".to_string());
        let cfg = crate::config::parse(text, "proxy.yaml", &env).expect("valid config");
        assert_eq!(placed(&cfg, "proxy.http_listen"), "proxy.yaml:3:16: ");
        assert_eq!(placed(&cfg, "metrics.listen"), "proxy.yaml:5:11: ");
        assert_eq!(
            placed(&cfg, "proxy.tunnel_listen"),
            "IRON_PROXY_TUNNEL_LISTEN: "
        );
        assert_eq!(placed(&cfg, "proxy.https_listen"), "proxy.yaml:3:3: ");
        let e = ListenError::Bind {
            at: placed(&cfg, "proxy.http_listen"),
            field: "proxy.http_listen",
            addr: "127.0.0.1:18085".parse().expect("an address"),
            source: std::io::ErrorKind::AddrInUse.into(),
        };
        assert_eq!(
            e.to_string(),
            "proxy.yaml:3:16: proxy.http_listen: binding 127.0.0.1:18085"
        );
    }

    /// The listeners fixed at start-up (DNS, the management API, the
    /// transparent listener) are placed at their lines too.
    #[test]
    fn the_fixed_listeners_are_placed_at_their_lines() {
        let text =
            "tls: {mode: sni-only}\ndns:\n  listen: \"127.0.0.1:5353\"\n  proxy_ip: 127.0.0.1\n\
                    management:\n  api_key_env: K\n  listen: \"127.0.0.1:9\"\n\
                    intercept:\n  cgroups: [/sys/fs/cgroup/none]\n  listen: \"127.0.0.1:15001\"\n";
        let cfg = crate::config::parse(text, "proxy.yaml", &|_| None).expect("valid config");
        assert_eq!(placed(&cfg, "dns.listen"), "proxy.yaml:3:11: ");
        assert_eq!(placed(&cfg, "management.listen"), "proxy.yaml:7:11: ");
        assert_eq!(placed(&cfg, "intercept.listen"), "proxy.yaml:10:11: ");
    }
}
