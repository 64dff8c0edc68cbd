"""Profiles bucketftp (or the emulator) during one operation of a scenario,
to explain a miss: `perf record` (the cpu-clock software event, which works
in VMs without hardware counters) or `strace -c` attached to the process
for exactly the span of the operation.

    python3 bench/profile.py CASE [--tool perf|strace] [--target bucketftp|emulator] [--size MIB]

CASE is one of:
  local-retr        RETR of a file from bucketftp on file://
  local-stor-small  STOR of 2,000 × 4 KiB over 8 sessions to file://
  s3-retr           RETR of a file from bucketftp on s3s-fs
  s3-get-direct     boto3 single-stream GET of the same object (compare
                    the emulator's profile with s3-retr's)

Set BUCKETFTP_BIN and S3S_FS_BIN as bench/run.sh does (it exports them).
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import ftp_clients, servers  # noqa: E402
from harness.procs import MIB  # noqa: E402
from harness.scenarios.s3 import md5_of, seed  # noqa: E402


class Attached:
    """perf or strace attached to `pid` until the block ends."""

    def __init__(self, tool, pid, out):
        self.tool, self.pid, self.out = tool, pid, out

    def __enter__(self):
        if self.tool == "perf":
            argv = ["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-p", str(self.pid), "-o", self.out]
        else:
            argv = ["strace", "-c", "-f", "-p", str(self.pid), "-o", self.out]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # let it attach
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)
        return False


def report(tool, out):
    if tool == "perf":
        done = subprocess.run(
            ["perf", "report", "-i", out, "--stdio", "--no-children", "--sort", "dso,symbol",
             "--percent-limit", "1.5", "-g", "none"],
            capture_output=True, text=True,
        )
        return "\n".join(line for line in done.stdout.splitlines() if line and not line.startswith("#"))
    with open(out) as f:
        return f.read()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("case", choices=["local-retr", "local-stor-small", "s3-retr", "s3-get-direct"])
    p.add_argument("--tool", choices=["perf", "strace"], default="perf")
    p.add_argument("--target", choices=["bucketftp", "emulator"], default="bucketftp")
    p.add_argument("--size", type=int, default=1024, help="MiB for RETR cases (default 1024)")
    args = p.parse_args()
    binary = os.environ.get("BUCKETFTP_BIN", "target/release/bucketftp")
    work = tempfile.mkdtemp(prefix="bucketftp-profile-")
    started = []
    try:
        size = args.size * MIB
        src = os.path.join(work, "src.bin")
        if args.case != "local-stor-small":
            with open(src, "wb") as f:
                for _ in range(args.size):
                    f.write(os.urandom(MIB))
        if args.case.startswith("local"):
            root = os.path.join(work, "root")
            os.makedirs(root)
            bftp = servers.start_bucketftp(binary, f"file://{root}", {}, work)
            started.append(bftp.server)
            target = bftp.server
            if args.case == "local-retr":
                os.link(src, os.path.join(root, "seed.bin"))
        else:
            data = os.path.join(work, "data")
            emu = servers.start_s3s_fs(os.environ.get("S3S_FS_BIN", "s3s-fs"), data, work, ["bench"])
            started.append(emu)
            seed(data, "bench", "p/seed.bin", src, md5_of(src))
            bftp = servers.start_bucketftp(binary, "s3://bench/p", servers.s3_options(emu.endpoint), work)
            started.append(bftp.server)
            target = emu if args.target == "emulator" else bftp.server
        out = os.path.join(work, "profile.out")
        with Attached(args.tool, target.pid, out):
            began = time.perf_counter()
            if args.case in ("local-retr", "s3-retr"):
                ftp_clients.curl_retr(bftp.url("seed.bin"), size)
            elif args.case == "local-stor-small":
                ftp_clients.ftp_mkdir(bftp, "small")
                ftp_clients.many_files(bftp, "small", 2000, 4096, 8, "stor")
            else:
                here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "harness")
                code = (
                    "import sys; sys.path.insert(0, %r); import s3_direct as d; c = d.client(%r)\n"
                    "b = c.get_object(Bucket='bench', Key='p/seed.bin')['Body']\n"
                    "while b.read(1 << 20): pass\n" % (here, emu.endpoint)
                )
                subprocess.run([sys.executable, "-c", code], check=True)
            elapsed = time.perf_counter() - began
        print(f"{args.case}: {elapsed:.2f} s; {args.tool} of {target.name} (pid {target.pid}):")
        print(report(args.tool, out))
    finally:
        for s in reversed(started):
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
