"""Benchmarks bucketftp against its peers and the ceiling (run through
bench/run.sh, which installs and builds what this drives).

    bench.py [--quick] [--rounds N] [local] [s3] [gcs] [list] [memory] [sessions]
    bench.py --report RUN.json [RUN.json …]   (merge earlier runs, run nothing)

Each scenario runs its contenders alternately, round after round, and the
table shows medians with ratios to the peers measured in the same run.
"""

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness.context import Context  # noqa: E402
from harness.results import (  # noqa: E402
    Results,
    chart,
    memory_target,
    peak_share_target,
    ratio_target,
    report_targets,
    time_ratio_target,
)
from harness.scenarios import gcs, listing, local, memory, s3, sessions  # noqa: E402

SCENARIOS = {"local": local, "s3": s3, "gcs": gcs, "list": listing, "memory": memory,
             "sessions": sessions}


def targets(ctx):
    sz = ctx.sizes
    big = f"{sz['big'] // 2**20} MiB" if sz["big"] < 2**30 else f"{sz['big'] // 2**30} GiB"
    small = f"{sz['small_count']} × {sz['small_size'] // 1024} KiB, {sz['sessions']} sessions"
    n_up, n_idle = sz["mem_uploads"], sz["idle"]
    mem_measure = f"peak RSS, {n_up} concurrent {sz['mem_size'] // 2**20} MiB STOR ({ctx.memory_store})"
    out = []
    # Issue #18's goals: uploads at vsftpd parity (also without SHA-256,
    # which vsftpd does not compute), S3 single streams at 0.95× boto3.
    for m in (f"STOR {big}", f"RETR {big}", f"STOR {small}", f"RETR {small}"):
        out.append(ratio_target(f"local {m} ≥ 1× vsftpd", "local", m, "vsftpd", 1.0))
    for m in (f"STOR {big}", f"STOR {small}"):
        out.append(ratio_target(f"local {m}, upload_sha256 = false ≥ 1× vsftpd", "local", m, "vsftpd", 1.0,
                                contender=local.NO_SHA))
    for m in (f"STOR {big}", f"RETR {big}"):
        out.append(ratio_target(f"s3 {m} ≥ 0.95× boto3 direct", "s3", m, "boto3 direct", 0.95))
    out.append(ratio_target(f"s3 STOR {big}, upload_sha256 = false ≥ 0.95× boto3 direct", "s3", f"STOR {big}",
                            "boto3 direct", 0.95, contender=s3.NO_SHA))
    out.append(ratio_target(f"s3 STOR {big} ≥ 1× rclone serve ftp", "s3", f"STOR {big}", "rclone serve ftp", 1.0))
    out.append(ratio_target(f"s3 RETR {big} ≥ 2× rclone serve ftp", "s3", f"RETR {big}", "rclone serve ftp", 2.0))
    for m in (f"STOR {big}", f"RETR {big}"):
        out.append(peak_share_target(f"s3 {m} peak RSS ≤ ½ rclone serve ftp's", "s3", m, "rclone serve ftp", 0.5))
    gcs_list = f"LIST {gcs.list_count(ctx):,} objects"
    for m in (f"RETR {big}", f"RETR {small}", gcs_list):
        out.append(ratio_target(f"gcs {m} ≥ 1× unftp-sbe-gcs", "gcs", m, "unftp-sbe-gcs", 1.0))
    out.append(
        memory_target(
            f"peak RSS, {n_up} concurrent uploads ≤ {n_up} × 2 parts + 50 MiB",
            "memory",
            mem_measure,
            lambda _res: memory.upload_limit_mib(ctx),
        )
    )
    n_dl, dl_size, budget = sz["mem_downloads"], sz["mem_dl_size"], sz["mem_budget"]
    dl = f"{n_dl} concurrent {dl_size // 2**20} MiB RETR (s3, memory_budget {budget // 2**20} MiB)"
    out.append(
        memory_target(
            f"peak RSS, {dl} ≤ budget + 64 MiB",
            "memory",
            f"peak RSS, {dl}",
            lambda _res: budget / 2**20 + 64,
        )
    )
    out.append(
        ratio_target(f"aggregate throughput, {dl} ≥ 1× boto3", "memory", f"aggregate throughput, {dl}", "boto3 direct", 1.0)
    )
    out.append(
        memory_target(
            f"RSS with {n_idle} idle sessions ≤ 100 MiB", "memory", f"RSS with {n_idle} idle sessions", lambda _r: 100
        )
    )
    out.append(
        time_ratio_target(
            f"LIST {sz['list_count']:,} ≤ 1.5× the direct listing",
            "list",
            f"LIST {sz['list_count']:,} objects",
            "boto3 direct",
            1.5,
        )
    )
    return out


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPU ({cpu}), {mem:.0f} GiB RAM, load average {os.getloadavg()[0]:.1f} at start"


def publish(ctx, results, mode, rounds, failures, out_dir, log=None):
    """Prints the table, the targets and the notes, and writes them (.md),
    the raw samples (.json) and the chart (.png) to `out_dir`."""
    log = log or ctx.log
    report = [
        f"bucketftp benchmark ({mode}, {rounds} rounds, medians), {datetime.datetime.now():%Y-%m-%d %H:%M}",
        f"machine: {results.config.get('machine', '?')}",
        "",
        results.table(),
        "",
        "Targets" + (" (quick mode: sizes are smaller than the targets are stated for)" if ctx.quick else ""),
        "",
        report_targets(results, targets(ctx)),
    ]
    if results.notes:
        report += ["", "Notes:"] + [f"- {n}" for n in results.notes]
    if failures:
        report += ["", "FAILED scenarios:"] + [f"- {f}" for f in failures]
    text = "\n".join(report)
    print(text)
    os.makedirs(out_dir, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(out_dir, f"{stamp}-{mode}.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out_dir, f"{stamp}-{mode}.json"), "w") as f:
        f.write(results.to_json() + "\n")
    png = os.path.join(out_dir, f"{stamp}-{mode}.png")
    title = f"bucketftp ÷ peers, {mode} run, {rounds} rounds (medians), {datetime.datetime.now():%Y-%m-%d}"
    if chart(results, targets(ctx), png, title):
        log(f"chart: {png}")
    else:
        log("chart: not drawn (no ratios, or matplotlib missing: pip install matplotlib)")


def report_only(paths, out_dir):
    """`--report`: no run; the samples of earlier runs (their .json files,
    e.g. one run of `local s3 memory` and one of `gcs list`) merged into one
    table, target list and chart. Each ratio still compares contenders of
    the same run: a scenario comes whole (rows and notes) from the last
    file that has it."""
    merged = Results()
    runs = []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        loaded = Results.from_json(data)
        scenarios = {row.scenario for row in loaded.rows.values()}
        merged.rows = {k: r for k, r in merged.rows.items() if r.scenario not in scenarios}
        merged.rows.update(loaded.rows)
        merged.notes = [n for n in merged.notes if n.split(":", 1)[0] not in scenarios]
        merged.notes += loaded.notes
        merged.config = {**data.get("config", {}), **merged.config}
        runs.append(data.get("config", {}))
    order = list(SCENARIOS)
    merged.rows = dict(sorted(merged.rows.items(),
                              key=lambda kv: order.index(kv[1].scenario) if kv[1].scenario in order else len(order)))
    quick = any(c.get("quick") for c in runs)
    rounds = min((c.get("rounds", 0) for c in runs), default=0)
    merged.config["merged_from"] = [os.path.basename(p) for p in paths]
    ctx = types.SimpleNamespace(
        quick=quick,
        sizes=runs[0].get("sizes") if runs else {},
        memory_store=next((c["memory_store"] for c in runs if "memory_store" in c), "s3"),
    )

    def log(msg):
        print(msg, file=sys.stderr)

    publish(ctx, merged, ("quick" if quick else "full") + "-merged", rounds, [], out_dir, log=log)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                   help=f"any of {', '.join(SCENARIOS)} (default: all)")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--rounds", type=int, default=3, help="rounds per measure (default 3)")
    p.add_argument("--memory-store", choices=["s3", "file"], default="s3",
                   help="where the concurrent uploads of the memory scenario go (default s3)")
    p.add_argument("--workdir", help="scratch directory (default: a new one under $TMPDIR, removed at the end)")
    p.add_argument("--results", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                   help="where to write the table and the raw samples")
    p.add_argument("--report", nargs="+", metavar="JSON",
                   help="run nothing: merge the raw samples of earlier runs (bench/results/*.json) "
                        "into one table, target list and chart")
    args = p.parse_args()
    if args.report:
        return report_only(args.report, args.results)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    chosen = args.scenarios or list(SCENARIOS)
    tools = {
        "bucketftp": os.environ.get("BUCKETFTP_BIN", "target/release/bucketftp"),
        "s3s_fs": os.environ.get("S3S_FS_BIN", "s3s-fs"),
        "rclone": os.environ.get("RCLONE_BIN", "rclone"),
    }
    own_workdir = args.workdir is None
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="bucketftp-bench-", dir=os.environ.get("BENCH_TMP"))
    ctx = Context(args, tools)
    ctx.memory_store = args.memory_store
    ctx.results.config["machine"] = machine()
    ctx.results.config["scenarios"] = chosen
    ctx.results.config["memory_store"] = args.memory_store
    failures = []
    try:
        for name in chosen:
            ctx.log(f"== scenario {name}")
            try:
                SCENARIOS[name].run(ctx)
            except Exception as e:  # keep the other scenarios' figures
                failures.append(f"{name}: {e}")
                ctx.log(f"scenario {name} FAILED: {e}")
    finally:
        if own_workdir and not failures:
            shutil.rmtree(args.workdir, ignore_errors=True)
        elif failures:
            ctx.log(f"kept {args.workdir} (server logs: *.log) for the failures below")

    mode = "quick" if args.quick else "full"
    publish(ctx, ctx.results, mode, args.rounds, failures, args.results)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
