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
    None when the figures are missing)."""

    def __init__(self, name, check):
        self.name = name
        self.check = check


def ratio_target(name, scenario, measure, versus, at_least):
    def check(res):
        r = res.ratio(scenario, measure, "bucketftp", versus)
        if r is None:
            return "not measured", None
        return f"{r:.2f}× (need ≥ {at_least}×)", r >= at_least

    return Target(name, check)


def time_ratio_target(name, scenario, measure, versus, at_most):
    def check(res):
        r = res.ratio(scenario, measure, "bucketftp", versus)
        if r is None:
            return "not measured", None
        slower = 1.0 / r
        return f"{slower:.2f}× the time (need ≤ {at_most}×)", slower <= at_most

    return Target(name, check)


def memory_target(name, scenario, measure, limit_mib_fn):
    def check(res):
        row = res.get(scenario, measure, "bucketftp")
        if row is None:
            return "not measured", None
        limit = limit_mib_fn(res)
        return f"{row.median():.0f} MiB (need ≤ {limit:.0f} MiB)", row.median() <= limit

    return Target(name, check)


def report_targets(res, targets):
    lines = ["| target | measured | result |", "|---|---|---|"]
    for t in targets:
        text, ok = t.check(res)
        verdict = "—" if ok is None else ("PASS" if ok else "MISS")
        lines.append(f"| {t.name} | {text} | {verdict} |")
    return "\n".join(lines)
