"""Scenario 2: S3 on the s3s-fs emulator. bucketftp against `rclone serve
ftp` over the same emulator, and against boto3 talking to it directly (the
ceiling: no FTP hop at all). The 1 GiB STOR is also measured with
`storage.upload_sha256 = false` (NO_SHA): boto3 computes no SHA-256 of the
whole object, and the row separates what that feature costs from the
gateway's data path.

s3s-fs keeps bucket B's key K in the file DATA/B/K, so the RETR source is a
hard link to the page-cached source file under each contender's prefix, and
what a round uploaded is removed from the data directory afterwards.
"""

import base64
import hashlib

import glob
import json
import os
import shutil
import subprocess
import sys

from .. import ftp_clients, servers
from ..procs import MIB, Sampler

SCENARIO = "s3"
NO_SHA = "bucketftp, upload_sha256 = false"
BUCKET = "bench"
DIRECT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "s3_direct.py")


def direct(endpoint, *args):
    """Runs one boto3 operation in its own process; returns its JSON."""
    done = subprocess.run(
        [sys.executable, DIRECT, endpoint, *map(str, args)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"boto3 {args[0]} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _b64(text):
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def seed(data_dir, bucket, key, src, md5_hex):
    """Puts `src` in the emulator as bucket/key without uploading it: a hard
    link, plus the ETag s3s-fs would have recorded on upload. Without the
    recorded ETag s3s-fs hashes the whole file on every GET and HEAD, even
    a ranged one, which would make boto3's parallel ranged download
    quadratic."""
    path = os.path.join(data_dir, bucket, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.link(src, path)
    info = os.path.join(data_dir, f".bucket-{_b64(bucket)}.object-{_b64(key)}.internal.json")
    with open(info, "w") as f:
        json.dump({"e_tag": md5_hex}, f)


def md5_of(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MIB):
            h.update(chunk)
    return h.hexdigest()


def forget_internal_files(data_dir, bucket):
    """s3s-fs writes per-object bookkeeping next to the buckets; drop it with
    the objects a round uploaded (the seeds' stays)."""
    for p in glob.glob(os.path.join(data_dir, f".bucket-{_b64(bucket)}.object-*")):
        encoded = os.path.basename(p).split(".object-", 1)[1].split(".", 1)[0]
        key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode(errors="replace")
        if not key.endswith("/seed.bin"):
            os.remove(p)


def run(ctx):
    size = ctx.sizes["big"]
    src = ctx.source(size)
    data = ctx.fresh_dir("s3", "data")
    emu = servers.start_s3s_fs(ctx.tools["s3s_fs"], data, ctx.workdir, [BUCKET])
    started = [emu]
    try:
        bftp = servers.start_bucketftp(
            ctx.tools["bucketftp"], f"s3://{BUCKET}/bftp", servers.s3_options(emu.endpoint), ctx.workdir
        )
        started.append(bftp.server)
        no_sha = servers.start_bucketftp(
            ctx.tools["bucketftp"], f"s3://{BUCKET}/nosha", servers.s3_options(emu.endpoint), ctx.workdir,
            name=NO_SHA, env={**os.environ, "BUCKETFTP__STORAGE__UPLOAD_SHA256": "false"},
            passive=servers.PASSIVE["bucketftp-no-sha"],
        )
        started.append(no_sha.server)
        rclone = servers.start_rclone_ftp(ctx.tools["rclone"], emu.endpoint, f"{BUCKET}/rclone", ctx.workdir)
        started.append(rclone.server)
        prefixes = {"bucketftp": "bftp", "rclone serve ftp": "rclone", "boto3 direct": "direct",
                    NO_SHA: "nosha"}
        digest = md5_of(src)
        for prefix in ("bftp", "rclone", "direct"):
            seed(data, BUCKET, f"{prefix}/seed.bin", src, digest)
        ftps = [(bftp, bftp.server), (rclone, rclone.server)]
        big = f"{size // MIB} MiB" if size < 1024 * MIB else f"{size // (1024 * MIB)} GiB"
        count, fsize, sessions = ctx.sizes["small_count"], ctx.sizes["small_size"], ctx.sizes["sessions"]
        small = f"{count} × {fsize // 1024} KiB, {sessions} sessions"
        res = ctx.results

        def on_disk(name, key):
            return os.path.join(data, BUCKET, prefixes[name], key)

        for r in ctx.rounds_range():
            ctx.log(f"s3 round {r + 1}/{ctx.rounds}: STOR {big}")
            for ep, proc in ftps + [(no_sha, no_sha.server)]:
                ctx.settle()
                with Sampler(proc) as s, Sampler(emu) as e:
                    t = ftp_clients.curl_stor(ep.url(f"stor-{r}.bin"), src, size)
                res.add(SCENARIO, f"STOR {big}", ep.name, size / MIB / t, "MiB/s",
                        peak_mib=s.peak_mib, cpu_s=s.cpu_s, emulator_cpu_s=e.cpu_s)
                check_size(on_disk(ep.name, f"stor-{r}.bin"), size)
                os.remove(on_disk(ep.name, f"stor-{r}.bin"))
            ctx.settle()
            with Sampler(emu) as e:
                out = direct(emu.endpoint, "put", src, BUCKET, f"direct/stor-{r}.bin")
            res.add(SCENARIO, f"STOR {big}", "boto3 direct", size / MIB / out["seconds"], "MiB/s",
                    peak_mib=out["peak_mib"], cpu_s=out["cpu_s"], emulator_cpu_s=e.cpu_s)
            check_size(on_disk("boto3 direct", f"stor-{r}.bin"), size)
            os.remove(on_disk("boto3 direct", f"stor-{r}.bin"))
            forget_internal_files(data, BUCKET)

            ctx.log(f"s3 round {r + 1}/{ctx.rounds}: RETR {big}")
            for ep, proc in ftps:
                ctx.settle()
                with Sampler(proc) as s, Sampler(emu) as e:
                    t = ftp_clients.curl_retr(ep.url("seed.bin"), size)
                res.add(SCENARIO, f"RETR {big}", ep.name, size / MIB / t, "MiB/s",
                        peak_mib=s.peak_mib, cpu_s=s.cpu_s, emulator_cpu_s=e.cpu_s)
            ctx.settle()
            with Sampler(emu) as e:
                out = direct(emu.endpoint, "get", BUCKET, "direct/seed.bin", size)
            res.add(SCENARIO, f"RETR {big}", "boto3 direct", size / MIB / out["seconds"], "MiB/s",
                    peak_mib=out["peak_mib"], cpu_s=out["cpu_s"], emulator_cpu_s=e.cpu_s)

            ctx.log(f"s3 round {r + 1}/{ctx.rounds}: {small}")
            for direction in ("stor", "retr"):
                d = f"small-{r}"
                for ep, proc in ftps:
                    if direction == "stor":
                        ftp_clients.ftp_mkdir(ep, d)
                    ctx.settle()
                    with Sampler(proc) as s, Sampler(emu) as e:
                        t = ftp_clients.many_files(ep, d, count, fsize, sessions, direction)
                    res.add(SCENARIO, f"{direction.upper()} {small}", ep.name, count / t, "files/s",
                            peak_mib=s.peak_mib, cpu_s=s.cpu_s, emulator_cpu_s=e.cpu_s)
                ctx.settle()
                with Sampler(emu) as e:
                    out = direct(emu.endpoint, f"small-{'put' if direction == 'stor' else 'get'}",
                                 BUCKET, f"direct/{d}/", count, fsize, sessions)
                res.add(SCENARIO, f"{direction.upper()} {small}", "boto3 direct", count / out["seconds"],
                        "files/s", peak_mib=out["peak_mib"], cpu_s=out["cpu_s"], emulator_cpu_s=e.cpu_s)
            for name in prefixes:
                shutil.rmtree(on_disk(name, f"small-{r}"), ignore_errors=True)
            forget_internal_files(data, BUCKET)
    finally:
        for p in reversed(started):
            p.stop()
        shutil.rmtree(os.path.join(ctx.workdir, "s3"), ignore_errors=True)


def check_size(path, size):
    got = os.path.getsize(path)
    if got != size:
        raise RuntimeError(f"{path}: {got} bytes, expected {size}")
