"""Scenario 3: GCS on fake-gcs-server. bucketftp's two GCS engines side by
side, the same binary on the same bucket and prefix (gs://bench/bftp):

* "bucketftp": the default engine, object_store's GCS client, which speaks
  GCS's XML API (GET with ranges, ListObjectsV2-style listings; PUT and the
  XML multipart upload for writes);
* "unftp-sbe-gcs": `storage.engine = "unftp-sbe-gcs"` (libunftp's own
  crate, the JSON API: `alt=media` GETs, `objects.list`, one streaming
  `uploadType=media` POST per upload).

Both map the FTP path /P to the key bftp/P, so the objects are seeded once,
through the JSON upload API, and both engines read the same ones:

* RETR of the big object (1 GiB; 64 MiB quick) with curl, plus "curl
  direct": curl GETting the same object from the emulator's JSON API, the
  ceiling with no FTP hop;
* RETR of many small files over several ftplib sessions;
* LIST of one directory of 1,000 objects (200 quick), the median of five
  LISTs per round, in milliseconds.

STOR is single-sided. fake-gcs-server does not implement GCS's XML API
writes: object_store's PUT of a small object is answered `400 invalid
uploadType`, and its XML multipart upload (`POST ?uploads`, which a big
STOR starts with) the same (fsouza/fake-gcs-server#852 is open, #1819
unmerged). So the big and the small-file STOR are measured for
unftp-sbe-gcs only, and the object_store engine's STOR is attempted once
per size: the reply its client got and the failing request from
bucketftp's log go into the notes, as the evidence. Real GCS accepts
both; comparing the engines' writes needs a real bucket.

The emulator runs with its filesystem backend (objects are files under
the work directory); even so it buffers an upload whole (about 4 GiB RSS
for the 1 GiB one), and the memory backend would keep the object in RAM
besides. It also answers nothing else while it takes in a big upload (a
listing sent during the 1 GiB seed waited for the seed to end), so the
objects are seeded before bucketftp starts: its start-up probe gives up
after 5 s. fake-gcs-server is a functional
fake, not a model of GCS's performance: the figures compare the two
engines' request patterns on the same fake, not what GCS would do.

Rounds alternate the contenders (bucketftp, unftp-sbe-gcs, bucketftp, …)
for each measure, as the S3 scenario does.
"""

import ftplib
import http.client
import json
import os
import re
import shutil
import statistics
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, urlparse

from .. import ftp_clients, servers
from ..procs import MIB, Sampler

SCENARIO = "gcs"
BUCKET = "bench"
PREFIX = "bftp"  # gs://BUCKET/PREFIX is both engines' storage URL
LIST_REPS = 5


def list_count(ctx):
    """Objects in the listed directory (the LIST measure is named after it:
    f"LIST {list_count(ctx):,} objects")."""
    return 200 if ctx.quick else 1000


class JsonApi:
    """The emulator's GCS JSON API, for seeding and cleaning up (bodies are
    streamed from disk, never read whole into memory)."""

    def __init__(self, endpoint, bucket):
        u = urlparse(endpoint)
        self.host, self.port = u.hostname, u.port
        self.endpoint = endpoint
        self.bucket = bucket

    def _conn(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=600, blocksize=MIB)

    def _request(self, method, path, body=None, headers=None, conn=None, ok=(200, 204)):
        own = conn is None
        conn = conn or self._conn()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status not in ok:
                raise RuntimeError(f"fake-gcs-server: {method} {path} → {resp.status} {data[:300]!r}")
            return json.loads(data) if data else None
        finally:
            if own:
                conn.close()

    def create_bucket(self):
        self._request("POST", "/storage/v1/b", json.dumps({"name": self.bucket}),
                      {"Content-Type": "application/json"})

    def _upload_path(self, key):
        return f"/upload/storage/v1/b/{self.bucket}/o?uploadType=media&name={quote(key, safe='')}"

    def upload_file(self, key, path):
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            self._request("POST", self._upload_path(key), f,
                          {"Content-Type": "application/octet-stream", "Content-Length": str(size)})

    def upload_many(self, keys, payload, parallel=8):
        """Uploads `payload` under every key, over `parallel` keep-alive
        connections."""
        def work(chunk):
            conn = self._conn()
            try:
                for key in chunk:
                    self._request("POST", self._upload_path(key), payload,
                                  {"Content-Type": "application/octet-stream"}, conn=conn)
            finally:
                conn.close()

        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(work, [keys[i::parallel] for i in range(parallel)]))

    def object_url(self, key):
        return f"{self.endpoint}/storage/v1/b/{self.bucket}/o/{quote(key, safe='')}?alt=media"

    def size(self, key):
        meta = self._request("GET", f"/storage/v1/b/{self.bucket}/o/{quote(key, safe='')}")
        return int(meta["size"])

    def keys(self, prefix):
        out, token = [], None
        while True:
            q = f"prefix={quote(prefix, safe='')}&maxResults=1000"
            if token:
                q += f"&pageToken={quote(token, safe='')}"
            page = self._request("GET", f"/storage/v1/b/{self.bucket}/o?{q}") or {}
            out += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return out

    def delete_prefix(self, prefix, parallel=8):
        keys = self.keys(prefix)

        def work(chunk):
            conn = self._conn()
            try:
                for key in chunk:
                    self._request("DELETE", f"/storage/v1/b/{self.bucket}/o/{quote(key, safe='')}",
                                  conn=conn, ok=(200, 204, 404))
            finally:
                conn.close()

        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(work, [keys[i::parallel] for i in range(parallel)]))
        return len(keys)


def attempt_stor(ep, name, src, log_path):
    """One STOR that is expected to fail: returns (the reply the client got,
    what bucketftp's audit log says about it). A server that gives up on an
    upload closes the data connection while the client is still sending;
    its reply then waits on the control connection."""
    ftp = ftplib.FTP()
    ftp.connect(ep.host, ep.port, timeout=120)
    ftp.login(ep.user, ep.password)
    try:
        with open(src, "rb") as f:
            reply = "succeeded: " + ftp.storbinary(f"STOR {name}", f, blocksize=MIB)
    except ftplib.Error as e:
        reply = str(e)
    except OSError as e:
        try:
            reply = ftp.getresp()
        except ftplib.Error as e2:
            reply = str(e2)
        reply += f" (after the data connection failed: {e})"
    finally:
        ftp.close()
    return reply, audit_cause(log_path, name)


def audit_cause(log_path, name):
    """The failing request and the emulator's answer, from bucketftp's
    audit line for STOR /name."""
    try:
        with open(log_path, errors="replace") as f:
            text = re.sub(r"\x1b\[[0-9;]*m", "", f.read())
    except OSError:
        return "no log"
    lines = [ln for ln in text.splitlines() if 'command="STOR"' in ln and f"path=/{name} " in ln]
    if not lines:
        return "no audit line"
    line = lines[-1]
    request = re.search(r"Error performing (\w+) \S*?(/" + BUCKET + r"/\S+)", line)
    status = re.search(r"non-2xx status code: (\d{3}[^:]*)", line)
    message = re.search(r'message\\*":\\*"([^"\\]+)', line)
    if request and status:
        text = f"{request.group(1)} {request.group(2)} → {status.group(1).strip()}"
        return text + (f" ({message.group(1)})" if message else "")
    cause = re.search(r'cause="(.*)"$', line)
    return (cause.group(1) if cause else line)[:400]


def run(ctx):
    size = ctx.sizes["big"]
    src = ctx.source(size)
    count, fsize, sessions = ctx.sizes["small_count"], ctx.sizes["small_size"], ctx.sizes["sessions"]
    n_listed = list_count(ctx)
    workdir = ctx.fresh_dir("gcs")
    emu = servers.start_fake_gcs(ctx.workdir, os.path.join(workdir, "data"))
    started = [emu]
    try:
        api = JsonApi(emu.endpoint, BUCKET)
        api.create_bucket()
        # Before the servers start: fake-gcs-server answers nothing else while it
        # takes in the big upload, and bucketftp gives its start-up probe 5 s.
        ctx.log(f"gcs: seeding {size // MIB} MiB, {count} × {fsize} B and {n_listed} listed objects")
        api.upload_file(f"{PREFIX}/seed.bin", src)
        # What ftp_clients.many_files writes and checks (the length).
        payload = bytes(range(256)) * (fsize // 256) + b"x" * (fsize % 256)
        api.upload_many([f"{PREFIX}/small/f{i:05d}" for i in range(count)], payload)
        api.upload_many([f"{PREFIX}/list/object-{i:06d}.dat" for i in range(n_listed)], b"x\n")

        options = servers.gcs_options(emu.endpoint, os.path.join(workdir, "service-account.json"))
        url = f"gs://{BUCKET}/{PREFIX}"
        bftp = servers.start_bucketftp(ctx.tools["bucketftp"], url, options, ctx.workdir)
        started.append(bftp.server)
        sbe = servers.start_bucketftp_sbe_gcs(ctx.tools["bucketftp"], url, options, ctx.workdir)
        started.append(sbe.server)
        engines = [bftp, sbe]
        at_rest = {ep.name: ep.server.rss_mib() for ep in engines}

        big = f"{size // MIB} MiB" if size < 1024 * MIB else f"{size // (1024 * MIB)} GiB"
        small = f"{count} × {fsize // 1024} KiB, {sessions} sessions"
        listing = f"LIST {n_listed:,} objects"
        res = ctx.results

        # The object_store engine's writes, once: they fail on this emulator.
        small_src = os.path.join(workdir, "small.bin")
        with open(small_src, "wb") as f:
            f.write(payload)
        for what, path in ((f"STOR {big}", src), (f"STOR 1 × {fsize // 1024} KiB", small_src)):
            name = f"attempt-{os.path.basename(path)}"
            reply, cause = attempt_stor(bftp, name, path, bftp.server.log_path)
            ctx.log(f"gcs: bucketftp (object_store) {what}: {reply}; {cause}")
            res.note(
                f"gcs: {what} through the object_store engine cannot run on fake-gcs-server "
                f"(no XML API writes): the client got \"{reply}\"; bucketftp's log: {cause}"
            )

        for r in ctx.rounds_range():
            ctx.log(f"gcs round {r + 1}/{ctx.rounds}: RETR {big}")
            for ep in engines:
                ctx.settle()
                with Sampler(ep.server) as s, Sampler(emu) as e:
                    t = ftp_clients.curl_retr(ep.url("seed.bin"), size)
                res.add(SCENARIO, f"RETR {big}", ep.name, size / MIB / t, "MiB/s",
                        peak_mib=s.peak_mib, cpu_s=s.cpu_s, emulator_cpu_s=e.cpu_s)
            ctx.settle()
            with Sampler(emu) as e:
                got = ftp_clients._curl(["-o", "/dev/null", api.object_url(f"{PREFIX}/seed.bin")])
            if got["downloaded"] != size:
                raise RuntimeError(f"curl direct: {got['downloaded']} of {size} bytes")
            res.add(SCENARIO, f"RETR {big}", "curl direct", size / MIB / got["transfer_s"], "MiB/s",
                    emulator_cpu_s=e.cpu_s)

            ctx.log(f"gcs round {r + 1}/{ctx.rounds}: RETR {small}")
            for ep in engines:
                ctx.settle()
                with Sampler(ep.server) as s, Sampler(emu) as e:
                    t = ftp_clients.many_files(ep, "small", count, fsize, sessions, "retr")
                res.add(SCENARIO, f"RETR {small}", ep.name, count / t, "files/s",
                        peak_mib=s.peak_mib, cpu_s=s.cpu_s, emulator_cpu_s=e.cpu_s)

            ctx.log(f"gcs round {r + 1}/{ctx.rounds}: {listing} × {LIST_REPS}")
            for ep in engines:
                ctx.settle()
                times = []
                with Sampler(ep.server) as s, Sampler(emu) as e:
                    for _ in range(LIST_REPS):
                        t, lines = ftp_clients.list_dir(ep, "/list")
                        if lines != n_listed:
                            raise RuntimeError(f"{ep.name}: LIST returned {lines} lines, expected {n_listed}")
                        times.append(t)
                res.add(SCENARIO, listing, ep.name, statistics.median(times) * 1000, "ms",
                        higher_is_better=False, peak_mib=s.peak_mib, cpu_s=s.cpu_s,
                        emulator_cpu_s=e.cpu_s / LIST_REPS)

            ctx.log(f"gcs round {r + 1}/{ctx.rounds}: STOR {big} (unftp-sbe-gcs only)")
            ctx.settle()
            with Sampler(sbe.server) as s, Sampler(emu) as e:
                t = ftp_clients.curl_stor(sbe.url(f"stor-{r}.bin"), src, size)
            res.add(SCENARIO, f"STOR {big}", sbe.name, size / MIB / t, "MiB/s",
                    peak_mib=s.peak_mib, cpu_s=s.cpu_s, emulator_cpu_s=e.cpu_s)
            stored = api.size(f"{PREFIX}/stor-{r}.bin")
            if stored != size:
                raise RuntimeError(f"unftp-sbe-gcs STOR: object has {stored} bytes, expected {size}")
            api.delete_prefix(f"{PREFIX}/stor-{r}.bin")

            ctx.log(f"gcs round {r + 1}/{ctx.rounds}: STOR {small} (unftp-sbe-gcs only)")
            d = f"small-stor-{r}"
            ftp_clients.ftp_mkdir(sbe, d)
            ctx.settle()
            with Sampler(sbe.server) as s, Sampler(emu) as e:
                t = ftp_clients.many_files(sbe, d, count, fsize, sessions, "stor")
            res.add(SCENARIO, f"STOR {small}", sbe.name, count / t, "files/s",
                    peak_mib=s.peak_mib, cpu_s=s.cpu_s, emulator_cpu_s=e.cpu_s)
            stored = len([k for k in api.keys(f"{PREFIX}/{d}/") if not k.endswith("/")])
            if stored != count:
                raise RuntimeError(f"unftp-sbe-gcs STOR: {stored} objects under {d}/, expected {count}")
            api.delete_prefix(f"{PREFIX}/{d}/")

        res.note(
            "gcs: RSS at rest " + ", ".join(f"{n} {v:.0f} MiB" for n, v in at_rest.items())
            + f"; the LIST row is the median of {LIST_REPS} LISTs per round (emulator CPU per LIST); "
            "STOR rows have unftp-sbe-gcs only (see the object_store notes); "
            "fake-gcs-server (filesystem backend) is a functional fake, so these compare the "
            "engines' request patterns, not GCS"
        )
    finally:
        for p in reversed(started):
            p.stop()
        shutil.rmtree(workdir, ignore_errors=True)
