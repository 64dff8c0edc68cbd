"""What every scenario shares: sizes, tools, the work directory, results."""

import os
import shutil
import sys
import time

from .results import Results

MIB = 1024 * 1024
GIB = 1024 * MIB

FULL = {
    "big": GIB,  # single-stream STOR/RETR
    "small_count": 2000,  # many small files …
    "small_size": 4096,  # … of this size …
    "sessions": 8,  # … over this many sessions
    "list_count": 100_000,  # objects in the listed directory
    "mem_uploads": 32,  # concurrent uploads for the memory bound …
    "mem_size": 256 * MIB,  # … of this size each
    "mem_downloads": 20,  # concurrent RETRs of one object on S3 …
    "mem_dl_size": 256 * MIB,  # … of this size, within …
    "mem_budget": 256 * MIB,  # … this storage.memory_budget
    "idle": 1000,  # idle logged-in sessions
    "sessions_n": 10_000,  # sessions held at once (issue #18's per-replica goal) …
    "sessions_window": 30,  # … idle for this many seconds, then 1 % transferring as long
}

QUICK = {
    "big": 64 * MIB,
    "small_count": 200,
    "small_size": 4096,
    "sessions": 8,
    "list_count": 5_000,
    "mem_uploads": 32,
    "mem_size": 32 * MIB,
    "mem_downloads": 20,
    "mem_dl_size": 32 * MIB,
    "mem_budget": 128 * MIB,
    "idle": 100,
    "sessions_n": 200,
    "sessions_window": 5,
}

# bucketftp's default storage.part_size; the memory target is stated in it.
PART_SIZE = 8 * MIB


class Context:
    def __init__(self, args, tools):
        self.quick = args.quick
        self.rounds = args.rounds
        self.sizes = dict(QUICK if args.quick else FULL)
        self.tools = tools  # name -> path: bucketftp, s3s_fs, rclone
        self.workdir = args.workdir
        self.results = Results()
        self.results.config = {
            "quick": self.quick,
            "rounds": self.rounds,
            "sizes": self.sizes,
            "part_size": PART_SIZE,
        }
        self._sources = {}
        self._t0 = time.monotonic()

    def log(self, msg):
        print(f"[{time.monotonic() - self._t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    def path(self, *parts):
        p = os.path.join(self.workdir, *parts)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    def fresh_dir(self, *parts):
        p = os.path.join(self.workdir, *parts)
        shutil.rmtree(p, ignore_errors=True)
        os.makedirs(p)
        return p

    def source(self, size):
        """A file of `size` random bytes, made once per run (and so in the
        page cache for every contender alike)."""
        if size not in self._sources:
            path = self.path("sources", f"src-{size}.bin")
            if not (os.path.exists(path) and os.path.getsize(path) == size):
                self.log(f"making a {size // MIB} MiB source file")
                chunk = 8 * MIB
                with open(path, "wb") as f:
                    left = size
                    while left:
                        n = min(chunk, left)
                        f.write(os.urandom(n))
                        left -= n
                os.chmod(path, 0o644)
            self._sources[size] = path
        return self._sources[size]

    @staticmethod
    def settle():
        """Before a timed operation: write back what the previous one left
        dirty, so that its writeback does not land in this one's time."""
        os.sync()
        time.sleep(0.2)

    def rounds_range(self):
        return range(self.rounds)
