//! Log output: JSON lines (default) or human-readable, level from `RUST_LOG`,
//! on stderr so that command output on stdout stays parseable. Tests read
//! what the real binary writes there.

mod json_lines;

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Default filter when `RUST_LOG` is unset.
const DEFAULT_FILTER: &str = "info,sqlx=warn";

/// The subscriber the service logs through, writing to `writer`. `colour`
/// lets the `pretty` format use ANSI colours (see [`colour_on_stderr`]).
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    colour: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(json_lines::JsonLines)
                    .with_writer(writer),
            ),
        ),
        LogFormat::Pretty => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(colour)
                    .with_writer(writer),
            ),
        ),
    }
}

/// Installs the global subscriber writing to stderr; the level comes from
/// `RUST_LOG`. Keep the guard alive until exit: dropping it writes out what
/// is buffered.
pub fn init(format: LogFormat) -> LogGuard {
    let (writer, guard) = BatchedWriter::spawn(std::io::stderr());
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let colour = colour_on_stderr();
    // A second installation (tests) keeps the first.
    let _ = tracing::subscriber::set_global_default(subscriber(format, filter, writer, colour));
    guard
}

/// Colour codes only for a person at a terminal: written into a file or a
/// pipe they are noise, and `NO_COLOR` (any non-empty value, see
/// no-color.org) turns them off everywhere.
pub fn colour_on_stderr() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// How long a line may wait to be written with the lines after it.
const FLUSH_INTERVAL: Duration = Duration::from_millis(10);

/// Buffered bytes past which new lines are dropped (and counted) instead of
/// buffered: a stalled stderr (a full pipe, a stuck log shipper) must never
/// block a request, and memory must not grow without bound.
const MAX_BUFFERED: usize = 8 << 20;

/// How long shutdown waits for buffered lines to be written out; a stalled
/// stderr must not keep the process from exiting.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Lines dropped since start because the buffer was full.
static LINES_DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Log lines dropped so far (exported as `imggo_log_lines_dropped_total`).
pub fn lines_dropped() -> u64 {
    LINES_DROPPED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Log lines go into one shared buffer; a background thread writes it out
/// at most every [`FLUSH_INTERVAL`], in one system call. A busy server
/// (thousands of access lines a second) thus makes a hundred writes and
/// wakeups a second instead of one per line, and a line from an idle one
/// still appears within the interval.
#[derive(Clone)]
pub struct BatchedWriter {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<Buffer>,
    /// Wakes the writer thread: first line into an empty buffer, or close.
    pending: Condvar,
}

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    closed: bool,
}

/// Stops the writer thread, writing out every buffered line (for at most
/// [`FINAL_FLUSH_TIMEOUT`]), when dropped.
#[must_use = "dropping the guard stops log output"]
pub struct LogGuard {
    shared: Arc<Shared>,
    /// Says when the writer thread has written everything and stopped.
    finished: Option<std::sync::mpsc::Receiver<()>>,
}

impl BatchedWriter {
    /// Starts the writer thread over `out`.
    pub fn spawn<W: Write + Send + 'static>(out: W) -> (Self, LogGuard) {
        let shared = Arc::new(Shared {
            state: Mutex::new(Buffer::default()),
            pending: Condvar::new(),
        });
        let worker = shared.clone();
        let (done, finished) = std::sync::mpsc::channel();
        let started = std::thread::Builder::new()
            .name("imggo-log-writer".into())
            .spawn(move || {
                worker.run(out);
                let _ = done.send(());
            });
        if started.is_err() {
            // No thread: loggers write through themselves (see `write`).
            lock(&shared.state).closed = true;
        }
        let guard = LogGuard {
            shared: shared.clone(),
            finished: started.ok().map(|_| finished),
        };
        (Self { shared }, guard)
    }
}

fn lock(state: &Mutex<Buffer>) -> MutexGuard<'_, Buffer> {
    // A logger that panicked mid-append leaves at worst a partial line.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn run(&self, mut out: impl Write) {
        let mut spare = Vec::with_capacity(64 * 1024);
        loop {
            let mut state = lock(&self.state);
            while state.bytes.is_empty() && !state.closed {
                state = self
                    .pending
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if !state.closed {
                // Let the lines that follow this one join it.
                state = self
                    .pending
                    .wait_timeout(state, FLUSH_INTERVAL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut state.bytes, &mut spare);
            let closed = state.closed;
            drop(state);
            // Nowhere to report a failed write to stderr.
            let _ = out.write_all(&spare).and_then(|()| out.flush());
            spare.clear();
            if spare.capacity() > MAX_BUFFERED {
                spare.shrink_to(64 * 1024);
            }
            if closed && lock(&self.state).bytes.is_empty() {
                return;
            }
        }
    }
}

impl Write for BatchedWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut state = lock(&self.shared.state);
        if state.closed {
            // Shutting down (or no writer thread): straight to stderr.
            drop(state);
            return io::stderr().write(line);
        }
        if state.bytes.len() > MAX_BUFFERED {
            drop(state);
            LINES_DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(line.len());
        }
        let was_empty = state.bytes.is_empty();
        state.bytes.extend_from_slice(line);
        drop(state);
        if was_empty {
            self.shared.pending.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedWriter {
    type Writer = BatchedWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.pending.notify_one();
        if let Some(finished) = self.finished.take() {
            // A writer stuck on a full pipe is left behind: exiting matters more.
            let _ = finished.recv_timeout(FINAL_FLUSH_TIMEOUT);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Collects what the writer thread writes, and how many writes it made.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut s = self.0.lock().unwrap();
            s.0.extend_from_slice(buf);
            s.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_and_in_few_writes() {
        let sink = Sink::default();
        let (writer, guard) = BatchedWriter::spawn(sink.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        w.write_all(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let (bytes, writes) = sink.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let (t, i) = line.split_once(' ').unwrap();
            let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[t], "thread {t}'s lines out of order or lost");
            next[t] += 1;
        }
        assert_eq!(next, [5_000; 4], "every line written once");
        assert!(writes < 2_000, "{writes} writes for 20,000 lines");
    }

    /// An output that accepts nothing until released: a pipe nobody reads.
    struct Stalled(std::sync::mpsc::Receiver<()>);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.0.recv();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_lines_instead_of_blocking_loggers() {
        let (release, stalled) = std::sync::mpsc::channel();
        let (writer, guard) = BatchedWriter::spawn(Stalled(stalled));
        let dropped_before = lines_dropped();
        let line = vec![b'x'; 1023];
        // Four times the buffer's bound, from another thread: if a logger
        // blocked, `done` would never arrive.
        let (done, logged) = std::sync::mpsc::channel();
        let mut w = writer.clone();
        std::thread::spawn(move || {
            for _ in 0..4 * MAX_BUFFERED / 1024 {
                w.write_all(&line).unwrap();
                w.write_all(b"\n").unwrap();
            }
            let _ = done.send(());
        });
        logged
            .recv_timeout(Duration::from_secs(20))
            .expect("a logger blocked on a stalled output");
        assert!(
            lines_dropped() > dropped_before,
            "lines past the bound are counted as dropped"
        );
        // Shutdown does not hang on the stalled output either.
        let (dropped, guard_gone) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(guard);
            let _ = dropped.send(());
        });
        guard_gone
            .recv_timeout(Duration::from_secs(20))
            .expect("dropping the guard hung on a stalled output");
        drop(release);
    }

    #[test]
    fn a_lone_line_is_written_without_waiting_for_more() {
        let sink = Sink::default();
        let (mut writer, _guard) = BatchedWriter::spawn(sink.clone());
        writer.write_all(b"alone\n").unwrap();
        // Waits for an event that must happen on its own (bounded, so a
        // regression fails instead of hanging).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().0 != b"alone\n" {
            assert!(std::time::Instant::now() < deadline, "line never written");
            std::thread::yield_now();
        }
    }
}
