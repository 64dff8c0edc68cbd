//! Password hashes: the config holds only PHC strings (argon2id or PBKDF2);
//! `bucketftp hash-password` makes one. Verification is deliberately slow,
//! so the authenticator runs it on the blocking pool.

use password_hash::{PasswordHash, PasswordHasher, SaltString};
use thiserror::Error;

/// Why a configured password hash was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum HashError {
    /// The value is not a PHC string: most likely a plaintext password.
    #[error("password must be a hash, not plaintext: create one with `bucketftp hash-password`")]
    NotAHash,
    /// A PHC string for an algorithm we do not verify.
    #[error("unsupported password hash algorithm {0:?} (use argon2id or pbkdf2-sha256)")]
    Algorithm(String),
}

/// Checks that `hash` is a PHC string we can verify.
pub(crate) fn validate_hash(hash: &str) -> Result<(), HashError> {
    let parsed = PasswordHash::new(hash).map_err(|_| HashError::NotAHash)?;
    match parsed.algorithm.as_str() {
        "argon2id" | "argon2i" | "argon2d" | "pbkdf2-sha256" | "pbkdf2-sha512" => Ok(()),
        other => Err(HashError::Algorithm(other.to_string())),
    }
}

/// Hashes a password with argon2id and a random salt, for the
/// `hash-password` subcommand and for `--user NAME:PASSWORD`.
pub fn hash_password(password: &str) -> Result<String, password_hash::Error> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string());
    // argon2id's ~19 MiB of blocks were just freed on this thread.
    release_freed_memory();
    hash
}

/// Returns the memory this thread just freed to the operating system.
/// mimalloc (the binary's allocator) otherwise keeps freed pages until the
/// thread allocates again, which a blocking-pool thread that just hashed or
/// verified an argon2id password (~19 MiB freed) may never do: a burst of
/// logins left tens of MiB resident for good (docs/benchmarks.md). Under
/// another allocator (the test harness) this touches only mimalloc's own
/// empty heap.
fn release_freed_memory() {
    // SAFETY: mi_collect has no preconditions; it may be called from any
    // thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Verifies in constant time (the hash libraries compare digests with
/// constant-time equality).
pub(crate) fn verify(hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let ok = parsed
        .verify_password(&[&argon2::Argon2::default(), &pbkdf2::Pbkdf2], password)
        .is_ok();
    // argon2id's ~19 MiB of blocks were just freed on this thread.
    release_freed_memory();
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_plaintext_is_refused() {
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert_eq!(validate_hash(&hash), Ok(()));
        assert!(verify(&hash, "s3cret"));
        assert!(!verify(&hash, "wrong"));
        assert_eq!(validate_hash("s3cret"), Err(HashError::NotAHash));
        let pbkdf = pbkdf2::Pbkdf2
            .hash_password(b"pw", &SaltString::generate(&mut rand::rngs::OsRng))
            .unwrap()
            .to_string();
        assert_eq!(validate_hash(&pbkdf), Ok(()));
        assert!(verify(&pbkdf, "pw"));
    }
}
