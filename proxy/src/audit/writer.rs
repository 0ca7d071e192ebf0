//! The audit log's writer thread. Request tasks append finished JSON lines to
//! a shared buffer (a memcpy under a short lock, no syscall); one dedicated
//! thread writes the buffer out in batches. Nothing is dropped: when the
//! writer falls behind by [`MAX_PENDING`] bytes, emitters wait for it
//! (back-pressure), and [`LineWriter::flush`] / dropping the last handle
//! waits until every queued line is written.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Queued bytes at which emitters start waiting for the writer.
const MAX_PENDING: usize = 4 << 20;

/// How long the writer lets lines gather after a write while busy, so a burst
/// becomes one `write` instead of one per request.
const BATCH_WINDOW: Duration = Duration::from_millis(1);

#[derive(Default)]
struct State {
    /// Lines not yet handed to the writer thread.
    buf: Vec<u8>,
    /// Lines queued so far / lines known written (for `flush`).
    queued: u64,
    written: u64,
    /// The writer is parked waiting for data and needs a wake-up.
    idle: bool,
    /// No more lines will come: write what is left and stop.
    closed: bool,
}

struct Queue {
    state: Mutex<State>,
    /// Signals the writer: data arrived, or closing.
    data: Condvar,
    /// Signals emitters and flushers: the writer made progress.
    progress: Condvar,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a thread panicked while holding it; the
        // buffer is still a sequence of whole lines.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A line-oriented writer backed by a thread. Dropping it writes everything
/// queued and joins the thread.
pub struct LineWriter {
    queue: Arc<Queue>,
    thread: Option<JoinHandle<()>>,
}

impl LineWriter {
    /// Starts the writer thread over `out`.
    pub fn spawn(out: Box<dyn Write + Send>) -> std::io::Result<Self> {
        let queue = Arc::new(Queue {
            state: Mutex::new(State::default()),
            data: Condvar::new(),
            progress: Condvar::new(),
        });
        let q = queue.clone();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || run(&q, out))?;
        Ok(LineWriter {
            queue,
            thread: Some(thread),
        })
    }

    /// Queues one complete line (including its newline).
    pub fn push(&self, line: &[u8]) {
        let mut st = self.queue.lock();
        while st.buf.len() >= MAX_PENDING && !st.closed {
            st = self
                .queue
                .progress
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
        st.buf.extend_from_slice(line);
        st.queued += 1;
        if st.idle {
            st.idle = false;
            self.queue.data.notify_one();
        }
    }

    /// Returns once every line queued before the call has been written and
    /// flushed (or the writer failed on it; that is logged).
    pub fn flush(&self) {
        let mut st = self.queue.lock();
        // `push` already woke the writer for anything queued.
        let target = st.queued;
        while st.written < target {
            st = self
                .queue
                .progress
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        {
            let mut st = self.queue.lock();
            st.closed = true;
            self.queue.data.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(q: &Queue, mut out: Box<dyn Write + Send>) {
    let mut batch = Vec::new();
    loop {
        let upto = {
            let mut st = q.lock();
            while st.buf.is_empty() && !st.closed {
                st.idle = true;
                st = q.data.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            st.idle = false;
            if st.buf.is_empty() && st.closed {
                return;
            }
            std::mem::swap(&mut batch, &mut st.buf);
            st.queued
        };
        if let Err(e) = out.write_all(&batch).and_then(|_| out.flush()) {
            tracing::error!(error = %e, bytes = batch.len(), "writing audit records");
        }
        batch.clear();
        {
            let mut st = q.lock();
            st.written = upto;
            q.progress.notify_all();
            if st.closed {
                continue;
            }
        }
        // Busy: let the next lines gather instead of writing one per request.
        std::thread::sleep(BATCH_WINDOW);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let mut g = self.0.lock().expect("test lock");
            g.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.0.lock().expect("test lock").1 += 1;
            Ok(())
        }
    }

    #[test]
    fn flush_waits_for_every_queued_line() {
        let sink = Sink::default();
        let w = LineWriter::spawn(Box::new(sink.clone())).expect("spawn");
        for i in 0..1000 {
            w.push(format!("{i}\n").as_bytes());
        }
        w.flush();
        let text = String::from_utf8(sink.0.lock().expect("lock").0.clone()).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[999], "999");
        let flushes = sink.0.lock().expect("lock").1;
        assert!(
            flushes < 1000,
            "lines were batched, not flushed one by one ({flushes})"
        );
    }

    #[test]
    fn drop_writes_what_is_left_from_many_threads() {
        let sink = Sink::default();
        let w = Arc::new(LineWriter::spawn(Box::new(sink.clone())).expect("spawn"));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        w.push(format!("{t}:{i}\n").as_bytes());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("pusher");
        }
        drop(Arc::into_inner(w).expect("last handle"));
        let text = String::from_utf8(sink.0.lock().expect("lock").0.clone()).expect("utf8");
        assert_eq!(text.lines().count(), 8000, "no line lost or torn");
        for t in 0..4 {
            let mine: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("{t}:")))
                .map(|n| n.parse().expect("whole line"))
                .collect();
            assert_eq!(mine, (0..2000).collect::<Vec<_>>(), "thread {t} in order");
        }
    }

    #[test]
    fn a_stalled_writer_applies_back_pressure_instead_of_dropping() {
        struct Slow(Arc<Mutex<usize>>);
        impl Write for Slow {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_millis(5));
                *self.0.lock().expect("lock") += b.len();
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let total = Arc::new(Mutex::new(0));
        let w = LineWriter::spawn(Box::new(Slow(total.clone()))).expect("spawn");
        let line = vec![b'x'; 64 << 10];
        for _ in 0..160 {
            w.push(&line); // 10 MiB through a 4 MiB queue
        }
        drop(w);
        assert_eq!(*total.lock().expect("lock"), 160 * (64 << 10));
    }
}
