//! Log output: JSON lines (default) or human-readable, level from `RUST_LOG`,
//! on stderr so that command output on stdout stays parseable. Tests read
//! what the real binary writes there.

use tracing::Subscriber;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Default filter when `RUST_LOG` is unset.
const DEFAULT_FILTER: &str = "info,sqlx=warn";

/// Lines that may wait for the writer thread before loggers block (never
/// dropped: every delivery keeps its log line).
const LOG_QUEUE_LINES: usize = 65_536;

/// The subscriber the service logs through, writing to `writer`.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer),
            ),
        ),
        LogFormat::Pretty => {
            Box::new(registry.with(tracing_subscriber::fmt::layer().with_writer(writer)))
        }
    }
}

/// Installs the global subscriber writing to stderr; the level comes from
/// `RUST_LOG`. Lines are written by a background thread that drains every
/// queued line into one buffered write, so a busy server makes one system
/// call per batch of lines instead of one per request, and an idle one
/// still writes each line at once. Keep the guard alive until exit:
/// dropping it flushes what is queued.
pub fn init(format: LogFormat) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("imggo-log-writer")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // A second installation (tests) keeps the first.
    let _ = tracing::subscriber::set_global_default(subscriber(format, filter, writer));
    guard
}
