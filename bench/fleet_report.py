"""The fleet bench's arithmetic and its report: Redis cost per request, percentiles, the tables, and the
model of a 1,000-pod fleet built from the measured figures. Pure: no process, no socket."""

from __future__ import annotations

import math
from typing import Any

from openloop import percentile

SCRIPT_CALLS = frozenset({"get", "set", "hgetall", "hset", "hdel", "publish"})
"""What the sidecar's Lua scripts run inside Redis (lua/ratelimit.lua, lua/breaker.lua). INFO commandstats
counts them like commands a client sent; a sidecar sends none of them itself (with no webhooks)."""
PODS, POD_RATE = 1000, 50
HEADROOM = 0.5
"""The model keeps every Redis at most half busy: room for bursts, failovers and a slower machine."""


def cost(per_node: dict[int, dict[str, int]], requests: int) -> dict[str, Any]:
    """Commands per request over every node: executed (as commandstats counts), sent (without what the
    scripts ran) and EVALSHA; and the busiest node's share, which a cluster's hash tags decide."""
    by_command: dict[str, int] = {}
    for stats in per_node.values():
        for name, calls in stats.items():
            by_command[name] = by_command.get(name, 0) + calls
    executed = sum(by_command.values())
    inner = sum(calls for name, calls in by_command.items() if name in SCRIPT_CALLS)
    totals = {str(port): sum(stats.values()) for port, stats in per_node.items()}

    def per(n: int) -> float | None:
        return round(n / requests, 4) if requests else None

    return {"requests": requests, "executed": executed, "executed_per_request": per(executed),
            "sent_per_request": per(executed - inner), "evalsha_per_request": per(by_command.get("evalsha", 0)),
            "busiest_node_share": round(max(totals.values()) / executed, 3) if executed else None,
            "by_node": totals, "by_command": dict(sorted(by_command.items()))}


def spread(samples: list[float]) -> dict[str, Any]:
    """p50, p99 and max of milliseconds (None without samples)."""
    if not samples:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(samples)
    return {"n": len(ordered), "p50": round(percentile(ordered, 0.5), 2), "p99": round(percentile(ordered, 0.99), 2),
            "max": round(ordered[-1], 2)}


def benchmark_rps(csv: str) -> float:
    """Requests per second from ``redis-benchmark --csv`` (the last line's second field)."""
    rows = [line for line in csv.strip().splitlines() if line.startswith('"') and not line.startswith('"test"')]
    if not rows:
        raise ValueError(f"no result in redis-benchmark's output: {csv[-300:]!r}")
    return float(rows[-1].split('","')[1].strip('"'))


def _num(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ms(spread_: dict[str, Any] | None) -> str:
    if not spread_ or not spread_.get("n"):
        return "-"
    return f"{_num(spread_['p50'], 1)} / {_num(spread_['p99'], 1)}"


def rows(report: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(topology, fleet size, its result) in run order; errors included."""
    out = []
    for topology in report["settings"]["topologies"]:
        for size, result in report["results"].get(topology, {}).items():
            out.append((topology, size, result if isinstance(result, dict) else {"error": str(result)}))
    return out


def markdown(report: dict[str, Any]) -> str:
    """Both tables, the Redis capacity line and the model, as bench/README.md shows them."""
    settings = report["settings"]
    lines = [f"{report['date']}, load average {report['versions'].get('loadavg', '?')} at the start and "
             f"{report.get('loadavg_end', '?')} at the end; Redis {report['versions'].get('redis', '?')}, "
             f"{report['versions'].get('cpus', '?')} CPUs ({report['versions'].get('cpu', '?')}).", "",
             f"| topology | sidecars | req/s, all loaded | Redis cmds/req sent (executed) | EVALSHA/req | "
             f"at {settings['rate']:g} req/s each: cmds/req sent (executed) | busiest node | "
             "Redis calls failed (loaded, paced) | load avg |",
             "|---|---|---|---|---|---|---|---|---|"]
    for topology, size, result in rows(report):
        if "error" in result:
            said = [line.strip() for line in result["error"].splitlines() if line.strip()] or ["?"]
            lines.append(f"| {topology} | {size} | error: {' ... '.join(dict.fromkeys([said[0], said[-1]]))[:300]} "
                         "||||||||")
            continue
        loaded, paced = result["throughput"], result["paced"]
        cost_, calm = loaded["redis"], paced["redis"]
        lines.append(f"| {topology} | {size} | {_num(loaded['rps'], 0)} | {_num(cost_['sent_per_request'])} "
                     f"({_num(cost_['executed_per_request'])}) | {_num(cost_['evalsha_per_request'])} | "
                     f"{_num(calm['sent_per_request'])} ({_num(calm['executed_per_request'])}) | "
                     f"{_num((calm['busiest_node_share'] or 0) * 100, 0)}% | {cost_.get('backend_errors', '-')}, "
                     f"{calm.get('backend_errors', '-')} | {result.get('loadavg', '?')} |")
    lines += ["", "| topology | sidecars | breaker force-open seen by the others, p50 / p99 ms "
                  f"| reset seen, p50 / p99 ms | shared limit {settings['limit']}/s: 2xx / most GCRA allows (over) "
                  "| offered req/s |",
              "|---|---|---|---|---|---|"]
    for topology, size, result in rows(report):
        if "error" in result:
            continue
        prop, adm = result.get("propagation") or {}, result["admission"]
        missed = f", {prop['missed']} missed" if prop.get("missed") else ""
        light = "" if adm.get("saturated") else " (under 2x the limit: not a test)"
        if adm.get("backend_errors"):
            light += f"; {adm['backend_errors']} Redis calls failed"
        lines.append(f"| {topology} | {size} | {_ms(prop.get('opened'))}{missed} | {_ms(prop.get('closed'))} | "
                     f"{adm['admitted']} / {adm['allowed_at_most']} ({adm['over']}) | "
                     f"{_num(adm['offered_rps'], 0)}{light} |")
    capacity = report["results"].get("capacity", {})
    if "error" in capacity:
        lines += ["", f"redis-benchmark: error: {capacity['error']}"]
    elif capacity:
        lines += ["", f"redis-benchmark, the rate-limit script (EVALSHA, 3 keys, every call writes them), 50 "
                      f"connections: {_num(capacity['evalsha_per_s_P1'], 0)}/s at -P 1, "
                      f"{_num(capacity['evalsha_per_s_P16'], 0)}/s at -P 16; "
                      f"{_num(capacity.get('usec_per_evalsha'), 1)} us of Redis time per call."]
    lines += ["", *model_lines(report)]
    return "\n".join(lines)


def model(report: dict[str, Any], pods: int = PODS, rate: int = POD_RATE) -> dict[str, Any] | None:
    """The fleet's Redis load from the largest single-Redis fleet's paced figures and the benchmark."""
    single = report["results"].get("single", {})
    measured = [(int(size), r) for size, r in single.items() if size.isdigit() and "paced" in r]
    capacity = report["results"].get("capacity", {})
    if not measured or "evalsha_per_s_P1" not in capacity:
        return None
    size, result = max(measured)
    calm = result["paced"]["redis"]
    fleet_rps = pods * rate
    evalsha = fleet_rps * (calm["evalsha_per_request"] or 0)
    one = capacity["evalsha_per_s_P1"]
    return {"pods": pods, "rate": rate, "from_sidecars": size, "fleet_rps": fleet_rps,
            "sent_per_s": fleet_rps * (calm["sent_per_request"] or 0),
            "executed_per_s": fleet_rps * (calm["executed_per_request"] or 0), "evalsha_per_s": evalsha,
            "one_redis_evalsha_per_s": one, "one_redis_busy": evalsha / one,
            "masters_needed": max(1, math.ceil(evalsha / (one * HEADROOM))),
            "pods_per_upstream_master": math.floor(one * HEADROOM / (rate * (calm["evalsha_per_request"] or 1)))}


def model_lines(report: dict[str, Any]) -> list[str]:
    found = model(report)
    if found is None:
        return ["(no model: the single-Redis rounds or redis-benchmark did not run)"]
    m = found
    return [f"Model: {m['pods']:,} pods x {m['rate']} req/s = {m['fleet_rps']:,} req/s -> "
            f"{_num(m['sent_per_s'], 0)} commands/s sent ({_num(m['executed_per_s'], 0)} executed), of them "
            f"{_num(m['evalsha_per_s'], 0)} EVALSHA/s (per request as measured with {m['from_sidecars']} sidecars "
            f"at {m['rate']} req/s each). One Redis here: {_num(m['one_redis_evalsha_per_s'], 0)} EVALSHA/s, so "
            f"{_num(m['one_redis_busy'] * 100, 0)}% busy; at most {HEADROOM:.0%} busy takes "
            f"{m['masters_needed']} master(s), if the load spreads over slots. One upstream's limits share one "
            f"hash tag, so one master carries all of them: about {m['pods_per_upstream_master']:,} pods at "
            f"{m['rate']} req/s per upstream at {HEADROOM:.0%} busy."]
