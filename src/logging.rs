//! keywarden's own log lines on stderr: `keywarden: level: message` or JSON
//! lines. Messages never carry values: call sites name refs and ids only.

use std::fmt;
use std::sync::OnceLock;

use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{span, Dispatch, Event, Level, Metadata, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `keywarden: warning: ...`
    Text,
    /// One JSON object per line.
    Json,
}

struct Text;

impl<S, N> FormatEvent<S, N> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        write!(writer, "keywarden: {level}: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The global subscriber: it filters by level itself and builds the real
/// formatter (tracing-subscriber's, whose registry allocates its tables up
/// front) on the first event or span that passes, so a run that logs
/// nothing never pays for it.
struct Lazy {
    max: LevelFilter,
    make: fn() -> Dispatch,
    inner: OnceLock<Dispatch>,
}

impl Lazy {
    fn inner(&self) -> &Dispatch {
        self.inner.get_or_init(self.make)
    }
}

impl Subscriber for Lazy {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.max >= *meta.level() {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        self.max >= *meta.level()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, span: &span::Attributes<'_>) -> span::Id {
        self.inner().new_span(span)
    }

    fn record(&self, span: &span::Id, values: &span::Record<'_>) {
        self.inner().record(span, values);
    }

    fn record_follows_from(&self, span: &span::Id, follows: &span::Id) {
        self.inner().record_follows_from(span, follows);
    }

    fn event(&self, event: &Event<'_>) {
        self.inner().event(event);
    }

    fn enter(&self, span: &span::Id) {
        self.inner().enter(span);
    }

    fn exit(&self, span: &span::Id) {
        self.inner().exit(span);
    }

    fn clone_span(&self, id: &span::Id) -> span::Id {
        self.inner().clone_span(id)
    }

    fn try_close(&self, id: span::Id) -> bool {
        self.inner().try_close(id)
    }
}

/// Where lines go: stderr, each formatted line (one `write` call per
/// event) run through the records' matcher first
/// ([`crate::redact::live::scrub_record`]), so a value that reached a message
/// by mistake is masked like in the child's output.
#[derive(Debug)]
pub struct LineWriter;

impl std::io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        match crate::redact::live::scrub_record(&text) {
            Some(mut clean) => {
                let written = std::io::stderr().write_all(clean.as_bytes());
                zeroize::Zeroize::zeroize(&mut clean);
                written?;
            }
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn line_writer() -> LineWriter {
    LineWriter
}

/// What both formats share: stderr through [`LineWriter`], no colours, no
/// filter of its own ([`Lazy`] filters).
fn builder() -> tracing_subscriber::fmt::SubscriberBuilder<
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    LevelFilter,
    fn() -> LineWriter,
> {
    tracing_subscriber::fmt()
        .with_writer(line_writer as fn() -> LineWriter)
        .with_max_level(LevelFilter::TRACE)
        .with_ansi(false)
}

fn text_formatter() -> Dispatch {
    Dispatch::new(builder().event_format(Text).finish())
}

fn json_formatter() -> Dispatch {
    Dispatch::new(builder().json().with_current_span(false).finish())
}

/// Install the global subscriber. `-q` shows errors only; the default is
/// warnings; `-v` info, `-vv` debug.
pub fn init(format: LogFormat, verbose: u8, quiet: bool) {
    let max = match (quiet, verbose) {
        (true, _) => LevelFilter::ERROR,
        (false, 0) => LevelFilter::WARN,
        (false, 1) => LevelFilter::INFO,
        (false, _) => LevelFilter::DEBUG,
    };
    let make = match format {
        LogFormat::Text => text_formatter,
        LogFormat::Json => json_formatter,
    };
    let _ = tracing::subscriber::set_global_default(Lazy {
        max,
        make,
        inner: OnceLock::new(),
    });
}
