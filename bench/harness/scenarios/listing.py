"""Scenario 4: LIST of one directory holding many objects, on s3s-fs.
bucketftp's LIST (ftplib, after login) against boto3's paginated
ListObjectsV2 with the same prefix and delimiter (what LIST asks the store).

The objects are written straight into s3s-fs's data directory (a bucket is
a directory, a key a file), which takes seconds instead of 100,000 PUTs.
"""

import os
import shutil

from .. import ftp_clients, servers
from ..procs import Sampler
from .s3 import direct

SCENARIO = "list"
BUCKET = "listing"


def run(ctx):
    count = ctx.sizes["list_count"]
    data = ctx.fresh_dir("list", "data")
    directory = os.path.join(data, BUCKET, "dir")
    os.makedirs(directory)
    ctx.log(f"list: writing {count} objects into the emulator's data directory")
    for i in range(count):
        with open(os.path.join(directory, f"object-{i:06d}.dat"), "wb") as f:
            f.write(b"%d\n" % i)
    emu = servers.start_s3s_fs(ctx.tools["s3s_fs"], data, ctx.workdir, [BUCKET])
    started = [emu]
    try:
        bftp = servers.start_bucketftp(
            ctx.tools["bucketftp"], f"s3://{BUCKET}", servers.s3_options(emu.endpoint), ctx.workdir
        )
        started.append(bftp.server)
        at_rest = bftp.server.rss_mib()
        measure = f"LIST {count:,} objects"
        res = ctx.results
        for r in ctx.rounds_range():
            ctx.log(f"list round {r + 1}/{ctx.rounds}")
            with Sampler(bftp.server) as s, Sampler(emu) as e:
                t, lines = ftp_clients.list_dir(bftp, "/dir")
            if lines != count:
                raise RuntimeError(f"LIST returned {lines} lines, expected {count}")
            res.add(SCENARIO, measure, "bucketftp", t, "s", higher_is_better=False,
                    peak_mib=s.peak_mib, cpu_s=s.cpu_s, emulator_cpu_s=e.cpu_s)
            with Sampler(emu) as e:
                out = direct(emu.endpoint, "list", BUCKET, "dir/")
            if out["count"] != count:
                raise RuntimeError(f"boto3 listed {out['count']} keys, expected {count}")
            res.add(SCENARIO, measure, "boto3 direct", out["seconds"], "s", higher_is_better=False,
                    peak_mib=out["peak_mib"], cpu_s=out["cpu_s"], emulator_cpu_s=e.cpu_s)
        res.note(
            f"list: bucketftp's RSS at rest was {at_rest:.0f} MiB; its peak RSS in the table is "
            f"VmHWM during each LIST, boto3's that of its whole process"
        )
    finally:
        for p in reversed(started):
            p.stop()
        shutil.rmtree(os.path.join(ctx.workdir, "list"), ignore_errors=True)
