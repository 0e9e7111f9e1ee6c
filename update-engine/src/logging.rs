//! The log line format: every event is one line on stderr,
//! `cairn-update: <message>` (warnings `cairn-update: warning: ...`,
//! errors `cairn-update: error: ...`), without timestamps, levels or
//! targets, so scripts and the QEMU tests can wait for exact lines.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Prefix of every line.
pub const PREFIX: &str = "cairn-update: ";

/// The event formatter (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct LineFormat {
    /// Colour the `warning:` / `error:` tags (terminals only).
    pub ansi: bool,
}

impl<S, N> FormatEvent<S, N> for LineFormat
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
        writer.write_str(PREFIX)?;
        let tag = match *event.metadata().level() {
            Level::ERROR => Some(("error: ", "\x1b[1;31m")),
            Level::WARN => Some(("warning: ", "\x1b[1;33m")),
            _ => None,
        };
        if let Some((tag, colour)) = tag {
            if self.ansi {
                write!(writer, "{colour}{tag}\x1b[0m")?;
            } else {
                writer.write_str(tag)?;
            }
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The log filter: `$CAIRN_UPDATE_LOG` (tracing `EnvFilter` syntax, e.g.
/// `debug`), else `info`.
pub fn env_filter() -> EnvFilter {
    EnvFilter::try_from_env("CAIRN_UPDATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"))
}

/// A subscriber writing [`LineFormat`] lines to `make_writer`.
pub fn subscriber<W>(make_writer: W, ansi: bool, filter: EnvFilter) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .event_format(LineFormat { ansi })
        .with_writer(make_writer)
        .finish()
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_literal() {
        let buf = Buf::default();
        let b = buf.clone();
        let sub = subscriber(move || b.clone(), false, EnvFilter::new("info"));
        tracing::subscriber::with_default(sub, || {
            tracing::info!(
                "applying {} into slot {} ({}): {} ops",
                "2.0",
                4,
                "USR-B",
                130
            );
            tracing::warn!("something odd");
            tracing::error!("it broke");
            tracing::debug!("hidden");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            out,
            "cairn-update: applying 2.0 into slot 4 (USR-B): 130 ops\n\
             cairn-update: warning: something odd\n\
             cairn-update: error: it broke\n"
        );
    }
}
