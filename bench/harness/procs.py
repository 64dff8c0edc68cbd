"""Starting, watching and stopping the processes a benchmark measures.

Everything listens on 127.0.0.1 only. Memory figures come from
/proc/PID/status: VmRSS (now) and VmHWM (peak since start, or since the
last `reset_peak`, which writes 5 to /proc/PID/clear_refs). CPU figures come
from /proc/PID/stat (user + system ticks of the process and its threads).
"""

import os
import signal
import socket
import subprocess
import time

MIB = 1024 * 1024
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=60.0, proc=None):
    """Polls until something accepts on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def status_kib(pid, field):
    """A `Vm…` field of /proc/PID/status in KiB (0 if the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def cpu_seconds(pid):
    """User + system CPU time of the process (all its threads) so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # fields[0] is the state (field 3 of stat); utime, stime are 14, 15.
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    except FileNotFoundError:
        return 0.0


class Server:
    """A long-running child process with its log in `log_path`."""

    def __init__(self, name, argv, log_path, env=None, port=None, cwd=None, ready_timeout=60.0):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.port = port
        self._log = open(log_path, "ab")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
        if port is not None:
            try:
                wait_for_port(port, ready_timeout, self.proc)
            except Exception:
                self.stop()
                raise RuntimeError(f"{name} did not start; see {log_path}:\n{self.log_tail()}")

    @property
    def pid(self):
        return self.proc.pid

    def log_tail(self, lines=15):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    def rss_mib(self):
        return status_kib(self.pid, "VmRSS") / 1024

    def peak_mib(self):
        return status_kib(self.pid, "VmHWM") / 1024

    def reset_peak(self):
        """Makes VmHWM start again from the current RSS."""
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")

    def cpu(self):
        return cpu_seconds(self.pid)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, grace=15.0):
        """SIGTERM, then SIGKILL after `grace` seconds; only this process group."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


class Sampler:
    """What one measured operation cost a server: peak RSS and CPU seconds.

    Use as a context manager around the operation; `peak_mib` is the
    process's VmHWM after resetting it at entry, `cpu_s` the CPU it used.
    """

    def __init__(self, server):
        self.server = server
        self.peak_mib = None
        self.cpu_s = None
        self.base_mib = None

    def __enter__(self):
        if self.server is not None:
            self.server.reset_peak()
            self.base_mib = self.server.rss_mib()
            self._cpu0 = self.server.cpu()
        return self

    def __exit__(self, *exc):
        if self.server is not None:
            self.peak_mib = self.server.peak_mib()
            self.cpu_s = self.server.cpu() - self._cpu0
        return False
