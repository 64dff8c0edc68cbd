//! The process's log subscriber and the filter that keeps libunftp's and
//! object_store's noise (and secrets) out of it.

use crate::config::{LogConfig, LogFormat};

/// Installs the global log subscriber (text or JSON). libunftp logs through
/// the `log` crate, which `tracing-subscriber` picks up.
///
/// libunftp instruments its handlers with spans whose fields are `Debug`
/// dumps of the whole session (including the parsed `PASS` command), so its
/// spans and info-level chatter are kept at `warn` unless the operator's
/// filter names `libunftp` explicitly. Our audit records cover the same
/// ground without secrets.
///
/// Colour only when stderr is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>): escape codes in a log file or a container's
/// log stream are noise.
pub fn init_logging(log: &LogConfig) {
    let directive = log_directive(&log.level);
    let filter = tracing_subscriber::EnvFilter::try_new(&directive)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_directive("info")));
    let colour = {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// libunftp's CWD handler warns on every failed CWD, but a failed CWD is
/// routine: `curl --ftp-create-dirs` and most GUI clients probe with CWD
/// before MKD. The back-end logs the expected case at debug instead
/// (`ObjectBackend::cwd`), and storage failures behind a CWD at warn.
const CWD_DIRECTIVE: &str = "libunftp::server::controlchan::commands::cwd=error";

/// See [`log_directive`].
const PASS_DIRECTIVE: &str = "libunftp::server::controlchan::commands::pass=error";

/// The effective log filter for an operator's `log.level`.
///
/// libunftp's PASS handler warns about every failed login with the whole
/// user name (a client may send kilobytes of it); our authenticator already
/// writes one line per refusal with the name cut short, so that module is
/// kept at `error`.
///
/// object_store logs every retry at info; what matters of a failing
/// request reaches the log once, from whoever gave up (the audit line, the
/// start-up error), so its own lines start at warn unless the operator's
/// filter names `object_store`.
pub(crate) fn log_directive(level: &str) -> String {
    let mut directive = level.to_string();
    if !level.contains("libunftp") {
        directive.push_str(",libunftp=warn,");
        directive.push_str(PASS_DIRECTIVE);
        directive.push(',');
        directive.push_str(CWD_DIRECTIVE);
    }
    if !level.contains("object_store") {
        directive.push_str(",object_store=warn");
    }
    directive
}
