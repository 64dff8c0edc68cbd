#!/usr/bin/env python3
"""Load test: N concurrent FTP sessions against a bucketftp this script starts.

Every session logs in, waits until all sessions are logged in (so N really
are open at once), then STORs a random file, RETRs it and compares SHA-256,
DELEs it and QUITs. A sampler reads the server's /proc entries meanwhile.

Reports, per storage: errors, wall time, peak RSS (VmHWM) and peak open file
descriptors of the server, and checks that the server is still healthy, left
no objects behind, logged no panic and exits 0 on SIGTERM. Exits non-zero on
any error, so a small run is a CI check:

    python3 tests/load/load.py --sessions 100

Runs on file:// always, and on S3 as well when BUCKETFTP_TEST_S3_ENDPOINT is
set (moto, as .ci/emulators.sh starts it). Runs target/debug/bucketftp, the
binary `cargo build` (and so .ci/test) just built; --release runs
target/release/bucketftp, --binary (or BUCKETFTP_BIN) any other. A binary
older than the sources is refused, never silently measured.
"""

import argparse
import ftplib
import hashlib
import io
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USER = "load"
PASSWORD = "load-Test-Passw0rd"
BLOCK = 64 * 1024


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=500, help="concurrent sessions (default 500)")
    p.add_argument("--size", type=int, default=1 << 20, help="bytes per file (default 1 MiB)")
    p.add_argument("--storage", choices=["auto", "file", "s3"], default="auto",
                   help="auto: file, plus s3 when BUCKETFTP_TEST_S3_ENDPOINT is set")
    p.add_argument("--binary", default=os.environ.get("BUCKETFTP_BIN"),
                   help="bucketftp binary (default: $BUCKETFTP_BIN, else target/debug/bucketftp)")
    p.add_argument("--release", action="store_true", help="run target/release/bucketftp")
    p.add_argument("--timeout", type=float, default=300, help="per-session socket timeout, seconds")
    p.add_argument("--json", help="also write the results to this file")
    return p.parse_args()


def pick_binary(explicit, release):
    if explicit:
        return explicit
    profile = "release" if release else "debug"
    path = os.path.join(ROOT, "target", profile, "bucketftp")
    if not os.access(path, os.X_OK):
        build = "cargo build --release" if release else "cargo build"
        sys.exit(f"no {path}: run `{build}` first")
    warn_if_stale(path)
    return path


def warn_if_stale(binary):
    built = os.path.getmtime(binary)
    for dirpath, _, files in os.walk(os.path.join(ROOT, "src")):
        for f in files:
            if os.path.getmtime(os.path.join(dirpath, f)) > built:
                sys.exit(f"{binary} is older than src/{os.path.relpath(os.path.join(dirpath, f), os.path.join(ROOT, 'src'))}: "
                         "rebuild it (cargo build), or pass --binary to run it anyway")


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def storages(choice, scratch):
    """(name, --storage URL, [--storage-option flags]) for each storage to test."""
    out = []
    endpoint = os.environ.get("BUCKETFTP_TEST_S3_ENDPOINT", "")
    if choice in ("auto", "file"):
        out.append(("file", "file://" + os.path.join(scratch, "root"), []))
    if choice == "s3" or (choice == "auto" and endpoint):
        if not endpoint:
            sys.exit("--storage s3 needs BUCKETFTP_TEST_S3_ENDPOINT (e.g. a moto_server)")
        bucket = os.environ.get("BUCKETFTP_TEST_S3_BUCKET", "bucketftp")
        create_bucket(endpoint, bucket)
        prefix = f"load-{os.getpid()}-{int(time.time())}"
        options = {
            "aws_endpoint": endpoint,
            "aws_allow_http": "true",
            "aws_region": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
            "aws_virtual_hosted_style_request": "false",
        }
        flags = [a for k, v in options.items() for a in ("--storage-option", f"{k}={v}")]
        out.append(("s3", f"s3://{bucket}/{prefix}", flags))
    return out


def create_bucket(endpoint, bucket):
    """Creates the bucket on the emulator (moto takes unsigned requests)."""
    req = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
    try:
        urllib.request.urlopen(req, timeout=10).close()
    except urllib.error.HTTPError as e:
        if e.code != 409:  # already exists
            raise


def http_get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


class Server:
    """The gateway in its own process, with its log in a file."""

    def __init__(self, binary, storage, flags, sessions, scratch):
        self.ftp_port, self.http_port = free_port(), free_port()
        self.log_path = os.path.join(scratch, f"bucketftp-{self.ftp_port}.log")
        env = dict(os.environ)
        env.pop("BUCKETFTP_CONFIG", None)
        # Every session comes from 127.0.0.1 and they all connect at once:
        # lift the session caps and the caps on connections still logging
        # in above the load (tests/it/abuse.rs tests those caps themselves).
        # The gateway holds max_unauthenticated to half of max_sessions.
        for key in ("MAX_SESSIONS", "MAX_SESSIONS_PER_IP",
                    "MAX_UNAUTHENTICATED", "MAX_UNAUTHENTICATED_PER_IP"):
            env[f"BUCKETFTP__SERVER__{key}"] = str(2 * sessions + 50)
        cmd = [binary, "--listen", f"127.0.0.1:{self.ftp_port}",
               "--http", f"127.0.0.1:{self.http_port}", "--storage", storage,
               "--user", f"{USER}:{PASSWORD}", "--passive-ports", "20000-39999", *flags]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 60
        while http_get(self.http_port, "/readyz")[0] != 200:
            if self.proc.poll() is not None or time.time() > deadline:
                sys.exit(f"bucketftp did not become ready:\n{self.log_text()}")
            time.sleep(0.1)

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def proc_status(self, field):
        """A /proc/PID/status value in KiB (VmRSS, VmHWM), 0 once gone."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def open_fds(self):
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except OSError:
            return 0

    def stop(self):
        """SIGTERM; the exit code (None if it had to be killed)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        finally:
            self.log.close()


class Sampler(threading.Thread):
    """Peak open fds and sessions of the server, sampled every 50 ms."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server, self.peak_fds, self.stop = server, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak_fds = max(self.peak_fds, self.server.open_fds())
            self.stop.wait(0.05)


def session(n, port, size, timeout, all_in, errors, times):
    """One client: login, wait for the others, STOR, RETR + SHA-256, DELE, QUIT."""
    ftp = ftplib.FTP(timeout=timeout)
    name = f"load/{n}.bin"
    started = time.monotonic()
    stage = "connect"
    logged_in = False
    try:
        ftp.connect("127.0.0.1", port)
        stage = "login"
        ftp.login(USER, PASSWORD)
        logged_in = True
    except Exception as e:  # noqa: BLE001 - every failure is a finding
        errors.append(f"session {n} {stage}: {type(e).__name__}: {e}")
        ftp.close()
    try:
        all_in.wait()
    except threading.BrokenBarrierError:
        pass
    if not logged_in:
        return
    try:
        data = random.Random(n).randbytes(size)
        want = hashlib.sha256(data).hexdigest()
        stage = "STOR"
        ftp.storbinary(f"STOR {name}", io.BytesIO(data), blocksize=BLOCK)
        stage = "RETR"
        got = hashlib.sha256()
        received = [0]

        def take(chunk):
            got.update(chunk)
            received[0] += len(chunk)

        ftp.retrbinary(f"RETR {name}", take, blocksize=BLOCK)
        if got.hexdigest() != want:
            errors.append(f"session {n}: SHA-256 mismatch ({received[0]} of {size} bytes back)")
        stage = "DELE"
        ftp.delete(name)
        stage = "QUIT"
        ftp.quit()
        times.append(time.monotonic() - started)
    except Exception as e:  # noqa: BLE001
        errors.append(f"session {n} {stage}: {type(e).__name__}: {e}")
        ftp.close()


def leftovers(storage_name, storage_url):
    if storage_name != "file":
        return []
    root = storage_url[len("file://"):]
    found = []
    for dirpath, _, files in os.walk(root):
        found += [os.path.relpath(os.path.join(dirpath, f), root) for f in files]
    return found


def run_one(binary, storage_name, storage_url, flags, args, scratch):
    server = Server(binary, storage_url, flags, args.sessions, scratch)
    base_fds, base_rss = server.open_fds(), server.proc_status("VmRSS")
    sampler = Sampler(server)
    sampler.start()
    errors, times = [], []
    logged_in_at = []
    all_in = threading.Barrier(args.sessions, timeout=args.timeout,
                               action=lambda: logged_in_at.append(time.monotonic()))
    threads = [threading.Thread(target=session, daemon=True,
                                args=(n, server.ftp_port, args.size, args.timeout, all_in, errors, times))
               for n in range(args.sessions)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    sampler.stop.set()
    sampler.join()

    status, body = http_get(server.http_port, "/metrics")
    if status != 200:
        errors.append(f"/metrics answered {status} after the run")
    active = [l for l in body.splitlines() if l.startswith("bucketftp_sessions_active ")]
    left = leftovers(storage_name, storage_url)
    if left:
        errors.append(f"{len(left)} files left in the store, e.g. {left[:3]}")
    peak_rss = server.proc_status("VmHWM")
    code = server.stop()
    if code != 0:
        errors.append(f"bucketftp exited with {code} on SIGTERM")
    log = server.log_text()
    if "panicked" in log:
        errors.append("panic in the server log")
    times.sort()
    return {
        "storage": storage_name,
        "binary": os.path.relpath(binary, ROOT) if binary.startswith(ROOT) else binary,
        "sessions": args.sessions,
        "file_bytes": args.size,
        "completed": len(times),
        "errors": len(errors),
        "error_samples": errors[:10],
        "wall_seconds": round(wall, 2),
        "login_phase_seconds": round(logged_in_at[0] - started, 2) if logged_in_at else None,
        "session_seconds_p50": round(times[len(times) // 2], 2) if times else None,
        "session_seconds_max": round(times[-1], 2) if times else None,
        "throughput_mib_s": round(2 * len(times) * args.size / (1 << 20) / wall, 1),
        "server_rss_baseline_mib": round(base_rss / 1024, 1),
        "server_peak_rss_mib": round(peak_rss / 1024, 1),
        "server_fds_baseline": base_fds,
        "server_peak_fds": sampler.peak_fds,
        "sessions_active_after": active[0].split()[1] if active else None,
    }


def main():
    args = parse_args()
    binary = pick_binary(args.binary, args.release)
    fd_limit = raise_fd_limit()
    # client + server each need ~2 fds per session (control, data) plus files.
    if fd_limit < 4 * args.sessions + 100:
        print(f"warning: open-file limit {fd_limit} may be too low for {args.sessions} sessions",
              file=sys.stderr)
    scratch = tempfile.mkdtemp(prefix="bucketftp-load-")
    results = []
    try:
        for name, url, flags in storages(args.storage, scratch):
            print(f"[{name}] {args.sessions} sessions x {args.size} bytes against {binary} ...",
                  flush=True)
            r = run_one(binary, name, url, flags, args, scratch)
            results.append(r)
            print(f"[{name}] completed {r['completed']}/{r['sessions']}, errors {r['errors']}, "
                  f"wall {r['wall_seconds']} s (logins {r['login_phase_seconds']} s), session p50 {r['session_seconds_p50']} s "
                  f"max {r['session_seconds_max']} s, {r['throughput_mib_s']} MiB/s, "
                  f"server peak RSS {r['server_peak_rss_mib']} MiB "
                  f"(baseline {r['server_rss_baseline_mib']}), "
                  f"peak fds {r['server_peak_fds']} (baseline {r['server_fds_baseline']})",
                  flush=True)
            for e in r["error_samples"]:
                print(f"  error: {e}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
