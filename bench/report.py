"""Turn raw measurements into medians, the comparison table and the verdict on the issue's targets.

Pure functions over plain dicts, so a saved JSON file can be re-reported (--markdown for the README):

    python bench/report.py results.json [--markdown]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

TARGETS = ("direct", "reference", "sidecar")
LABELS = {"direct": "direct (nginx)", "reference": "reference proxy", "sidecar": "sidecar"}
MIN_THROUGHPUT_RATIO = 0.70  # sidecar req/s over reference req/s
MAX_ADDED_MS = {"p50": 0.5, "p99": 1.0}  # over direct, at TARGET_RATE
TARGET_RATE = "2000"
QUANTILES = ("p50", "p99", "p99.9")
# A generator that sends its 99th percentile request more than this late was itself starved of CPU:
# the run measured the machine's other tenants as much as the proxy.
NOISY_LAG_MS = 0.5

Results = dict[str, Any]


def aggregate(raw: Results) -> Results:
    """Per target: medians over rounds (robust to one disturbed round), error sums, the raw rounds."""
    out: Results = {}
    for name, runs in raw.items():
        rps = [w["rps"] for w in runs["wrk"]]
        wrk = {
            "rps": round(statistics.median(rps), 1),
            "rps_min": min(rps),
            "rps_max": max(rps),
            "non_2xx": sum(w["non_2xx"] for w in runs["wrk"]),
            "socket_errors": sum(w["socket_errors"] for w in runs["wrk"]),
        }
        openloop = {rate: _merge_openloop(rounds) for rate, rounds in runs["openloop"].items() if rounds}
        out[name] = {"wrk": wrk, "openloop": openloop, "rounds": runs}
    return out


def _merge_openloop(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = rounds[0]["latency_ms"].keys()
    return {
        "achieved_rate": statistics.median(r["achieved_rate"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
        "latency_ms": {k: round(statistics.median(r["latency_ms"][k] for r in rounds), 3) for k in keys},
        "send_lag_p99_ms_max": max(r["send_lag_ms"]["p99"] for r in rounds),
        "noisy_runs": sum(r["send_lag_ms"]["p99"] > NOISY_LAG_MS for r in rounds),
        "runs": len(rounds),
    }


def added_latency(results: Results, name: str, rate: str) -> dict[str, float] | None:
    """Proxy percentile minus direct percentile (ms): what putting the proxy in the path costs."""
    try:
        proxy = results[name]["openloop"][rate]["latency_ms"]
        direct = results["direct"]["openloop"][rate]["latency_ms"]
    except KeyError:
        return None
    return {q: round(proxy[q] - direct[q], 3) for q in QUANTILES}


def verdict(results: Results) -> dict[str, Any]:
    """Check the issue's targets; a target that could not be measured is None, not False."""
    out: dict[str, Any] = {"throughput_ratio": None, "throughput_met": None, "latency_met": None}
    try:
        ratio = results["sidecar"]["wrk"]["rps"] / results["reference"]["wrk"]["rps"]
        out["throughput_ratio"] = round(ratio, 3)
        out["throughput_met"] = ratio >= MIN_THROUGHPUT_RATIO
    except (KeyError, ZeroDivisionError):
        pass
    added = added_latency(results, "sidecar", TARGET_RATE)
    if added is not None:
        out["added_ms_at_2000"] = added
        out["latency_met"] = all(added[q] < limit for q, limit in MAX_ADDED_MS.items())
    return out


def _yes_no(flag: bool | None) -> str:
    return "not measured" if flag is None else ("MET" if flag else "NOT MET")


def _wrk_lines(results: Results, present: list[str], settings: dict[str, Any]) -> list[str]:
    rounds = settings.get("rounds", 1)
    lines = [
        (
            f"Closed loop: wrk -t1 -c{settings['wrk_connections']} -d{settings['wrk_seconds']:g}s, "
            f"median of {rounds} round{'s' if rounds > 1 else ''} (req/s, higher is better)"
        )
    ]
    ref_rps = results.get("reference", {}).get("wrk", {}).get("rps")
    for name in present:
        w = results[name]["wrk"]
        spread = f"  ({w['rps_min']:,.0f}-{w['rps_max']:,.0f})" if rounds > 1 else ""
        rel = f"   {w['rps'] / ref_rps:6.1%} of reference" if ref_rps and name == "sidecar" else ""
        errs = w["non_2xx"] + w["socket_errors"]
        lines.append(f"  {LABELS[name]:<18}{w['rps']:>10,.0f}{spread}{rel}{f'   errors {errs}' if errs else ''}")
    return lines


def _openloop_lines(results: Results, present: list[str], settings: dict[str, Any], rate: int) -> list[str]:
    key = str(rate)
    lines = [
        (
            f"Open loop: {rate} req/s, {settings['openloop_seconds']:g} s after {settings['warmup_seconds']:g} s warm-up, "
            "ms from the scheduled send"
        ),
        (
            f"  {'':<18}{'rate':>6}{'err':>5}{'p50':>8}{'p90':>8}{'p99':>8}{'p99.9':>8}{'max':>8}"
            "   added over direct p50 / p99 / p99.9"
        ),
    ]
    for name in present:
        r = results[name]["openloop"].get(key)
        if r is None:
            continue
        ms = r["latency_ms"]
        added = added_latency(results, name, key) if name != "direct" else None
        extra = f"   {added['p50']:+.3f} / {added['p99']:+.3f} / {added['p99.9']:+.3f}" if added else ""
        noisy = f"   [noisy {r['noisy_runs']}/{r['runs']}]" if r["noisy_runs"] else ""
        lines.append(
            f"  {LABELS[name]:<18}{r['achieved_rate']:>6.0f}{r['errors']:>5}"
            + "".join(f"{ms[q]:>8.3f}" for q in ("p50", "p90", "p99", "p99.9", "max"))
            + extra
            + noisy
        )
    return lines


def table(results: Results, settings: dict[str, Any]) -> str:
    """The human report: throughput, then latency per rate, then failures and the verdict."""
    present = [t for t in TARGETS if "wrk" in results.get(t, {})]
    lines = _wrk_lines(results, present, settings)
    for rate in settings["rates"]:
        lines += ["", *_openloop_lines(results, present, settings, rate)]
    if any(r["noisy_runs"] for t in present for r in results[t]["openloop"].values()):
        lines += [
            "",
            (
                f"[noisy k/n]: in k of n runs the generator itself sent its p99 request > {NOISY_LAG_MS} ms late "
                "(CPU contention from other processes); tails of those runs are not trustworthy."
            ),
        ]
    for name in TARGETS:
        if "error" in results.get(name, {}):
            lines += ["", f"{LABELS[name]} FAILED: {results[name]['error'].splitlines()[0]}"]
    v = verdict(results)
    ratio = "" if v["throughput_ratio"] is None else f" ({v['throughput_ratio']:.1%})"
    lines += [
        "",
        f"Target: sidecar >= {MIN_THROUGHPUT_RATIO:.0%} of reference throughput: {_yes_no(v['throughput_met'])}{ratio}",
        (
            f"Target: sidecar added latency at {TARGET_RATE}/s < {MAX_ADDED_MS['p50']} ms p50 "
            f"and < {MAX_ADDED_MS['p99']} ms p99: {_yes_no(v['latency_met'])}"
        ),
    ]
    return "\n".join(lines)


def markdown(results: Results, settings: dict[str, Any]) -> str:
    """The same numbers as README tables (ms; added = proxy minus direct at the same percentile)."""
    present = [t for t in TARGETS if "wrk" in results.get(t, {})]
    ref_rps = results.get("reference", {}).get("wrk", {}).get("rps")
    lines = ["| target | wrk req/s (median) | min-max | vs reference |", "|---|---:|---:|---:|"]
    for name in present:
        w = results[name]["wrk"]
        rel = f"{w['rps'] / ref_rps:.1%}" if ref_rps and name != "direct" else ""
        lines.append(f"| {LABELS[name]} | {w['rps']:,.0f} | {w['rps_min']:,.0f}-{w['rps_max']:,.0f} | {rel} |")
    for rate in settings["rates"]:
        key = str(rate)
        lines += [
            "",
            f"| {rate} req/s | p50 | p90 | p99 | p99.9 | max | added p50 | added p99 | added p99.9 | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in present:
            r = results[name]["openloop"].get(key)
            if r is None:
                continue
            ms = r["latency_ms"]
            added = added_latency(results, name, key) if name != "direct" else None
            plus = [f"{added[q]:+.3f}" for q in QUANTILES] if added else ["", "", ""]
            cells = [f"{ms[q]:.3f}" for q in ("p50", "p90", "p99", "p99.9", "max")] + plus + [str(r["errors"])]
            lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    saved = json.loads(Path(sys.argv[1]).read_text())
    render = markdown if "--markdown" in sys.argv[2:] else table
    print(render(saved["results"], saved["settings"]))
