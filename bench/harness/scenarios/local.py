"""Scenario 1: local disk. bucketftp on file:// against vsftpd serving the
same disk, plus the loopback TCP ceiling. Uploads are also measured with
`storage.upload_sha256 = false` (NO_SHA below): SHA-256 of every upload is
a feature vsftpd does not have, and this row shows what it costs and that
the rest of the data path keeps up with vsftpd.

bucketftp computes the SHA-256 of a large file:// upload after its 226
(src/local_attributes/deferred.rs): after each timed STOR an untimed
`XSHA256` waits for it and checks it against the source, inside the CPU and
memory sample, so the next measure never shares the machine with it and the
CPU column includes it.

Rounds alternate the contenders (bucketftp, vsftpd, ceiling, bucketftp, …)
for each measure, and each round starts with the next contender: the one
going first follows the previous measure's deletions (ext4 here is
mounted with `discard`), and a fixed order put that on the same server
every round. The RETR source is a hard link to the same page-cached
file for everyone; large STOR targets are new names, removed (and synced)
between rounds; the small files stay until the scenario ends (see the end
of the round loop).
"""

import hashlib
import os
import shutil

from .. import ftp_clients, servers, tcp_ceiling
from ..procs import MIB, Sampler

SCENARIO = "local"
NO_SHA = "bucketftp, upload_sha256 = false"


def rotated(items, r):
    """`items` starting with the (r mod len)-th."""
    k = r % len(items)
    return items[k:] + items[:k]


def run(ctx):
    size = ctx.sizes["big"]
    src = ctx.source(size)
    bftp_root = ctx.fresh_dir("local", "bucketftp")
    vs_root = ctx.fresh_dir("local", "vsftpd")
    ceiling_dir = ctx.fresh_dir("local", "ceiling")
    no_sha_root = ctx.fresh_dir("local", "bucketftp-no-sha")
    bftp = servers.start_bucketftp(ctx.tools["bucketftp"], f"file://{bftp_root}", {}, ctx.workdir)
    no_sha = servers.start_bucketftp(
        ctx.tools["bucketftp"], f"file://{no_sha_root}", {}, ctx.workdir, name=NO_SHA,
        env={**os.environ, "BUCKETFTP__STORAGE__UPLOAD_SHA256": "false"},
        passive=servers.PASSIVE["bucketftp-no-sha"],
    )
    vsftpd = servers.start_vsftpd(vs_root, ctx.workdir)
    try:
        vs_pub = os.path.join(vs_root, "pub")
        # (endpoint, directory on disk behind the endpoint's working dir,
        #  process whose memory is the server's; vsftpd forks per session)
        contenders = [(bftp, bftp_root, bftp.server), (vsftpd, vs_pub, None)]
        uploaders = contenders + [(no_sha, no_sha_root, no_sha.server)]
        for _, disk_dir, _ in contenders:
            os.link(src, os.path.join(disk_dir, "seed.bin"))
        big = f"{size // MIB} MiB" if size < 1024 * MIB else f"{size // (1024 * MIB)} GiB"
        res = ctx.results
        with open(src, "rb") as f:
            src_sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        for r in ctx.rounds_range():
            ctx.log(f"local round {r + 1}/{ctx.rounds}: STOR {big}")
            for ep, disk_dir, proc in rotated(uploaders, r):
                ctx.settle()
                with Sampler(proc) as s:
                    t = ftp_clients.curl_stor(ep.url(f"stor-{r}.bin"), src, size)
                    if ep is bftp:
                        stored = ftp_clients.sha256_of(ep, f"stor-{r}.bin")
                        if stored != src_sha256:
                            raise ftp_clients.TransferFailed(f"XSHA256 stor-{r}.bin: {stored}, expected {src_sha256}")
                res.add(SCENARIO, f"STOR {big}", ep.name, size / MIB / t, "MiB/s",
                        peak_mib=s.peak_mib, cpu_s=s.cpu_s)
                os.remove(os.path.join(disk_dir, f"stor-{r}.bin"))
            ctx.settle()
            dest = os.path.join(ceiling_dir, "copy.bin")
            t = tcp_ceiling.upload(src, dest)
            os.remove(dest)
            res.add(SCENARIO, f"STOR {big}", "TCP ceiling", size / MIB / t, "MiB/s")

            ctx.log(f"local round {r + 1}/{ctx.rounds}: RETR {big}")
            for ep, _, proc in rotated(contenders, r):
                ctx.settle()
                with Sampler(proc) as s:
                    t = ftp_clients.curl_retr(ep.url("seed.bin"), size)
                res.add(SCENARIO, f"RETR {big}", ep.name, size / MIB / t, "MiB/s",
                        peak_mib=s.peak_mib, cpu_s=s.cpu_s)
            ctx.settle()
            t = tcp_ceiling.download(src)
            res.add(SCENARIO, f"RETR {big}", "TCP ceiling", size / MIB / t, "MiB/s")

            count, fsize, sessions = ctx.sizes["small_count"], ctx.sizes["small_size"], ctx.sizes["sessions"]
            label = f"{count} × {fsize // 1024} KiB, {sessions} sessions"
            ctx.log(f"local round {r + 1}/{ctx.rounds}: {label}")
            for direction in ("stor", "retr"):
                for ep, disk_dir, proc in rotated(uploaders if direction == "stor" else contenders, r):
                    d = f"small-{r}"
                    if direction == "stor":
                        ftp_clients.ftp_mkdir(ep, d)
                    ctx.settle()
                    with Sampler(proc) as s:
                        t = ftp_clients.many_files(ep, d, count, fsize, sessions, direction)
                    res.add(SCENARIO, f"{direction.upper()} {label}", ep.name, count / t, "files/s",
                            peak_mib=s.peak_mib, cpu_s=s.cpu_s)
            # The small files stay until the end: ext4 skips inodes freed in
            # the last ~30 s when it allocates new ones (`recently_deleted`,
            # 35 % of bucketftp's CPU under `perf` after such a deletion), so
            # removing 6,000 files here made the next round's small-file
            # STOR pay for it, most of all whoever went first: 15–25 %.
    finally:
        bftp.server.stop()
        no_sha.server.stop()
        vsftpd.server.stop()
        shutil.rmtree(os.path.join(ctx.workdir, "local"), ignore_errors=True)
