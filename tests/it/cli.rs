//! The command-line contract: flags, subcommands, start-up errors, and
//! every command block of the README run as written, on the real binary.

use crate::common;

mod logs;
mod readme;
mod storage_errors;

use std::process::Command;

fn bucketftp() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bucketftp"));
    c.env_remove("BUCKETFTP_CONFIG");
    c
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run bucketftp");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn example(name: &str) -> String {
    format!("{}/docs/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_example_config_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["local.toml", "s3.toml", "gcs.toml", "azure.toml"] {
        let mut cmd = bucketftp();
        cmd.args(["check-config", "--config", &example(name)]);
        if name == "local.toml" {
            // The local example names /var/lib/bucketftp; keep the test in
            // its own directory.
            cmd.env(
                "BUCKETFTP__STORAGE__URL",
                format!("file://{}", dir.path().display()),
            );
        }
        let (ok, out, err) = run(&mut cmd);
        assert!(ok, "{name}: {err}");
        assert!(out.contains("configuration ok"), "{name}: {out}");
    }
}

#[test]
fn invalid_values_name_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "BUCKETFTP__SERVER__PASSIVE_PORTS",
            "60000-50000",
            "server.passive_ports",
        ),
        (
            "BUCKETFTP__SERVER__LISTEN",
            "not-an-address",
            "server.listen",
        ),
        ("BUCKETFTP__STORAGE__PART_SIZE", "1MiB", "storage.part_size"),
        ("BUCKETFTP__STORAGE__URL", "ftp://elsewhere", "ftp"),
        (
            "BUCKETFTP__SERVER__IDLE_TIMEOUT",
            "soon",
            "server.idle_timeout",
        ),
    ];
    for (var, value, key) in cases {
        let (ok, _, err) = run(bucketftp()
            .args(["check-config", "--config", &example("local.toml")])
            .env(
                "BUCKETFTP__STORAGE__URL",
                format!("file://{}", dir.path().display()),
            )
            .env(var, value));
        assert!(!ok, "{var}={value} accepted");
        assert!(
            err.contains(key),
            "{var}={value}: error does not name {key}: {err}"
        );
        assert!(
            err.contains(value),
            "{var}={value}: error does not show the value: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn plaintext_passwords_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[[users]]\nname = \"bob\"\npassword_hash = \"hunter2\"\n",
    )
    .expect("write config");
    let (ok, _, err) = run(bucketftp().args(["check-config", "--config"]).arg(&config));
    assert!(!ok);
    assert!(err.contains("users[0].password_hash"), "{err}");
    assert!(
        err.contains("hash-password"),
        "points to hash-password: {err}"
    );
    assert!(
        !err.contains("hunter2"),
        "the plaintext is not echoed: {err}"
    );
}

#[test]
fn unknown_keys_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[server]\nlisten_addr = \"0.0.0.0:21\"\n").expect("write");
    let (ok, _, err) = run(bucketftp().args(["check-config", "--config"]).arg(&config));
    assert!(!ok);
    assert!(err.contains("listen_addr"), "{err}");
}

#[test]
fn hash_password_output_is_accepted_by_the_config() {
    let (ok, hash, err) = run(bucketftp().args(["hash-password", "correct horse"]));
    assert!(ok, "{err}");
    let hash = hash.trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nurl = \"memory://\"\n[[users]]\nname = \"bob\"\npassword_hash = \"{hash}\"\n"
        ),
    )
    .expect("write");
    let (ok, out, err) = run(bucketftp().args(["check-config", "--config"]).arg(&config));
    assert!(ok, "{err}");
    assert!(out.contains("1 user(s)"), "{out}");
}

/// Whether `program` is on `PATH` (a missing one skips loudly, or fails
/// under `BUCKETFTP_REQUIRE_EMULATORS=1`, where .ci/install.sh ran).
fn installed(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("BUCKETFTP_REQUIRE_EMULATORS").as_deref() == Ok("1") {
            panic!("{program} is not installed");
        }
        eprintln!("\n*** SKIPPED: {program} is not installed ***\n");
    }
    found
}
