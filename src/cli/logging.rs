//! Logging set-up for `run` and `demo`.

use anyhow::Context as _;

use crate::config::{AccessTarget, LogFormat, LogSettings};

/// Diagnostics go to stderr (text or JSON, filtered by `[log] level` or
/// `RUST_LOG`); access-log lines (target `certgate::access`) go to their
/// own writer, unfiltered by level, as bare lines (logfmt or JSON).
pub(super) fn init_logging(log: &LogSettings) -> anyhow::Result<()> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let not_access = tracing_subscriber::filter::filter_fn(|m| m.target() != "certgate::access");
    let diag = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let diag = match log.format {
        LogFormat::Json => diag
            .json()
            .with_filter(filter)
            .with_filter(not_access)
            .boxed(),
        LogFormat::Text => diag.with_filter(filter).with_filter(not_access).boxed(),
    };
    crate::access::set_format(if log.access_json {
        crate::access::Format::Json
    } else {
        crate::access::Format::Logfmt
    });
    let only_access =
        || tracing_subscriber::filter::filter_fn(|m| m.target() == "certgate::access");
    let bare = || {
        tracing_subscriber::fmt::layer()
            .without_time()
            .with_level(false)
            .with_target(false)
            .with_ansi(false)
    };
    crate::access::set_off(matches!(log.access, AccessTarget::Off));
    let access = match &log.access {
        AccessTarget::Off => None,
        AccessTarget::Stdout => Some(
            bare()
                .with_writer(std::io::stdout)
                .with_filter(only_access())
                .boxed(),
        ),
        AccessTarget::Stderr => Some(
            bare()
                .with_writer(std::io::stderr)
                .with_filter(only_access())
                .boxed(),
        ),
        AccessTarget::File(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| {
                    format!("log.access: cannot open {} for appending", path.display())
                })?;
            Some(
                bare()
                    .with_writer(std::sync::Mutex::new(file))
                    .with_filter(only_access())
                    .boxed(),
            )
        }
    };
    let _ = tracing_subscriber::registry()
        .with(diag)
        .with(access)
        .try_init();
    Ok(())
}
