//! libunftp 0.24.0, the FTP engine of bucketftp, with our fixes.
//!
//! The code is upstream's, from the crate cargo downloads; build.rs applies
//! `engine/patches/*.patch` to it and this file compiles the result. See
//! engine/README.md (how to write a patch) and docs/upstream.md (what each
//! patch fixes).

// Upstream's code follows upstream's lint settings (libunftp's own CI runs
// clippy on it); a newer toolchain's lints on lines we did not write must not
// fail our build. Our changes are reviewed as the patch files.
#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/src/lib.rs"));
