//! What every session's back-end shares, built once from the config.

use super::download::DownloadSettings;
use super::upload::UploadSettings;

/// Behaviour switches shared by every session.
#[derive(Debug, Clone)]
pub(crate) struct BackendSettings {
    /// How uploads are cut into parts.
    pub upload: UploadSettings,
    /// Most objects a directory rename may touch (each is a copy + delete on
    /// clouds, so an unbounded rename could run for hours).
    pub rename_limit: usize,
    /// Answer MKD of an existing directory with success (some NVRs and
    /// cameras disconnect on 550).
    pub mkd_existing_ok: bool,
    /// How cloud downloads read ahead (fewer ranged GETs under memory
    /// pressure, see [`super::download::open_parallel`]).
    pub download: DownloadSettings,
    /// Most files of one listing whose stored `mtime` is read (a HEAD each).
    pub listing_mtime_limit: usize,
    /// An FTPS upload is complete only at the client's TLS close_notify
    /// (`tls.require_close_notify`, see [`super::close_notify`]).
    pub require_close_notify: bool,
}
