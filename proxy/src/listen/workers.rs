//! Connection workers: every accepted client connection is served, from its
//! first byte to its close, on one of a fixed set of single-threaded tokio
//! runtimes, one per core, picked round-robin.
//!
//! On the shared work-stealing runtime, idle workers park on a futex and are
//! woken to steal whenever tasks queue up, and a connection's wake-ups hop
//! between threads; on a loaded host that showed up as the largest item of
//! the keep-alive profile (context switches, `futex`). Here a connection
//! never changes thread and no worker wakes another. The accept loops, the
//! DNS server and the control plane stay on the main runtime; the hand-off
//! costs each new connection one re-registration of its socket.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// How long a stopping worker waits for its tasks' blocking work.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the workers could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkersError {
    /// A runtime or its thread could not be created.
    #[error("starting connection worker {index}: {source}")]
    Start {
        /// Which worker.
        index: usize,
        /// The OS error.
        source: io::Error,
    },
}

/// The connection workers; cheap to clone.
#[derive(Clone)]
pub struct Workers {
    inner: Arc<Inner>,
}

struct Inner {
    handles: Vec<Handle>,
    next: AtomicUsize,
    running: Mutex<Vec<Running>>,
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
                next: AtomicUsize::new(0),
                running: Mutex::new(running),
            }),
        })
    }

    /// The number of workers from `TOKIO_WORKER_THREADS`, else one per core.
    pub fn default_count() -> usize {
        std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// How many workers there are.
    pub fn count(&self) -> usize {
        self.inner.handles.len()
    }

    /// Serves `stream` with `serve` on the next worker. The stream moves to
    /// that worker's reactor; a stream that cannot move is closed (logged).
    pub fn spawn<F, Fut>(&self, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let std = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "handing a connection to a worker failed");
                return;
            }
        };
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.handles.len();
        self.inner.handles[n].spawn(async move {
            match TcpStream::from_std(std) {
                Ok(stream) => serve(stream).await,
                Err(e) => {
                    tracing::warn!(error = %e, "registering a connection on its worker failed")
                }
            }
        });
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Accepts `n` connections and serves each on the workers, answering
    /// with the name of the thread that served it.
    async fn serve_names(workers: &Workers, n: usize) -> Vec<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let clients = tokio::spawn(async move {
            let mut names = Vec::new();
            for _ in 0..n {
                let mut c = TcpStream::connect(addr).await.expect("connect");
                let mut name = String::new();
                c.read_to_string(&mut name).await.expect("read");
                names.push(name);
            }
            names
        });
        for _ in 0..n {
            let (s, _) = listener.accept().await.expect("accept");
            workers.spawn(s, |mut s| async move {
                let name = std::thread::current().name().unwrap_or("").to_string();
                let _ = s.write_all(name.as_bytes()).await;
            });
        }
        clients.await.expect("clients")
    }

    #[tokio::test]
    async fn connections_are_spread_over_the_workers_and_stay_on_one_thread() {
        let workers = Workers::start(3).expect("start");
        assert_eq!(workers.count(), 3);
        let names = serve_names(&workers, 6).await;
        assert_eq!(
            names,
            ["iron-conn-0", "iron-conn-1", "iron-conn-2"].repeat(2),
            "round-robin, each connection served on a worker thread"
        );
        let distinct: HashSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), 3);
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
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (s, _) = listener.accept().await.expect("accept");
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Flag(dropped.clone());
        let (started_tx, started) = oneshot::channel();
        workers.spawn(s, move |_s| async move {
            let _flag = flag;
            let _ = started_tx.send(());
            std::future::pending::<()>().await;
        });
        started.await.expect("the connection task started");
        let w = workers.clone();
        tokio::task::spawn_blocking(move || w.stop())
            .await
            .expect("stop");
        assert!(dropped.load(Ordering::SeqCst), "the task was dropped");
    }
}
