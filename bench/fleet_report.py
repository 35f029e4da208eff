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
        fallback = f"; {adm['allowed_without_redis']} allowed without Redis" if adm.get("allowed_without_redis") else ""
        lines.append(f"| {topology} | {size} | {_ms(prop.get('opened'))}{missed} | {_ms(prop.get('closed'))} | "
                     f"{adm['admitted']} / {adm['allowed_at_most']} ({adm['over']}{fallback}) | "
                     f"{_num(adm['offered_rps'], 0)}{light} |")
    capacity = report["results"].get("capacity", {})
    if "error" in capacity:
        lines += ["", f"redis-benchmark: error: {capacity['error']}"]
    elif capacity:
        def run(keys: int, pipeline: int) -> str:
            return (f"{_num(capacity[f'evalsha{keys}_per_s_P{pipeline}'], 0)}/s at -P {pipeline} "
                    f"({_num(capacity.get(f'evalsha{keys}_per_cpu_s_P{pipeline}'), 0)} per second of Redis CPU)")

        lines += ["", f"redis-benchmark, the rate-limit script (EVALSHA; every call passes and writes its keys), 50 "
                      f"connections: 3 keys {run(3, 1)} and {run(3, 16)}; 1 key {run(1, 1)}; PING {run(0, 1)}. "
                      f"In Redis CPU a 3-key call costs {_num(in_pings(capacity, 3), 1)} PINGs, a 1-key call "
                      f"{_num(in_pings(capacity, 1), 1)}."]
    lines += ["", *model_lines(report)]
    return "\n".join(lines)


def in_pings(capacity: dict[str, Any], keys: int) -> float | None:
    """Redis CPU of one ``keys``-key call at -P 1, in PINGs measured in the same run."""
    ping, call = capacity.get("evalsha0_per_cpu_s_P1"), capacity.get(f"evalsha{keys}_per_cpu_s_P1")
    return ping / call if ping and call else None


CAPACITY_KEY = {"single": "evalsha3_per_cpu_s_P1", "cluster": "evalsha1_per_cpu_s_P1"}
"""The benchmark that matches each topology's call (one EVALSHA over all 3 keys, or one per key), as the
calls one core given wholly to Redis sustains: the machine's other load hardly changes it."""


def _paced(report: dict[str, Any], topology: str) -> tuple[int, dict[str, Any]] | None:
    """The largest fleet of ``topology`` measured at the paced rate: its size and Redis cost."""
    measured = [(int(size), r["paced"]["redis"]) for size, r in report["results"].get(topology, {}).items()
                if size.isdigit() and isinstance(r, dict) and "paced" in r]
    return max(measured, key=lambda pair: pair[0]) if measured else None


def model(report: dict[str, Any], pods: int = PODS, rate: int = POD_RATE) -> dict[str, Any]:
    """Each measured topology's Redis load for ``pods`` pods at ``rate`` req/s, from its largest fleet's
    paced figures and the benchmark of its call; the cluster's hottest slot (a ``global`` limit's bucket)."""
    capacity = report["results"].get("capacity", {})
    fleet_rps = pods * rate
    out: dict[str, Any] = {"pods": pods, "rate": rate, "fleet_rps": fleet_rps}
    for topology, key in CAPACITY_KEY.items():
        found = _paced(report, topology)
        one = capacity.get(key)
        if found is None or not one:
            continue
        size, calm = found
        per_request = calm["evalsha_per_request"] or 0
        evalsha = fleet_rps * per_request
        out[topology] = {"from_sidecars": size, "evalsha_per_request": per_request, "evalsha_per_s": evalsha,
                         "sent_per_s": fleet_rps * (calm["sent_per_request"] or 0),
                         "executed_per_s": fleet_rps * (calm["executed_per_request"] or 0),
                         "one_redis_evalsha_per_s": one, "busy_on_one": evalsha / one,
                         "redis_needed": max(1, math.ceil(evalsha / (one * HEADROOM))),
                         "pods_on_one": math.floor(one * HEADROOM / (rate * per_request)) if per_request else None}
    if "cluster" in out:
        one = out["cluster"]["one_redis_evalsha_per_s"]
        out["cluster"]["hot_slot_busy"] = fleet_rps / one
        out["cluster"]["pods_per_shared_bucket"] = math.floor(one * HEADROOM / rate)
    return out


def model_lines(report: dict[str, Any]) -> list[str]:
    m = model(report)
    if "single" not in m and "cluster" not in m:
        return ["(no model: no paced rounds or no redis-benchmark figure)"]
    lines = [f"Model: {m['pods']:,} pods x {m['rate']} req/s = {m['fleet_rps']:,} req/s "
             f"(each at {HEADROOM:.0%} busy at most)."]
    if "single" in m:
        s = m["single"]
        lines.append(
            f"- One Redis: {_num(s['evalsha_per_request'])} EVALSHA per request ({s['from_sidecars']} sidecars at "
            f"{m['rate']} req/s each) -> {_num(s['evalsha_per_s'], 0)} EVALSHA/s ({_num(s['sent_per_s'], 0)} "
            f"commands/s sent, {_num(s['executed_per_s'], 0)} executed). One Redis core does "
            f"{_num(s['one_redis_evalsha_per_s'], 0)}/s of the 3-key call: {_num(s['busy_on_one'] * 100, 0)}% "
            f"of one; it carries about {s['pods_on_one']:,} such pods.")
    if "cluster" in m:
        c = m["cluster"]
        lines.append(
            f"- Cluster: {_num(c['evalsha_per_request'])} EVALSHA per request (one per limit key; "
            f"{c['from_sidecars']} sidecars) -> {_num(c['evalsha_per_s'], 0)} EVALSHA/s; one master's core does "
            f"{_num(c['one_redis_evalsha_per_s'], 0)}/s of the 1-key call: {c['redis_needed']} masters if the "
            f"buckets spread over the slots. A bucket every pod shares (a `global` limit) is one slot: "
            f"{m['fleet_rps']:,} calls/s on one master ({_num(c['hot_slot_busy'] * 100, 0)}% of it), whatever the "
            f"number of masters; one master carries such a bucket for about {c['pods_per_shared_bucket']:,} pods.")
    return lines
