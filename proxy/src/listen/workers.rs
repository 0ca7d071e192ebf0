//! Connection workers: client connections are accepted and served, from
//! accept to close, on a fixed set of single-threaded tokio runtimes, one
//! per core. Every worker runs each listener's accept loop on a clone of the
//! listening socket, so whichever worker is free takes the next connection,
//! and a connection never changes thread.
//!
//! On the shared work-stealing runtime, idle workers park on a futex and are
//! woken to steal whenever tasks queue up, and a connection's wake-ups hop
//! between threads; on a loaded host that showed up as the largest item of
//! the keep-alive profile (context switches, `futex`). Here no worker wakes
//! another. The DNS server and the control plane stay on the main runtime.

use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle as TaskHandle;

/// How long a stopping worker waits for its tasks' blocking work.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the workers could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkersError {
    /// A runtime or its thread could not be created.
    #[error("starting connection worker {index}")]
    Start {
        /// Which worker.
        index: usize,
        /// The OS error.
        source: io::Error,
    },
    /// A listening socket could not be shared with the workers.
    #[error("sharing listener {addr} with the connection workers")]
    Listener {
        /// The listener's address, when known.
        addr: String,
        /// The OS error.
        source: io::Error,
    },
}

/// The environment variable that sets the number of connection workers and
/// of the main runtime's threads (tokio's own name for it).
pub const THREADS_VAR: &str = "TOKIO_WORKER_THREADS";

/// `TOKIO_WORKER_THREADS` holds something other than a positive number.
#[derive(Debug, thiserror::Error)]
#[error("{THREADS_VAR}: expected a positive whole number of threads, got {value:?}")]
pub struct ThreadCountError {
    /// What the variable holds (lossily decoded).
    pub value: String,
}

/// One thread per core (one when that cannot be told).
fn per_core() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The number of threads `value` (the `TOKIO_WORKER_THREADS` variable, if set)
/// asks for: unset or empty means one per core. Checked here, once, because
/// tokio panics on a value it cannot parse when it reads the variable itself.
pub fn thread_count(value: Option<&std::ffi::OsStr>) -> Result<usize, ThreadCountError> {
    let Some(value) = value else {
        return Ok(per_core());
    };
    let text = value.to_string_lossy();
    match text.trim() {
        "" => Ok(per_core()),
        n => match n.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ThreadCountError {
                value: text.into_owned(),
            }),
        },
    }
}

/// The connection workers; cheap to clone.
#[derive(Clone)]
pub struct Workers {
    inner: Arc<Inner>,
}

struct Inner {
    handles: Vec<Handle>,
    running: Mutex<Vec<Running>>,
}

/// A listening socket cloned for every worker ([`Workers::share`]); dropped
/// unused, the socket closes.
#[derive(Debug)]
pub struct SharedListener {
    clones: Vec<std::net::TcpListener>,
}

struct Running {
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("count", &self.inner.handles.len())
            .finish()
    }
}

impl Workers {
    /// Starts `count` workers (at least one), threads named `iron-conn-N`.
    pub fn start(count: usize) -> Result<Workers, WorkersError> {
        let mut handles = Vec::new();
        let mut running = Vec::new();
        for index in 0..count.max(1) {
            let start = |source| WorkersError::Start { index, source };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(start)?;
            handles.push(rt.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("iron-conn-{index}"))
                .spawn(move || {
                    rt.block_on(async {
                        let _ = stopped.await;
                    });
                    // Dropping the tasks ends their connections; each
                    // in-flight exchange emits its audit record as it drops.
                    rt.shutdown_timeout(STOP_TIMEOUT);
                })
                .map_err(start)?;
            running.push(Running { stop, thread });
        }
        Ok(Workers {
            inner: Arc::new(Inner {
                handles,
                running: Mutex::new(running),
            }),
        })
    }

    /// The number of workers from `TOKIO_WORKER_THREADS`, else one per core
    /// (also when the variable is invalid: [`thread_count`] is what reports that).
    pub fn default_count() -> usize {
        thread_count(std::env::var_os(THREADS_VAR).as_deref()).unwrap_or_else(|_| per_core())
    }

    /// How many workers there are.
    pub fn count(&self) -> usize {
        self.inner.handles.len()
    }

    /// Runs a task made by `make` on every worker (a per-thread chore, such as
    /// [`crate::alloc::purge_idle_memory`]); it ends when the worker stops or
    /// its handle is aborted.
    pub fn spawn_on_each<F, Fut>(&self, make: F) -> Vec<TaskHandle<()>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.inner.handles.iter().map(|h| h.spawn(make())).collect()
    }

    /// Runs `run` (an accept loop) on every worker, each with its own clone
    /// of `listener`; the connections it spawns stay on that worker. Returns
    /// the loops' handles (abort them to stop accepting: the socket closes
    /// when every loop has ended; connections already accepted run on).
    pub fn accept_on_each<F, Fut>(
        &self,
        listener: TcpListener,
        run: F,
    ) -> Result<Vec<TaskHandle<()>>, WorkersError>
    where
        F: Fn(TcpListener) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Ok(self.spawn_accept(self.share(listener)?, run))
    }

    /// The fallible half of [`Workers::accept_on_each`]: one clone of
    /// `listener` per worker, nothing running yet. A reload shares every new
    /// socket first, so that starting the loops cannot fail halfway.
    pub fn share(&self, listener: TcpListener) -> Result<SharedListener, WorkersError> {
        let addr = listener
            .local_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        let err = |source| WorkersError::Listener {
            addr: addr.clone(),
            source,
        };
        let std = listener.into_std().map_err(err)?;
        let clones = self
            .inner
            .handles
            .iter()
            .map(|_| std.try_clone().map_err(err))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SharedListener { clones })
    }

    /// The infallible half of [`Workers::accept_on_each`]: runs `run` on
    /// every worker with its clone of the socket.
    pub fn spawn_accept<F, Fut>(&self, shared: SharedListener, run: F) -> Vec<TaskHandle<()>>
    where
        F: Fn(TcpListener) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let run = Arc::new(run);
        self.inner
            .handles
            .iter()
            .zip(shared.clones)
            .map(|(h, l)| {
                let run = run.clone();
                h.spawn(async move {
                    match TcpListener::from_std(l) {
                        Ok(l) => run(l).await,
                        Err(e) => tracing::error!(error = %e, "registering a listener on a connection worker failed"),
                    }
                })
            })
            .collect()
    }

    /// Stops every worker: their connections are dropped. Waits for the threads.
    pub fn stop(&self) {
        let running =
            std::mem::take(&mut *self.inner.running.lock().unwrap_or_else(|p| p.into_inner()));
        let threads: Vec<JoinHandle<()>> = running
            .into_iter()
            .map(|r| {
                let _ = r.stop.send(());
                r.thread
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn every_worker_accepts_and_serves_its_connections_on_its_own_thread() {
        let workers = Workers::start(2).expect("start");
        assert_eq!(workers.count(), 2);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let loops = workers
            .accept_on_each(listener, |l| async move {
                while let Ok((mut s, _)) = l.accept().await {
                    let accepted_on = std::thread::current().name().unwrap_or("").to_string();
                    tokio::spawn(async move {
                        let served_on = std::thread::current().name().unwrap_or("").to_string();
                        let _ = s
                            .write_all(format!("{accepted_on} {served_on}").as_bytes())
                            .await;
                    });
                }
            })
            .expect("accept loops");
        assert_eq!(loops.len(), 2, "one accept loop per worker");
        let mut names = HashSet::new();
        for _ in 0..20 {
            let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let mut text = String::new();
            c.read_to_string(&mut text).await.expect("read");
            let (accepted_on, served_on) = text.split_once(' ').expect("two names");
            assert!(accepted_on.starts_with("iron-conn-"), "{text}");
            assert_eq!(accepted_on, served_on, "served where it was accepted");
            names.insert(accepted_on.to_string());
        }
        for l in loops {
            l.abort();
        }
        assert!(!names.is_empty());
        workers.stop();
    }

    #[tokio::test]
    async fn stopping_drops_the_connections_in_flight() {
        struct Flag(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let workers = Workers::start(1).expect("start");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Flag(dropped.clone());
        let flag = Mutex::new(Some(flag));
        let (started_tx, started) = oneshot::channel();
        let started_tx = Mutex::new(Some(started_tx));
        let _loops = workers
            .accept_on_each(listener, move |l| {
                let flag = flag.lock().expect("lock").take();
                let tx = started_tx.lock().expect("lock").take();
                async move {
                    let _conn = l.accept().await;
                    let _flag = flag;
                    if let Some(tx) = tx {
                        let _ = tx.send(());
                    }
                    std::future::pending::<()>().await;
                }
            })
            .expect("accept loop");
        started.await.expect("the connection task started");
        let w = workers.clone();
        tokio::task::spawn_blocking(move || w.stop())
            .await
            .expect("stop");
        assert!(dropped.load(Ordering::SeqCst), "the task was dropped");
    }

    #[tokio::test]
    async fn a_chore_runs_once_on_every_worker_thread() {
        let workers = Workers::start(3).expect("start");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let handles = workers.spawn_on_each(|| {
            let tx = tx.clone();
            async move {
                let on = std::thread::current().name().unwrap_or("").to_string();
                let _ = tx.send(on);
            }
        });
        drop(tx);
        let mut threads = HashSet::new();
        while let Some(on) = rx.recv().await {
            threads.insert(on);
        }
        assert_eq!(handles.len(), 3);
        assert_eq!(threads.len(), 3, "{threads:?}");
        let w = workers.clone();
        tokio::task::spawn_blocking(move || w.stop())
            .await
            .expect("stop");
    }

    #[test]
    fn the_thread_count_is_a_positive_number_or_one_per_core() {
        use std::ffi::OsStr;
        let cores = per_core();
        assert_eq!(thread_count(None).expect("unset"), cores);
        assert_eq!(thread_count(Some(OsStr::new(""))).expect("empty"), cores);
        assert_eq!(thread_count(Some(OsStr::new(" 3 "))).expect("3"), 3);
        for bad in ["0", "abc", "-1", "1.5", "2 threads"] {
            let err = thread_count(Some(OsStr::new(bad))).expect_err(bad);
            assert_eq!(
                err.to_string(),
                format!(
                    "TOKIO_WORKER_THREADS: expected a positive whole number of threads, got {bad:?}"
                )
            );
        }
    }
}
