//! The stderr writer thread. Audit records and operational log lines are
//! appended to one shared buffer (a memcpy under a short lock, no syscall);
//! one dedicated thread writes the buffer out in batches, so the two never
//! interleave, whatever stderr is (a file, a pipe, a terminal).
//!
//! What happens when the output misbehaves, as nginx, Envoy and Squid
//! handle their logs, with the trade-off explicit (docs/audit-log.md):
//!
//! - **Slow** (a pipe whose reader lags): back-pressure. When
//!   [`MAX_PENDING`] bytes are queued, emitters wait for the writer.
//! - **Failing** (a full disk, `EIO`, a closed pipe): nothing written is
//!   torn and nothing queued is thrown away. The writer keeps the bytes not
//!   yet written, the rest of a line included, and tries again (every
//!   [`RETRY_MIN`] to [`RETRY_MAX`]); one ERROR line says when writing
//!   started to fail, another every [`REPORT_EVERY`] while it still fails
//!   (with the count), and one INFO line when it works again. Every failed
//!   `write` is counted ([`LineWriter::write_errors`], the
//!   `iron_proxy_audit_write_errors_total` metric): while stderr fails, the
//!   log lines saying so wait in the queue behind the records, and the
//!   metric is what shows it.
//! - **Stuck** (the writer took nothing for [`STALL`] while emitters
//!   waited): the data plane is never held forever by its log. From then
//!   on, lines that find the queue full are dropped and counted
//!   ([`LineWriter::dropped`], the `iron_proxy_audit_dropped_records_total`
//!   metric for audit records) until the writer moves again; then one
//!   ERROR line in the log itself says how many were lost.
//!
//! [`LineWriter::flush`] waits (boundedly) until every queued line is out.

use std::cell::Cell;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Queued bytes at which emitters start waiting for the writer.
const MAX_PENDING: usize = 4 << 20;

/// How long the writer lets lines gather after a write while busy, so a burst
/// becomes one `write` instead of one per request.
const BATCH_WINDOW: Duration = Duration::from_millis(1);

/// How long the writer may take nothing, while emitters wait on a full
/// queue, before the output counts as stuck and full-queue lines are dropped.
pub const STALL: Duration = Duration::from_secs(5);

/// The most one `write` is handed: a slow pipe reader that takes 64 KiB
/// every few seconds shows as progress, not as a stuck output (a blocking
/// `write` of a 4 MiB batch to a pipe returns only once all of it is read).
const WRITE_CHUNK: usize = 64 << 10;

/// First and longest pause between attempts after a failed write.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// How often a failing output is reported again while it keeps failing.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// What a line is, for the drop counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An audit record.
    Audit,
    /// An operational log line.
    Log,
}

#[derive(Default)]
struct State {
    /// Lines not yet handed to the writer thread.
    buf: Vec<u8>,
    /// Lines queued so far / lines known written (for `flush`).
    queued: u64,
    written: u64,
    /// The writer is parked waiting for data and needs a wake-up.
    idle: bool,
    /// Emitters and flushers waiting on `progress`: the writer signals it
    /// only when there are some (a condvar's signal is a system call even
    /// when nobody waits).
    waiting: usize,
    /// No more lines will come: write what is left and stop.
    closed: bool,
    /// When the writer last wrote a byte (or started).
    last_progress: Option<Instant>,
    /// The writer took nothing for [`STALL`] while lines waited: a full
    /// queue drops instead of waiting, until the writer moves again.
    stuck: bool,
    /// Lines dropped since the writer last reported drops (audit, log).
    unreported: (u64, u64),
    /// The output is to be reopened (a log rotation) before the next batch.
    reopen: bool,
}

struct Queue {
    state: Mutex<State>,
    /// [`STALL`], shorter in tests.
    stall: Duration,
    /// Signals the writer: data arrived, or closing.
    data: Condvar,
    /// Signals emitters and flushers: the writer made progress.
    progress: Condvar,
    /// Audit records dropped since start.
    dropped_audit: AtomicU64,
    /// `write` calls that failed since start (their bytes kept and tried again).
    write_errors: AtomicU64,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a thread panicked while holding it; the
        // buffer is still a sequence of whole lines.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

thread_local! {
    /// Set on the writer thread: its own log lines never wait for itself.
    static ON_WRITER: Cell<bool> = const { Cell::new(false) };
}

/// Reopens the output after a log rotation; the writer calls it between
/// whole lines, so no line is split between the old file and the new.
pub type Reopen = Box<dyn FnMut() + Send>;

/// File descriptor 2, written with plain `write(2)` calls. Not
/// `std::io::stderr()`, which reports a write that fails with `EBADF` (fd 2
/// closed, or open for reading only) as done: records would vanish without
/// a trace. Here that is a failure like any other, kept, retried and counted.
struct Fd2;

impl Write for Fd2 {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // SAFETY: `buf` is valid for `buf.len()` bytes; fd 2 is only read
        // from (the kernel's file table), never closed or owned here.
        let n = unsafe { libc::write(2, buf.as_ptr().cast(), buf.len()) };
        usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A line-oriented writer backed by a thread. Dropping it writes everything
/// queued (giving up on an output that fails) and joins the thread.
pub struct LineWriter {
    queue: Arc<Queue>,
    thread: Option<JoinHandle<()>>,
}

/// The process's stderr writer, shared by the audit sink and the
/// operational logs; started on first use. `None` when the thread could not
/// be started (callers then write to stderr directly).
pub fn stderr() -> Option<&'static LineWriter> {
    static STDERR: OnceLock<Option<LineWriter>> = OnceLock::new();
    STDERR
        .get_or_init(|| {
            let reopen: Reopen = Box::new(crate::ops::log_file::reopen_stderr_file);
            LineWriter::spawn_with(Box::new(Fd2), Some(reopen), STALL).ok()
        })
        .as_ref()
}

impl LineWriter {
    /// Starts the writer thread over `out`.
    pub fn spawn(out: Box<dyn Write + Send>) -> std::io::Result<Self> {
        Self::spawn_with(out, None, STALL)
    }

    /// Starts the writer thread over `out`, with what reopens it ([`LineWriter::reopen`]).
    fn spawn_with(
        out: Box<dyn Write + Send>,
        mut reopen: Option<Reopen>,
        stall: Duration,
    ) -> std::io::Result<Self> {
        let queue = Arc::new(Queue {
            stall,
            state: Mutex::new(State {
                last_progress: Some(Instant::now()),
                ..State::default()
            }),
            data: Condvar::new(),
            progress: Condvar::new(),
            dropped_audit: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
        });
        let q = queue.clone();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                ON_WRITER.with(|w| w.set(true));
                run(&q, out, reopen.as_mut())
            })?;
        Ok(LineWriter {
            queue,
            thread: Some(thread),
        })
    }

    /// Queues one complete line (including its newline). Returns false when
    /// the line was dropped: the queue is full and the output stuck.
    pub fn push(&self, line: &[u8], kind: Kind) -> bool {
        let mut st = self.queue.lock();
        // The writer's own lines (a failure, the drop report) are few and
        // must not be lost: they go in even over the limit.
        let on_writer = ON_WRITER.with(Cell::get);
        if st.buf.len() >= MAX_PENDING && !st.closed && !on_writer {
            while st.buf.len() >= MAX_PENDING && !st.closed && !st.stuck {
                let stall = self.queue.stall;
                let since = st.last_progress.map_or(stall, |t| t.elapsed());
                if since >= stall {
                    st.stuck = true;
                    break;
                }
                st.waiting += 1;
                st = self
                    .queue
                    .progress
                    .wait_timeout(st, stall - since)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                st.waiting -= 1;
            }
            if st.buf.len() >= MAX_PENDING && !st.closed {
                match kind {
                    Kind::Audit => {
                        st.unreported.0 += 1;
                        self.queue.dropped_audit.fetch_add(1, Ordering::Relaxed);
                    }
                    Kind::Log => st.unreported.1 += 1,
                }
                return false;
            }
        }
        st.buf.extend_from_slice(line);
        st.queued += 1;
        let wake = std::mem::take(&mut st.idle);
        // Signalled after the lock is released: a writer woken while the
        // emitter still holds it finds the lock taken, spins, sleeps on it,
        // and the emitter's unlock then costs a second system call.
        drop(st);
        if wake {
            self.queue.data.notify_one();
        }
        true
    }

    /// Asks the writer to reopen its output (SIGUSR1 after a log rotation)
    /// once the lines it is writing are out; nothing when it has no way to.
    pub fn reopen(&self) {
        let mut st = self.queue.lock();
        st.reopen = true;
        let wake = std::mem::take(&mut st.idle);
        drop(st);
        if wake {
            self.queue.data.notify_one();
        }
    }

    /// Audit records dropped since start (see the module docs).
    pub fn dropped_audit(&self) -> u64 {
        self.queue.dropped_audit.load(Ordering::Relaxed)
    }

    /// Writes to the output that failed since start (see the module docs).
    pub fn write_errors(&self) -> u64 {
        self.queue.write_errors.load(Ordering::Relaxed)
    }

    /// Waits until every line queued before the call has been written and
    /// flushed, or `timeout` has passed. Returns false on a timeout (the
    /// output is stuck or failing; the lines stay queued).
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.queue.lock();
        // `push` already woke the writer for anything queued.
        let target = st.queued;
        while st.written < target {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st.waiting += 1;
            st = self
                .queue
                .progress
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            st.waiting -= 1;
        }
        true
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        {
            self.queue.lock().closed = true;
            self.queue.data.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(q: &Queue, mut out: Box<dyn Write + Send>, mut reopen: Option<&mut Reopen>) {
    let mut batch = Vec::new();
    // Bytes of `batch` already written; a failed write keeps the rest.
    let mut done = 0;
    let mut upto = 0;
    // The failing spell, if any, and the pause before the next try.
    let mut failing: Option<Failing> = None;
    let mut retry = RETRY_MIN;
    loop {
        if done == batch.len() {
            batch.clear();
            done = 0;
            let mut st = q.lock();
            while st.buf.is_empty() && !st.closed && !st.reopen {
                st.idle = true;
                st = q.data.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            st.idle = false;
            if std::mem::take(&mut st.reopen) {
                // Every line taken so far is out: the old file ends on a
                // whole line, and what comes next goes to the new one.
                drop(st);
                let _ = out.flush();
                if let Some(reopen) = reopen.as_mut() {
                    reopen();
                }
                continue;
            }
            if st.buf.is_empty() && st.closed {
                return;
            }
            std::mem::swap(&mut batch, &mut st.buf);
            upto = st.queued;
        }
        let end = batch.len().min(done + WRITE_CHUNK);
        let res = match out.write(&batch[done..end]) {
            Ok(0) => Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "the output took no bytes",
            )),
            other => other,
        };
        match res {
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if retry_later(q, &mut failing, &mut retry, e) {
                    continue;
                }
                // Closing and the output fails: give up on what is left.
                done = batch.len();
            }
        }
        let _ = out.flush();
        let (dropped, closed, waiting) = {
            let mut st = q.lock();
            st.last_progress = Some(Instant::now());
            st.stuck = false;
            if done == batch.len() {
                st.written = upto;
            }
            (
                std::mem::take(&mut st.unreported),
                st.closed,
                st.waiting > 0,
            )
        };
        // After the lock is released, as in `push`.
        if waiting {
            q.progress.notify_all();
        }
        if let Some(f) = failing.take() {
            retry = RETRY_MIN;
            tracing::info!(
                first_error = %f.first,
                failed_writes = f.errors,
                "writing to stderr works again"
            );
        }
        if dropped != (0, 0) {
            tracing::error!(
                audit_records = dropped.0,
                log_lines = dropped.1,
                stall_seconds = q.stall.as_secs(),
                "stderr took nothing for a while; lines were dropped rather than block requests"
            );
        }
        if done == batch.len() && !closed {
            // Busy: let the next lines gather instead of writing one per request.
            std::thread::sleep(BATCH_WINDOW);
        }
    }
}

/// A spell of failed writes.
struct Failing {
    /// Its first error.
    first: std::io::Error,
    /// Failed writes in it.
    errors: u64,
    /// When it was last reported.
    reported: Instant,
}

/// After a failed write: it is counted; the first failure of a spell is
/// logged, and again every [`REPORT_EVERY`] while the spell lasts (the
/// lines wait in the queue, so they appear once the output works again),
/// then the writer pauses and tries again. Returns false when the writer
/// is closing: nothing more will be tried.
fn retry_later(
    q: &Queue,
    failing: &mut Option<Failing>,
    retry: &mut Duration,
    e: std::io::Error,
) -> bool {
    q.write_errors.fetch_add(1, Ordering::Relaxed);
    if q.lock().closed {
        return false;
    }
    match failing {
        None => {
            tracing::error!(error = %e, "writing to stderr failed; audit records are kept and written when it works again");
            *failing = Some(Failing {
                first: e,
                errors: 1,
                reported: Instant::now(),
            });
        }
        Some(f) => {
            f.errors += 1;
            if f.reported.elapsed() >= REPORT_EVERY {
                f.reported = Instant::now();
                tracing::error!(
                    error = %e,
                    first_error = %f.first,
                    failed_writes = f.errors,
                    "writing to stderr still fails; audit records are kept and written when it works again"
                );
            }
        }
    }
    std::thread::sleep(*retry);
    *retry = (*retry * 2).min(RETRY_MAX);
    true
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
            w.push(format!("{i}\n").as_bytes(), Kind::Audit);
        }
        assert!(w.flush(Duration::from_secs(10)));
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

    /// A sink whose writes go to the file `Switch` currently names; reopening
    /// moves it to the next one, as SIGUSR1 moves stderr after a rotation.
    #[derive(Clone, Default)]
    struct Switch(Arc<Mutex<Vec<Vec<u8>>>>);
    impl Write for Switch {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let mut files = self.0.lock().expect("test lock");
            if files.is_empty() {
                files.push(Vec::new());
            }
            // A short write now and then: a line may need more than one.
            let n = b.len().min(777);
            files.last_mut().expect("a file").extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_reopen_falls_between_whole_lines_and_loses_none() {
        let sink = Switch::default();
        let files = sink.0.clone();
        let reopen: Reopen = Box::new(move || files.lock().expect("test lock").push(Vec::new()));
        let w = Arc::new(
            LineWriter::spawn_with(Box::new(sink.clone()), Some(reopen), STALL).expect("spawn"),
        );
        let pusher = {
            let w = w.clone();
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    w.push(
                        format!("line {i} {}\n", "x".repeat(i % 300)).as_bytes(),
                        Kind::Audit,
                    );
                }
            })
        };
        for _ in 0..20 {
            w.reopen();
            std::thread::sleep(Duration::from_millis(2));
        }
        pusher.join().expect("pusher");
        assert!(w.flush(Duration::from_secs(10)));
        let files = sink.0.lock().expect("lock").clone();
        assert!(files.len() > 2, "reopened: {} files", files.len());
        let mut all = Vec::new();
        for f in &files {
            let text = String::from_utf8(f.clone()).expect("utf8");
            assert!(
                text.is_empty() || text.ends_with('\n'),
                "a file ends mid-line"
            );
            all.extend(
                text.lines()
                    .map(|l| l.split(' ').nth(1).expect("n").parse::<usize>().expect("n")),
            );
        }
        assert_eq!(
            all,
            (0..20_000).collect::<Vec<_>>(),
            "every line once, in order"
        );
    }

    #[test]
    fn a_line_pushed_to_an_idle_writer_wakes_it() {
        let sink = Sink::default();
        let w = LineWriter::spawn(Box::new(sink.clone())).expect("spawn");
        for round in 0..20 {
            // Past the batch window, so the writer is parked on its condvar.
            std::thread::sleep(BATCH_WINDOW * 5);
            w.push(format!("{round}\n").as_bytes(), Kind::Audit);
            // flush only waits: it never wakes the writer itself.
            assert!(
                w.flush(Duration::from_secs(5)),
                "round {round}: not written"
            );
        }
        let text = String::from_utf8(sink.0.lock().expect("lock").0.clone()).expect("utf8");
        assert_eq!(text.lines().count(), 20);
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
                        w.push(format!("{t}:{i}\n").as_bytes(), Kind::Audit);
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
            assert!(w.push(&line, Kind::Audit)); // 10 MiB through a 4 MiB queue
        }
        drop(w);
        assert_eq!(*total.lock().expect("lock"), 160 * (64 << 10));
    }

    /// Accepts `room` bytes, then fails with ENOSPC until `room` grows again.
    #[derive(Clone, Default)]
    struct Disk(Arc<Mutex<(Vec<u8>, usize, usize)>>);
    impl Write for Disk {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let mut g = self.0.lock().expect("test lock");
            let room = g.1.saturating_sub(g.0.len());
            if room == 0 {
                g.2 += 1;
                return Err(std::io::Error::from_raw_os_error(28));
            }
            let n = room.min(b.len());
            g.0.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_output_keeps_the_rest_and_writes_it_once_there_is_room() {
        let disk = Disk::default();
        disk.0.lock().expect("lock").1 = 1000; // room for a dozen lines and a piece
        let w = LineWriter::spawn(Box::new(disk.clone())).expect("spawn");
        for i in 0..200 {
            assert!(w.push(
                format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(60)).as_bytes(),
                Kind::Audit
            ));
        }
        assert!(!w.flush(Duration::from_millis(300)), "nothing more fits");
        assert!(disk.0.lock().expect("lock").2 > 0, "writes were refused");
        disk.0.lock().expect("lock").1 = usize::MAX; // space freed
        assert!(
            w.flush(Duration::from_secs(10)),
            "written once there is room"
        );
        let text = String::from_utf8(disk.0.lock().expect("lock").0.clone()).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 200, "no line lost");
        for (i, l) in lines.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(l).expect("a whole line");
            assert_eq!(v["n"], i, "in order, none torn");
        }
        assert_eq!(w.dropped_audit(), 0);
        let refused = disk.0.lock().expect("lock").2;
        assert_eq!(
            w.write_errors(),
            refused as u64,
            "every failed write counted"
        );
    }

    #[test]
    fn a_stuck_output_drops_and_counts_instead_of_blocking_forever() {
        // An output that blocks until released, like a pipe nobody reads.
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        struct Stuck(Arc<(Mutex<bool>, Condvar)>, Arc<Mutex<usize>>);
        impl Write for Stuck {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                let (m, c) = &*self.0;
                let mut open = m.lock().expect("lock");
                while !*open {
                    open = c.wait(open).expect("wait");
                }
                *self.1.lock().expect("lock") += b.len();
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let total = Arc::new(Mutex::new(0));
        let stall = Duration::from_millis(200);
        let w = LineWriter::spawn_with(Box::new(Stuck(gate.clone(), total.clone())), None, stall)
            .expect("spawn");
        let line = vec![b'x'; 64 << 10];
        // Opens the gate when the test ends, even on a failed assertion, so
        // that dropping the writer (which joins its thread) cannot hang.
        struct Open(Arc<(Mutex<bool>, Condvar)>);
        impl Drop for Open {
            fn drop(&mut self) {
                *self.0 .0.lock().unwrap_or_else(|p| p.into_inner()) = true;
                self.0 .1.notify_all();
            }
        }
        let _open = Open(gate.clone());
        let mut kept = 0;
        // 12 MiB into a 4 MiB queue over a writer that takes nothing (its
        // first batch is at most 4 MiB too): without the stall rule this
        // never returns.
        for _ in 0..192 {
            if w.push(&line, Kind::Audit) {
                kept += 1;
            }
        }
        let dropped = w.dropped_audit();
        assert!(
            dropped > 0,
            "lines dropped once the output counted as stuck"
        );
        assert_eq!(kept + dropped, 192, "every line either kept or counted");
        assert!(
            !w.flush(Duration::from_millis(100)),
            "a stuck output does not flush"
        );
        // The output moves again: what was kept is written.
        *gate.0.lock().expect("lock") = true;
        gate.1.notify_all();
        assert!(w.flush(Duration::from_secs(10)));
        assert_eq!(*total.lock().expect("lock"), kept as usize * (64 << 10));
        // And a full queue waits again rather than dropping.
        assert!(w.push(&line, Kind::Audit));
    }

    #[test]
    fn a_slow_reader_that_keeps_reading_is_waited_for_not_dropped() {
        // Takes any write whole, but at 64 KiB per 10 ms, as a blocking pipe
        // write to a slow reader does: a 4 MiB batch handed over in one call
        // would take 640 ms, over the stall limit below.
        struct Paced(Arc<Mutex<usize>>);
        impl Write for Paced {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                let chunks = b.len().div_ceil(64 << 10) as u32;
                std::thread::sleep(Duration::from_millis(10) * chunks);
                *self.0.lock().expect("lock") += b.len();
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let total = Arc::new(Mutex::new(0));
        let w = LineWriter::spawn_with(
            Box::new(Paced(total.clone())),
            None,
            Duration::from_millis(400),
        )
        .expect("spawn");
        let line = vec![b'x'; 64 << 10];
        // 12.5 MiB: the queue fills while a 4 MiB batch is being written.
        for _ in 0..200 {
            assert!(
                w.push(&line, Kind::Audit),
                "a moving reader gets back-pressure"
            );
        }
        assert!(w.flush(Duration::from_secs(30)));
        assert_eq!(w.dropped_audit(), 0);
        assert_eq!(*total.lock().expect("lock"), 200 * (64 << 10));
    }
}
