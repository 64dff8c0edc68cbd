//! FTP commands libunftp does not implement, served through the engine's
//! extension-command hook (`engine/patches/0201-extension-commands.patch`,
//! `ServerBuilder::command`):
//!
//! - `HASH <path>` and `OPTS HASH [<algorithm>]` (draft-bryan-ftpext-hash-02),
//!   listed by FEAT as `HASH SHA-256*;SHA-1;MD5;CRC32` (`*` = the session's
//!   current choice);
//! - `XSHA256`, `XSHA1`, `XMD5`, `XCRC <path>` (WinSCP, Total Commander,
//!   Serv-U and proftpd's mod_digest): the whole file's digest;
//! - `MFMT <YYYYMMDDHHMMSS> <path>` (draft-somers-ftp-mfxx) and the
//!   two-argument `MDTM <time> <path>` that WinSCP and others send: the
//!   file's time on `file://`, `mtime` metadata on object stores
//!   ([`crate::backend::modified_time`]); listed in FEAT.
//!
//! The answers come from [`ObjectBackend::checksum`]: SHA-256 and CRC-32 from
//! the object's stored metadata (one HEAD, no body), anything else by
//! streaming the object. One handler set exists per session (libunftp's
//! server is built per connection), so `OPTS HASH` state lives here.

use crate::backend::reply_codes::reply_code_of;
use crate::backend::ObjectBackend;
use crate::backend::SessionUser;
use crate::integrity::Algorithm;
use async_trait::async_trait;
use libunftp::options::{Reply, ReplyCode, SiteCommandContext, SiteCommandHandler};
use libunftp::ServerBuilder;
use std::path::Path;
use std::sync::{Arc, Mutex};
use unftp_core::storage::Error as StorageError;

/// What a registered command does.
#[derive(Debug, Clone, Copy)]
enum Verb {
    /// `HASH`: the session's algorithm, draft reply format.
    Hash,
    /// `OPTS HASH`: show or choose the session's algorithm.
    OptsHash,
    /// `XSHA256` & co: a fixed algorithm, `250 <hex>`.
    Fixed(Algorithm),
    /// `MFMT` (and `MDTM <time> <path>`).
    Mfmt,
}

/// One extension command of one session.
#[derive(Debug)]
struct Command {
    verb: Verb,
    /// The algorithm `HASH` uses in this session.
    selected: Arc<Mutex<Algorithm>>,
    /// Whether FEAT lists MFMT (every store of the object_store engine can
    /// set times; the unftp-sbe-gcs engine cannot).
    mfmt_listed: bool,
}

/// The algorithms HASH offers, in FEAT order.
const OFFERED: [Algorithm; 4] = [
    Algorithm::Sha256,
    Algorithm::Sha1,
    Algorithm::Md5,
    Algorithm::Crc32,
];

/// Adds the extension commands to a session's server. `mfmt_listed`:
/// whether FEAT announces MFMT (clients such as rclone set a time after
/// every upload when it does, and fail the copy if it is refused).
pub(crate) fn register(
    builder: ServerBuilder<ObjectBackend, SessionUser>,
    mfmt_listed: bool,
) -> ServerBuilder<ObjectBackend, SessionUser> {
    let selected = Arc::new(Mutex::new(Algorithm::Sha256));
    let command = |verb| Command {
        verb,
        selected: selected.clone(),
        mfmt_listed,
    };
    builder
        .command("HASH", command(Verb::Hash))
        .command("OPTS HASH", command(Verb::OptsHash))
        .command("XSHA256", command(Verb::Fixed(Algorithm::Sha256)))
        .command("XSHA1", command(Verb::Fixed(Algorithm::Sha1)))
        .command("XMD5", command(Verb::Fixed(Algorithm::Md5)))
        .command("XCRC", command(Verb::Fixed(Algorithm::Crc32)))
        .command("MFMT", command(Verb::Mfmt))
}

impl Command {
    fn selected(&self) -> Algorithm {
        // A poisoned lock only means another command panicked mid-update of
        // a plain Copy value: the value itself is still whole.
        *self.selected.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn select(&self, algorithm: Algorithm) {
        *self.selected.lock().unwrap_or_else(|e| e.into_inner()) = algorithm;
    }
}

/// The reply for a storage error, with the code libunftp would use.
fn error_reply(err: &StorageError) -> Reply {
    let code = match reply_code_of(err.kind()) {
        450 => ReplyCode::TransientFileError,
        451 => ReplyCode::LocalError,
        452 => ReplyCode::OutOfSpace,
        502 => ReplyCode::CommandNotImplemented,
        552 => ReplyCode::ExceededStorageAllocation,
        553 => ReplyCode::BadFileName,
        _ => ReplyCode::FileError,
    };
    Reply::new_with_string(code, crate::errors::error_chain(err))
}

#[async_trait]
impl SiteCommandHandler<ObjectBackend, SessionUser> for Command {
    async fn handle(&self, ctx: &SiteCommandContext<ObjectBackend, SessionUser>) -> Reply {
        let Some(user) = ctx.user.as_ref().as_ref() else {
            return Reply::new(ReplyCode::NotLoggedIn, "Please authenticate");
        };
        let argument = ctx.arguments.trim_end_matches(['\r', '\n']);
        match self.verb {
            Verb::OptsHash => {
                if argument.is_empty() {
                    return Reply::new(ReplyCode::CommandOkay, self.selected().name());
                }
                match argument.parse::<Algorithm>() {
                    Ok(algorithm) => {
                        self.select(algorithm);
                        Reply::new(ReplyCode::CommandOkay, algorithm.name())
                    }
                    Err(e) => Reply::new_with_string(
                        ReplyCode::CommandNotImplementedForParameter,
                        e.to_string(),
                    ),
                }
            }
            Verb::Hash | Verb::Fixed(_) => {
                if argument.is_empty() {
                    return Reply::new(ReplyCode::ParameterSyntaxError, "a file name is needed");
                }
                let algorithm = match self.verb {
                    Verb::Fixed(algorithm) => algorithm,
                    _ => self.selected(),
                };
                let path = ctx.cwd.join(argument);
                match ctx.storage.checksum(user, &path, algorithm).await {
                    Ok((digest, size)) => match self.verb {
                        // draft-bryan-ftpext-hash-02 §3.1: algorithm, byte
                        // range (start-end, end exclusive), hash, name.
                        Verb::Hash => Reply::new_with_string(
                            ReplyCode::FileStatus,
                            format!("{} 0-{size} {digest} {argument}", algorithm.name()),
                        ),
                        _ => Reply::new_with_string(ReplyCode::FileActionOkay, digest),
                    },
                    Err(e) => error_reply(&e),
                }
            }
            Verb::Mfmt => {
                let Some((time, name)) = argument.split_once(' ') else {
                    return Reply::new(
                        ReplyCode::ParameterSyntaxError,
                        "expected MFMT YYYYMMDDHHMMSS path",
                    );
                };
                let Some(when) = parse_mfmt_time(time) else {
                    return Reply::new(
                        ReplyCode::ParameterSyntaxError,
                        "expected a UTC time as YYYYMMDDHHMMSS",
                    );
                };
                let path = ctx.cwd.join(name);
                match ctx.storage.set_modified(user, Path::new(&path), when).await {
                    Ok(()) => Reply::new_with_string(
                        ReplyCode::FileStatus,
                        format!("Modify={time}; {name}"),
                    ),
                    Err(e) => error_reply(&e),
                }
            }
        }
    }

    fn feature(&self) -> Option<String> {
        match self.verb {
            Verb::Hash => {
                let selected = self.selected();
                let list: Vec<String> = OFFERED
                    .iter()
                    .map(|a| {
                        let star = if *a == selected { "*" } else { "" };
                        format!("{}{star}", a.name())
                    })
                    .collect();
                Some(format!("HASH {}", list.join(";")))
            }
            // RFC 3659-style FEAT line of draft-somers-ftp-mfxx.
            Verb::Mfmt if self.mfmt_listed => Some("MFMT".to_string()),
            Verb::OptsHash | Verb::Fixed(_) | Verb::Mfmt => None,
        }
    }
}

/// `YYYYMMDDHHMMSS` (optionally `.fff`, up to nanoseconds), UTC, as MFMT
/// sends it.
fn parse_mfmt_time(text: &str) -> Option<std::time::SystemTime> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let naive = chrono::NaiveDateTime::parse_from_str(whole, "%Y%m%d%H%M%S").ok()?;
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: u32 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().ok()?
    };
    let time: std::time::SystemTime = naive.and_utc().into();
    Some(time + std::time::Duration::from_nanos(u64::from(nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mfmt_times() {
        let t = parse_mfmt_time("20240102030405").unwrap();
        let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 1_704_164_645);
        let frac = parse_mfmt_time("20240102030405.123").unwrap();
        assert_eq!(
            frac.duration_since(t).unwrap(),
            std::time::Duration::from_millis(123)
        );
        assert!(parse_mfmt_time("20240102030405.1x").is_none());
        assert!(parse_mfmt_time("2024-01-02").is_none());
        assert!(parse_mfmt_time("20241302030405").is_none());
    }

    #[test]
    fn feat_line_marks_the_selected_algorithm() {
        let command = Command {
            verb: Verb::Hash,
            selected: Arc::new(Mutex::new(Algorithm::Sha256)),
            mfmt_listed: true,
        };
        assert_eq!(
            command.feature().as_deref(),
            Some("HASH SHA-256*;SHA-1;MD5;CRC32")
        );
        command.select(Algorithm::Md5);
        assert_eq!(
            command.feature().as_deref(),
            Some("HASH SHA-256;SHA-1;MD5*;CRC32")
        );
    }
}
