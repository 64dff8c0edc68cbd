"""FTP clients: curl for single streams, Python's ftplib for many sessions.

Times exclude the login where the login is not what is being measured:
for curl the transfer time is `time_total - time_pretransfer` (from the
moment the data transfer starts until the reply after it, i.e. including the
server's commit before `226`); for ftplib sessions log in first and the
clock starts once all of them are ready.
"""

import ftplib
import io
import subprocess
import threading
import time


class TransferFailed(RuntimeError):
    pass


def _curl(args):
    fmt = "%{time_total} %{time_pretransfer} %{size_upload} %{size_download}"
    done = subprocess.run(
        ["curl", "-sS", "--fail", "--max-time", "3600", "-w", fmt] + args,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise TransferFailed(f"curl {' '.join(args[:2])}…: exit {done.returncode}: {done.stderr.strip()}")
    total, pre, up, down = done.stdout.split()[-4:]
    return {
        "total_s": float(total),
        "transfer_s": float(total) - float(pre),
        "uploaded": int(float(up)),
        "downloaded": int(float(down)),
    }


def curl_stor(url, src, size):
    """Uploads `src` to `url`; returns seconds of data transfer (+ commit)."""
    result = _curl(["-T", src, url])
    if result["uploaded"] != size:
        raise TransferFailed(f"uploaded {result['uploaded']} of {size} bytes to {url}")
    return result["transfer_s"]


def curl_retr(url, size):
    """Downloads `url` into /dev/null; returns seconds of data transfer."""
    result = _curl(["-o", "/dev/null", url])
    if result["downloaded"] != size:
        raise TransferFailed(f"downloaded {result['downloaded']} of {size} bytes from {url}")
    return result["transfer_s"]


def _login(endpoint, timeout=120):
    ftp = ftplib.FTP()
    ftp.connect(endpoint.host, endpoint.port, timeout=timeout)
    ftp.login(endpoint.user, endpoint.password)
    ftp.cwd(endpoint.root_path)
    return ftp


def ftp_mkdir(endpoint, path):
    """MKD, tolerating a failure: on object stores a directory needs no
    marker for STOR into it (s3s-fs, for one, answers the marker PUT
    without the ETag object_store requires, so bucketftp's MKD fails there
    although the upload path works)."""
    ftp = _login(endpoint)
    try:
        ftp.mkd(path)
    except ftplib.error_reply:
        raise
    except ftplib.Error:
        pass
    ftp.quit()


def sha256_of(endpoint, path):
    """The SHA-256 bucketftp answers to `XSHA256 path` (lowercase hex). On
    file:// the digest of a large upload is computed after its 226, and the
    command waits for it."""
    ftp = _login(endpoint)
    try:
        reply = ftp.sendcmd(f"XSHA256 {path}")
    finally:
        ftp.quit()
    code, _, digest = reply.partition(" ")
    if code != "250":
        raise TransferFailed(f"XSHA256 {path}: {reply}")
    return digest.strip().lower()


def many_files(endpoint, directory, count, size, sessions, direction):
    """STOR (or RETR) `count` files of `size` bytes named f00000… in
    `directory` over `sessions` parallel logged-in sessions, one thread
    each. Returns the wall time of the transfers (logins excluded)."""
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    conns = [_login(endpoint) for _ in range(sessions)]
    errors = []
    start = threading.Barrier(sessions + 1)

    def work(ftp, names):
        start.wait()
        try:
            for name in names:
                if direction == "stor":
                    ftp.storbinary(f"STOR {name}", io.BytesIO(payload))
                else:
                    got = bytearray()
                    ftp.retrbinary(f"RETR {name}", got.extend)
                    if len(got) != size:
                        raise TransferFailed(f"RETR {name}: {len(got)} of {size} bytes")
        except Exception as e:  # reported after the join
            errors.append(e)

    names = [f"{directory}/f{i:05d}" for i in range(count)]
    threads = [
        threading.Thread(target=work, args=(ftp, names[i::sessions])) for i, ftp in enumerate(conns)
    ]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    for ftp in conns:
        try:
            ftp.quit()
        except Exception:
            ftp.close()
    if errors:
        raise TransferFailed(f"{len(errors)} session(s) failed, first: {errors[0]!r}")
    return elapsed


def list_dir(endpoint, directory):
    """Times one LIST of `directory` (after login); returns (seconds, lines)."""
    ftp = _login(endpoint, timeout=3600)
    lines = 0

    def count(_line):
        nonlocal lines
        lines += 1

    began = time.perf_counter()
    ftp.retrlines(f"LIST {directory}", count)
    elapsed = time.perf_counter() - began
    ftp.quit()
    return elapsed, lines


class IdleSessions:
    """`count` logged-in control connections that then do nothing."""

    def __init__(self, endpoint, count, parallel=8):
        self.conns = []
        lock = threading.Lock()
        errors = []
        todo = iter(range(count))

        def opener():
            while True:
                with lock:
                    if next(todo, None) is None:
                        return
                try:
                    ftp = _login(endpoint, timeout=300)
                except Exception as e:
                    errors.append(e)
                    return
                with lock:
                    self.conns.append(ftp)

        threads = [threading.Thread(target=opener) for _ in range(parallel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.close()
            raise TransferFailed(f"{len(errors)} login(s) failed, first: {errors[0]!r}")

    def check_alive(self):
        """NOOP on every session: all of them must still be logged in."""
        for ftp in self.conns:
            ftp.voidcmd("NOOP")

    def close(self):
        for ftp in self.conns:
            try:
                ftp.close()
            except Exception:
                pass
        self.conns = []
