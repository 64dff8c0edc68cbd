"""Samples, medians, the results table and the targets.

Every figure is the median of its rounds. A ratio compares bucketftp with
another contender measured in the same run, always as "bucketftp's speed ÷
theirs" (for a time, speed = 1 / time), so above 1 means bucketftp was
faster.
"""

import json
import statistics

MIB = 1024 * 1024


class Row:
    """One measure of one contender: its samples over the rounds."""

    def __init__(self, scenario, measure, contender, unit, higher_is_better):
        self.scenario = scenario
        self.measure = measure
        self.contender = contender
        self.unit = unit
        self.higher_is_better = higher_is_better
        self.values = []
        self.peaks = []
        self.cpus = []
        self.emulator_cpus = []

    def median(self):
        return statistics.median(self.values) if self.values else None

    def _median_of(self, xs):
        xs = [x for x in xs if x is not None]
        return statistics.median(xs) if xs else None

    def peak(self):
        return self._median_of(self.peaks)

    def cpu(self):
        return self._median_of(self.cpus)

    def emulator_cpu(self):
        return self._median_of(self.emulator_cpus)

    def speed(self):
        m = self.median()
        if m is None or m == 0:
            return None
        return m if self.higher_is_better else 1.0 / m


class Results:
    def __init__(self):
        self.rows = {}
        self.notes = []
        self.config = {}

    def add(self, scenario, measure, contender, value, unit, higher_is_better=True,
            peak_mib=None, cpu_s=None, emulator_cpu_s=None):
        key = (scenario, measure, contender)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = Row(scenario, measure, contender, unit, higher_is_better)
        row.values.append(value)
        row.peaks.append(peak_mib)
        row.cpus.append(cpu_s)
        row.emulator_cpus.append(emulator_cpu_s)

    @classmethod
    def from_json(cls, data):
        """The samples `to_json` wrote (for `bench.py --report`)."""
        res = cls()
        res.config = data.get("config", {})
        res.notes = list(data.get("notes", []))
        for r in data["rows"]:
            # Files written before the flag was recorded: a speed has "/s"
            # in its unit; times (s, ms) and sizes (MiB) are better lower.
            better = r.get("higher_is_better", "/s" in r["unit"])
            n = len(r["values"])
            for i, v in enumerate(r["values"]):
                res.add(r["scenario"], r["measure"], r["contender"], v, r["unit"], better,
                        peak_mib=(r.get("peak_mib") or [None] * n)[i],
                        cpu_s=(r.get("cpu_s") or [None] * n)[i],
                        emulator_cpu_s=(r.get("emulator_cpu_s") or [None] * n)[i])
        return res

    def note(self, text):
        self.notes.append(text)

    def get(self, scenario, measure, contender):
        return self.rows.get((scenario, measure, contender))

    def ratio(self, scenario, measure, contender, versus):
        """`contender`'s speed ÷ `versus`'s speed for one measure."""
        a = self.get(scenario, measure, contender)
        b = self.get(scenario, measure, versus)
        if a is None or b is None or a.speed() is None or b.speed() is None:
            return None
        return a.speed() / b.speed()

    def table(self):
        """The results as a Markdown table."""
        out = [
            "| scenario | measure | contender | median | range | peak RSS MiB | CPU s | emulator CPU s | bucketftp ÷ this |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in self.rows.values():
            ratio = ""
            if row.contender != "bucketftp":
                r = self.ratio(row.scenario, row.measure, "bucketftp", row.contender)
                ratio = f"{r:.2f}×" if r is not None else ""
            spread = f"{fmt(min(row.values))}–{fmt(max(row.values))}" if len(row.values) > 1 else ""
            out.append(
                f"| {row.scenario} | {row.measure} | {row.contender} | {fmt(row.median())} {row.unit}"
                f" | {spread} | {fmt(row.peak())} | {fmt(row.cpu())} | {fmt(row.emulator_cpu())} | {ratio} |"
            )
        return "\n".join(out)

    def to_json(self):
        return json.dumps(
            {
                "config": self.config,
                "rows": [
                    {
                        "scenario": r.scenario,
                        "measure": r.measure,
                        "contender": r.contender,
                        "unit": r.unit,
                        "higher_is_better": r.higher_is_better,
                        "values": r.values,
                        "median": r.median(),
                        "peak_mib": r.peaks,
                        "cpu_s": r.cpus,
                        "emulator_cpu_s": r.emulator_cpus,
                    }
                    for r in self.rows.values()
                ],
                "notes": self.notes,
            },
            indent=1,
        )


def fmt(x):
    if x is None:
        return ""
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


class Target:
    """A goal from the issue: `check(results)` returns (measured text, ok or
    None when the figures are missing). `bar` tells the chart where the
    goal sits: (scenario, measure, versus, least speed ratio, contender)
    for a ratio to a peer, or None for a goal drawn from `score`."""

    def __init__(self, name, check, bar=None, score=None):
        self.name = name
        self.check = check
        self.bar = bar
        # For goals with no peer (memory): results -> "limit ÷ measured",
        # so that, like a ratio, at least 1 means met.
        self.score = score


def ratio_target(name, scenario, measure, versus, at_least, contender="bucketftp"):
    def check(res):
        r = res.ratio(scenario, measure, contender, versus)
        if r is None:
            return "not measured", None
        return f"{r:.2f}× (need ≥ {at_least}×)", r >= at_least

    return Target(name, check, bar=(scenario, measure, versus, at_least, contender))


def time_ratio_target(name, scenario, measure, versus, at_most):
    def check(res):
        r = res.ratio(scenario, measure, "bucketftp", versus)
        if r is None:
            return "not measured", None
        slower = 1.0 / r
        return f"{slower:.2f}× the time (need ≤ {at_most}×)", slower <= at_most

    return Target(name, check, bar=(scenario, measure, versus, 1.0 / at_most, "bucketftp"))


def memory_target(name, scenario, measure, limit_mib_fn):
    def check(res):
        row = res.get(scenario, measure, "bucketftp")
        if row is None:
            return "not measured", None
        limit = limit_mib_fn(res)
        return f"{row.median():.0f} MiB (need ≤ {limit:.0f} MiB)", row.median() <= limit

    def score(res):
        row = res.get(scenario, measure, "bucketftp")
        if row is None or not row.median():
            return None
        return limit_mib_fn(res) / row.median()

    return Target(name, check, score=score)


def peak_share_target(name, scenario, measure, versus, at_most):
    """bucketftp's peak RSS during `measure` at most `at_most` × `versus`'s
    in the same run (median of the rounds' peaks for each)."""

    def check(res):
        a, b = res.get(scenario, measure, "bucketftp"), res.get(scenario, measure, versus)
        if a is None or b is None or a.peak() is None or not b.peak():
            return "not measured", None
        share = a.peak() / b.peak()
        return f"{a.peak():.0f} MiB = {share:.2f}× {versus}'s {b.peak():.0f} (need ≤ {at_most}×)", share <= at_most

    def score(res):
        a, b = res.get(scenario, measure, "bucketftp"), res.get(scenario, measure, versus)
        if a is None or b is None or not a.peak() or not b.peak():
            return None
        return at_most * b.peak() / a.peak()

    return Target(name, check, score=score)


def report_targets(res, targets):
    lines = ["| target | measured | result |", "|---|---|---|"]
    for t in targets:
        text, ok = t.check(res)
        verdict = "—" if ok is None else ("PASS" if ok else "MISS")
        lines.append(f"| {t.name} | {text} | {verdict} |")
    return "\n".join(lines)


def chart(res, targets, path, title):
    """Writes a PNG of horizontal bars: bucketftp's ratio to every peer
    measured in the run (above 1: bucketftp faster), a black tick where a
    target puts the bar's threshold, and for goals without a peer (memory)
    the limit ÷ the measured value. Bars are green when they meet their
    target, red when they miss it, grey when no target applies. Returns
    False when matplotlib is not installed (bench/run.sh installs it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False

    goals = {(b[0], b[1], b[2], b[4]): b[3] for b in (t.bar for t in targets) if b}
    bars = []  # (label, value, threshold or None)
    # bucketftp's variants ("bucketftp, upload_sha256 = false") are drawn
    # against the peers too, never against bucketftp itself.
    own = [c for c in dict.fromkeys(r.contender for r in res.rows.values()) if c.startswith("bucketftp")]
    for row in res.rows.values():
        if row.contender.startswith("bucketftp"):
            continue
        for mine in own:
            r = res.ratio(row.scenario, row.measure, mine, row.contender)
            if r is None:
                continue
            variant = "" if mine == "bucketftp" else f" ({mine.removeprefix('bucketftp, ')})"
            bars.append((f"{row.scenario}: {row.measure}{variant} ÷ {row.contender}", r,
                         goals.get((row.scenario, row.measure, row.contender, mine))))
    for t in targets:
        if t.score is not None:
            v = t.score(res)
            if v is not None:
                bars.append((f"{t.name} (limit ÷ measured)", v, 1.0))
    if not bars:
        return False

    bars.reverse()  # matplotlib draws the first bar at the bottom
    labels = [b[0] for b in bars]
    values = [b[1] for b in bars]
    colors = ["#999999" if b[2] is None else ("#2e8b57" if b[1] >= b[2] else "#c0392b") for b in bars]
    fig, ax = plt.subplots(figsize=(11, 0.32 * len(bars) + 1.6))
    y = range(len(bars))
    ax.barh(y, values, color=colors, height=0.7)
    for i, (_label, value, goal) in enumerate(bars):
        if goal is not None:
            ax.plot([goal, goal], [i - 0.45, i + 0.45], color="black", linewidth=2)
        ax.text(value, i, f" {value:.2f}×", va="center", fontsize=8)
    ax.axvline(1.0, color="#444444", linewidth=0.8, linestyle="--")
    ax.set_yticks(list(y))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("bucketftp ÷ peer (speed; above 1 = bucketftp faster).  Black tick: target.")
    ax.set_xlim(0, max(values + [g for _l, _v, g in bars if g is not None]) * 1.18)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
