//! What the logs look like to whoever reads them: plain text in a file or
//! a pipe, colour only on a terminal and never with `NO_COLOR`, and no
//! warning for what clients routinely do.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Runs the binary on `file://` in a scratch directory with `--user`,
/// stores a file with `curl --ftp-create-dirs` (which probes with CWD
/// first), and returns the log. `wrap` puts the binary under another
/// program (`script`, for a terminal).
fn session_log(wrap: Option<&str>, no_color: bool) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = super::common::free_port();
    let binary = env!("CARGO_BIN_EXE_bucketftp");
    let args = format!(
        "{binary} --listen 127.0.0.1:{port} --http off --storage file://{}/root --user alice:s3cret-Passw0rd",
        dir.path().display()
    );
    let log = dir.path().join("log");
    let mut cmd = match wrap {
        // `script` gives the binary a pseudo-terminal; its output (the
        // binary's stdout and stderr) goes to our pipe.
        Some(program) => {
            let mut c = Command::new(program);
            c.args(["-qfec", &args, "/dev/null"]);
            c.stdout(Stdio::piped());
            c
        }
        None => {
            let mut c = Command::new("sh");
            c.args(["-c", &format!("exec {args} 2>{}", log.display())]);
            c.stdout(Stdio::piped());
            c
        }
    };
    cmd.env_remove("BUCKETFTP_CONFIG")
        .env_remove("BUCKETFTP_USER")
        .env_remove("RUST_LOG")
        .env("BUCKETFTP__LOG__LEVEL", "info");
    if no_color {
        cmd.env("NO_COLOR", "1");
    } else {
        cmd.env_remove("NO_COLOR");
    }
    let mut child = cmd.spawn().expect("start");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    // The banner: the server is ready.
    while !seen.contains("log in with") {
        let mut line = String::new();
        if out.read_line(&mut line).expect("read") == 0 {
            panic!("no banner: {seen}");
        }
        seen.push_str(&line);
    }
    let file = dir.path().join("up.txt");
    std::fs::write(&file, "up\n").expect("write");
    let status = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--ftp-create-dirs", "-T"])
        .arg(&file)
        .arg(format!(
            "ftp://alice:s3cret-Passw0rd@127.0.0.1:{port}/new/dir/up.txt"
        ))
        .status()
        .expect("curl");
    assert!(status.success());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    let _ = child.wait();
    seen.push_str(&rest);
    match wrap {
        Some(_) => seen,
        None => std::fs::read_to_string(&log).expect("log"),
    }
}

#[test]
fn a_log_file_has_no_colour_and_no_warning_for_cwd_probes() {
    let log = session_log(None, false);
    assert!(log.contains("ftp operation"), "audit lines: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log file:\n{log}"
    );
    assert!(
        !log.lines().any(|l| l.contains("WARN")),
        "a routine CWD probe is not a warning:\n{log}"
    );
}

#[test]
fn colour_only_on_a_terminal_without_no_color() {
    if !super::installed("script") {
        return;
    }
    let tty = session_log(Some("script"), false);
    assert!(tty.contains("\u{1b}["), "colour on a terminal:\n{tty}");
    let no_color = session_log(Some("script"), true);
    assert!(no_color.contains("ftp operation"), "{no_color}");
    assert!(!no_color.contains('\u{1b}'), "NO_COLOR:\n{no_color}");
}
