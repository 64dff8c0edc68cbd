"""Scenario 5: memory. Peak RSS of bucketftp during many concurrent large
uploads (curl processes, on s3s-fs or file://), during many concurrent
large downloads from s3s-fs within a set `storage.memory_budget` (against
boto3 with the same parallelism, for aggregate throughput), and its RSS
while holding many idle logged-in sessions. A fresh bucketftp per round, so
that every round starts from the same state.
"""

import os
import shutil
import subprocess
import sys
import time

from .. import ftp_clients, servers
from ..context import PART_SIZE
from ..procs import MIB, Sampler
from . import s3

SCENARIO = "memory"
BUCKET = "memory"


def run(ctx):
    uploads(ctx)
    downloads(ctx)
    idle(ctx)


def uploads(ctx):
    n, size = ctx.sizes["mem_uploads"], ctx.sizes["mem_size"]
    src = ctx.source(size)
    store = ctx.memory_store
    measure = f"peak RSS, {n} concurrent {size // MIB} MiB STOR ({store})"
    res = ctx.results
    data = ctx.fresh_dir("memory", "data")
    emu = None
    if store == "s3":
        emu = servers.start_s3s_fs(ctx.tools["s3s_fs"], data, ctx.workdir, [BUCKET])
    try:
        for r in ctx.rounds_range():
            ctx.log(f"memory round {r + 1}/{ctx.rounds}: {n} concurrent uploads of {size // MIB} MiB")
            if emu is not None:
                url, opts = f"s3://{BUCKET}/up", servers.s3_options(emu.endpoint)
                landing = os.path.join(data, BUCKET, "up")
            else:
                landing = os.path.join(data, "up")
                url, opts = f"file://{landing}", {}
            bftp = servers.start_bucketftp(ctx.tools["bucketftp"], url, opts, ctx.workdir, name="bucketftp-memory")
            try:
                ctx.settle()
                # Start-up (the password hashes, the storage probe) leaves
                # memory that the allocator returns within half a second.
                time.sleep(1.0)
                at_rest = bftp.server.rss_mib()
                with Sampler(bftp.server) as s:
                    began = time.perf_counter()
                    curls = [
                        subprocess.Popen(
                            ["curl", "-sS", "--fail", "-T", src, bftp.url(f"u{i:03d}.bin")],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE,
                        )
                        for i in range(n)
                    ]
                    failed = [c.stderr.read().decode() for c in curls if c.wait() != 0]
                    elapsed = time.perf_counter() - began
                if failed:
                    raise RuntimeError(f"{len(failed)} of {n} uploads failed, first: {failed[0]}")
                for i in range(n):
                    got = os.path.getsize(os.path.join(landing, f"u{i:03d}.bin"))
                    if got != size:
                        raise RuntimeError(f"u{i:03d}.bin: {got} bytes, expected {size}")
                res.add(SCENARIO, measure, "bucketftp", s.peak_mib, "MiB", higher_is_better=False,
                        peak_mib=s.peak_mib, cpu_s=s.cpu_s)
                res.add(SCENARIO, f"aggregate throughput, {n} concurrent STOR ({store})", "bucketftp",
                        n * size / MIB / elapsed, "MiB/s", cpu_s=s.cpu_s)
                if r == 0:
                    res.note(f"memory: bucketftp RSS at rest before the concurrent uploads: {at_rest:.0f} MiB")
            finally:
                bftp.server.stop()
            shutil.rmtree(landing, ignore_errors=True)
            for p in os.listdir(data):
                if p.startswith("."):
                    os.remove(os.path.join(data, p))
    finally:
        if emu is not None:
            emu.stop()
        shutil.rmtree(os.path.join(ctx.workdir, "memory"), ignore_errors=True)


def downloads(ctx):
    """N concurrent RETRs (curl processes) of one object on s3s-fs, with
    storage.memory_budget set: bucketftp's peak RSS and aggregate
    throughput; boto3 downloads the same object in N processes at once for
    the throughput to compare with (issue #18)."""
    n, size, budget = ctx.sizes["mem_downloads"], ctx.sizes["mem_dl_size"], ctx.sizes["mem_budget"]
    src = ctx.source(size)
    res = ctx.results
    data = ctx.fresh_dir("memory-dl", "data")
    emu = servers.start_s3s_fs(ctx.tools["s3s_fs"], data, ctx.workdir, [BUCKET])
    what = f"{n} concurrent {size // MIB} MiB RETR (s3, memory_budget {budget // MIB} MiB)"
    env = {"BUCKETFTP__STORAGE__MEMORY_BUDGET": str(budget)}
    try:
        s3.seed(data, BUCKET, "dl/src.bin", src, s3.md5_of(src))
        for r in ctx.rounds_range():
            ctx.log(f"memory round {r + 1}/{ctx.rounds}: {n} concurrent downloads of {size // MIB} MiB")
            bftp = servers.start_bucketftp(ctx.tools["bucketftp"], f"s3://{BUCKET}/dl",
                                           servers.s3_options(emu.endpoint), ctx.workdir,
                                           name="bucketftp-memory-dl", env=env)
            try:
                ctx.settle()
                with Sampler(bftp.server) as sampled:
                    began = time.perf_counter()
                    curls = [
                        subprocess.Popen(
                            ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}",
                             bftp.url("src.bin")],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                        )
                        for _ in range(n)
                    ]
                    results = [(c.wait(), c.stdout.read().decode(), c.stderr.read().decode()) for c in curls]
                    elapsed = time.perf_counter() - began
                failed = [err or f"{got} bytes" for code, got, err in results if code != 0 or got != str(size)]
                if failed:
                    raise RuntimeError(f"{len(failed)} of {n} downloads failed, first: {failed[0]}")
                res.add(SCENARIO, f"peak RSS, {what}", "bucketftp", sampled.peak_mib, "MiB",
                        higher_is_better=False, peak_mib=sampled.peak_mib, cpu_s=sampled.cpu_s)
                res.add(SCENARIO, f"aggregate throughput, {what}", "bucketftp", n * size / MIB / elapsed,
                        "MiB/s", cpu_s=sampled.cpu_s)
            finally:
                bftp.server.stop()
            began = time.perf_counter()
            boto = [
                subprocess.Popen([sys.executable, s3.DIRECT, emu.endpoint, "get", BUCKET, "dl/src.bin", str(size)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                for _ in range(n)
            ]
            failed = [b.stderr.read().decode() for b in boto if b.wait() != 0]
            elapsed = time.perf_counter() - began
            if failed:
                raise RuntimeError(f"{len(failed)} of {n} boto3 downloads failed, first: {failed[0][-500:]}")
            # Includes each process's interpreter start (~0.3 s): a small
            # handicap for boto3 at these sizes.
            res.add(SCENARIO, f"aggregate throughput, {what}", "boto3 direct", n * size / MIB / elapsed, "MiB/s")
    finally:
        emu.stop()
        shutil.rmtree(os.path.join(ctx.workdir, "memory-dl"), ignore_errors=True)


def idle(ctx):
    n = ctx.sizes["idle"]
    res = ctx.results
    root = ctx.fresh_dir("idle")
    env = {
        "BUCKETFTP__SERVER__MAX_SESSIONS": str(2 * n),
        "BUCKETFTP__SERVER__MAX_SESSIONS_PER_IP": str(2 * n),
    }
    try:
        for r in ctx.rounds_range():
            ctx.log(f"memory round {r + 1}/{ctx.rounds}: {n} idle sessions")
            bftp = servers.start_bucketftp(ctx.tools["bucketftp"], f"file://{root}", {}, ctx.workdir,
                                           name="bucketftp-idle", env=env)
            try:
                time.sleep(1.0)  # as above: let start-up's memory go back first
                at_rest = bftp.server.rss_mib()
                cpu0 = bftp.server.cpu()
                began = time.perf_counter()
                sessions = ftp_clients.IdleSessions(bftp, n)
                logins = time.perf_counter() - began
                try:
                    time.sleep(2)
                    sessions.check_alive()
                    held = bftp.server.rss_mib()
                    res.add(SCENARIO, f"RSS with {n} idle sessions", "bucketftp", held, "MiB",
                            higher_is_better=False, peak_mib=bftp.server.peak_mib(),
                            cpu_s=bftp.server.cpu() - cpu0)
                    res.add(SCENARIO, f"logins of {n} sessions (8 at a time)", "bucketftp", n / logins,
                            "logins/s")
                    if r == 0:
                        res.note(
                            f"memory: bucketftp RSS at rest {at_rest:.0f} MiB, with {n} idle sessions "
                            f"{held:.0f} MiB: {(held - at_rest) * 1024 / n:.0f} KiB per session"
                        )
                finally:
                    sessions.close()
            finally:
                bftp.server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def upload_limit_mib(ctx):
    """The issue's bound: two parts per upload plus 50 MiB."""
    return ctx.sizes["mem_uploads"] * 2 * PART_SIZE / MIB + 50
