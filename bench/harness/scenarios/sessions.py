"""Scenario 6: sessions. One bucketftp (file:// storage) holding N logged-in
control connections at once (issue #18: 10,000 per replica), first all
idle, then with 1 % of them transferring (STOR + RETR of 1 MiB, byte-exact,
in a loop). For each phase it records the gateway's RSS (VmRSS) and peak
(VmHWM), open file descriptors, threads and the CPU seconds it used over
the window. Nothing here is a speed target: the figures are recorded, the
only failures are a refused login, a dropped session or a corrupt transfer.

The client is one asyncio process. Its connections come from many source
addresses (127.0.0.2, 127.0.0.3, … — all of 127.0.0.0/8 is loopback on
Linux) so that `max_sessions_per_ip` is not what is measured; the gateway's
`max_sessions` and `max_unauthenticated` are raised through the
environment. Both ends need about one descriptor per session more than
the default 1,024 allows: bench/run.sh raises `ulimit -n`, and the
gateway inherits it.
"""

import asyncio
import os
import re
import resource
import shutil

from .. import servers
from ..procs import MIB

SCENARIO = "sessions"
PER_IP = 50  # sessions per source address (the default max_sessions_per_ip is 100)
LOGIN_PARALLEL = 64  # logins in flight at once (below max_unauthenticated_per_ip)
XFER_SIZE = MIB
# Descriptors the gateway holds per logged-in session, measured: the
# control socket only (tests/it/abuse.rs one_descriptor_per_session; engine
# patches 0106 and 0311 removed the two duplicates it once held).
FDS_PER_SESSION = 1
FDS_SPARE = 300  # listener, logs, runtime, data connections of the 1 %


class FtpError(RuntimeError):
    pass


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        return 0


def threads(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


class Session:
    """One control connection from source address `src`."""

    def __init__(self, src):
        self.src = src
        self.reader = None
        self.writer = None

    async def reply(self):
        """The next (possibly multi-line) reply: (code, text)."""
        line = (await self.reader.readline()).decode(errors="replace")
        if len(line) < 4:
            raise FtpError(f"connection closed or bad reply {line!r}")
        code, text = line[:3], line
        if line[3] == "-":
            while True:
                more = (await self.reader.readline()).decode(errors="replace")
                if not more:
                    raise FtpError("connection closed in a multi-line reply")
                text += more
                if more.startswith(code + " "):
                    break
        return int(code), text

    async def cmd(self, line, expect):
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        code, text = await self.reply()
        if code // 100 != expect:
            raise FtpError(f"{line.split()[0]}: {text.strip()}")
        return text

    async def login(self, port, user, password):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(self.src, 0))
        code, text = await self.reply()
        if code != 220:
            raise FtpError(f"greeting: {text.strip()}")
        await self.cmd(f"USER {user}", 3)
        await self.cmd(f"PASS {password}", 2)
        await self.cmd("TYPE I", 2)

    async def pasv(self):
        text = await self.cmd("PASV", 2)
        m = re.search(r"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", text)
        if not m:
            raise FtpError(f"PASV: {text.strip()}")
        p = [int(x) for x in m.groups()]
        # The data connection comes from the control connection's address:
        # the gateway refuses data from any other.
        return await asyncio.open_connection("127.0.0.1", p[4] * 256 + p[5], local_addr=(self.src, 0))

    async def stor(self, name, data):
        dr, dw = await self.pasv()
        await self.cmd(f"STOR {name}", 1)
        dw.write(data)
        await dw.drain()
        dw.close()
        await dw.wait_closed()
        code, text = await self.reply()
        if code != 226:
            raise FtpError(f"STOR {name}: {text.strip()}")

    async def retr(self, name):
        dr, dw = await self.pasv()
        await self.cmd(f"RETR {name}", 1)
        chunks = []
        while True:
            chunk = await dr.read(256 * 1024)
            if not chunk:
                break
            chunks.append(chunk)
        dw.close()
        code, text = await self.reply()
        if code != 226:
            raise FtpError(f"RETR {name}: {text.strip()}")
        return b"".join(chunks)

    def close(self):
        if self.writer is not None:
            self.writer.close()


def source_address(i):
    """127.0.0.2 … 127.0.255.254, PER_IP sessions each."""
    k = i // PER_IP + 2
    return f"127.0.{k // 254}.{k % 254 + 1}" if k >= 254 else f"127.0.0.{k}"


async def open_sessions(ep, n):
    sessions = [Session(source_address(i)) for i in range(n)]
    sem = asyncio.Semaphore(LOGIN_PARALLEL)

    async def one(s):
        async with sem:
            await s.login(ep.port, ep.user, ep.password)

    results = await asyncio.gather(*(one(s) for s in sessions), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        for s in sessions:
            s.close()
        raise FtpError(f"{len(errors)} of {n} logins failed, first: {errors[0]!r}")
    return sessions


async def check_alive(sessions):
    """NOOP on every session (64 at a time): all must still be logged in."""
    sem = asyncio.Semaphore(LOGIN_PARALLEL)

    async def one(s):
        async with sem:
            await s.cmd("NOOP", 2)

    results = await asyncio.gather(*(one(s) for s in sessions), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise FtpError(f"{len(errors)} of {len(sessions)} sessions lost, first: {errors[0]!r}")


def snapshot(server):
    return {
        "rss": server.rss_mib(),
        "hwm": server.peak_mib(),
        "fds": fds(server.pid),
        "threads": threads(server.pid),
        "cpu": server.cpu(),
    }


async def measure(ctx, ep, n, window):
    srv = ep.server
    # Let start-up's memory go back (as in the memory scenario).
    await asyncio.sleep(1.0)
    rest = snapshot(srv)
    ctx.log(f"sessions: at rest {rest['rss']:.1f} MiB, {rest['fds']} fds; logging in {n}")
    sessions = await open_sessions(ep, n)
    try:
        idle0 = snapshot(srv)
        ctx.log(f"sessions: {n} logged in, {idle0['rss']:.1f} MiB, {idle0['fds']} fds; idle for {window:.0f} s")
        await asyncio.sleep(window)  # the measurement window, not a synchronisation
        idle1 = snapshot(srv)
        await check_alive(sessions)

        movers = sessions[: max(1, n // 100)]
        data = os.urandom(XFER_SIZE)
        stop = asyncio.Event()
        done = [0]

        async def loop(i, s):
            name = f"x{i}.bin"
            while not stop.is_set():
                await s.stor(name, data)
                got = await s.retr(name)
                if got != data:
                    raise FtpError(f"RETR {name}: {len(got)} bytes, not the {len(data)} stored")
                done[0] += 1

        srv.reset_peak()
        xfer0 = snapshot(srv)
        ctx.log(f"sessions: {len(movers)} of them transfer 1 MiB STOR+RETR for {window:.0f} s")
        tasks = [asyncio.ensure_future(loop(i, s)) for i, s in enumerate(movers)]
        await asyncio.sleep(window)  # the measurement window
        xfer1 = snapshot(srv)
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise FtpError(f"{len(errors)} of {len(movers)} transferring sessions failed, first: {errors[0]!r}")
        await check_alive(sessions)
    finally:
        for s in sessions:
            s.close()
    return rest, idle0, idle1, xfer0, xfer1, len(movers), done[0]


def run(ctx):
    n = ctx.sizes["sessions_n"]
    window = ctx.sizes["sessions_window"]
    res = ctx.results
    # The gateway inherits this process's descriptor limit. Where it cannot
    # hold n sessions (a hard limit that cannot be raised), measure as many
    # as fit and say so, rather than measure the EMFILE path.
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    fit = (limit - FDS_SPARE) // FDS_PER_SESSION
    if n > fit:
        ctx.log(f"sessions: ulimit -n is {limit}: measuring {fit} sessions instead of {n}")
        res.note(f"sessions: {fit} sessions instead of {n}: ulimit -n is {limit} here and the gateway "
                 f"holds {FDS_PER_SESSION} descriptors per session")
        n = fit
    root = ctx.fresh_dir("sessions")
    env = {
        "BUCKETFTP__SERVER__MAX_SESSIONS": str(n + n // 10),
        "BUCKETFTP__SERVER__MAX_UNAUTHENTICATED": str(4 * LOGIN_PARALLEL),
        # No idle session may time out during the windows.
        "BUCKETFTP__SERVER__IDLE_TIMEOUT": "1h",
    }
    try:
        for r in ctx.rounds_range():
            ctx.log(f"sessions round {r + 1}/{ctx.rounds}: {n} sessions")
            ep = servers.start_bucketftp(ctx.tools["bucketftp"], f"file://{root}", {}, ctx.workdir,
                                         name="bucketftp-sessions", env=env)
            try:
                rest, idle0, idle1, xfer0, xfer1, movers, done = asyncio.run(measure(ctx, ep, n, window))
            finally:
                ep.server.stop()
            per_session = (idle1["rss"] - rest["rss"]) * 1024 / n
            res.add(SCENARIO, f"RSS with {n} idle sessions", "bucketftp", idle1["rss"], "MiB",
                    higher_is_better=False, peak_mib=idle1["hwm"], cpu_s=idle1["cpu"] - idle0["cpu"])
            res.add(SCENARIO, f"RSS per idle session ({n})", "bucketftp", per_session, "KiB",
                    higher_is_better=False)
            res.add(SCENARIO, f"open fds with {n} idle sessions", "bucketftp", idle1["fds"], "fds",
                    higher_is_better=False)
            res.add(SCENARIO, f"CPU over {window:.0f} s, {n} idle sessions", "bucketftp",
                    idle1["cpu"] - idle0["cpu"], "s", higher_is_better=False)
            res.add(SCENARIO, f"RSS with {n} sessions, {movers} transferring", "bucketftp", xfer1["rss"], "MiB",
                    higher_is_better=False, peak_mib=xfer1["hwm"], cpu_s=xfer1["cpu"] - xfer0["cpu"])
            res.add(SCENARIO, f"CPU over {window:.0f} s, {n} sessions, {movers} transferring", "bucketftp",
                    xfer1["cpu"] - xfer0["cpu"], "s", higher_is_better=False)
            ctx.log(
                f"sessions: at rest {rest['rss']:.1f} MiB / {rest['fds']} fds / {rest['threads']} threads; "
                f"{n} idle: RSS {idle1['rss']:.1f} MiB (peak {idle1['hwm']:.1f}), {per_session:.1f} KiB/session, "
                f"{idle1['fds']} fds, {idle1['threads']} threads, CPU {idle1['cpu'] - idle0['cpu']:.2f} s "
                f"in {window:.0f} s; {movers} transferring: RSS {xfer1['rss']:.1f} MiB (peak {xfer1['hwm']:.1f}), "
                f"{xfer1['fds']} fds, {xfer1['threads']} threads, CPU {xfer1['cpu'] - xfer0['cpu']:.2f} s "
                f"in {window:.0f} s, {done} STOR+RETR pairs"
            )
            if r == 0:
                res.note(
                    f"sessions: RSS at rest {rest['rss']:.0f} MiB, {rest['fds']} fds; {n} idle sessions "
                    f"{idle1['rss']:.0f} MiB ({per_session:.0f} KiB per session), {idle1['fds']} fds, "
                    f"CPU {idle1['cpu'] - idle0['cpu']:.2f} s in {window:.0f} s; with {movers} of them "
                    f"transferring 1 MiB STOR+RETR: {xfer1['rss']:.0f} MiB (peak {xfer1['hwm']:.0f}), "
                    f"{xfer1['fds']} fds, CPU {xfer1['cpu'] - xfer0['cpu']:.2f} s in {window:.0f} s ({done} pairs)"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
