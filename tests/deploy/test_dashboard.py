"""deploy/grafana/resilience-proxy.json is a dashboard Grafana imports as it is: its shape, its data source
variable, and metric names the sidecar really exposes. Its PromQL runs against a real Prometheus in
test_dashboard_prometheus.py."""

from __future__ import annotations

import re

import aiohttp

from tests.conftest import StartSidecar, admin_url
from tests.deploy.dashboard import expressions, load, panels, variable_queries
from tests.metrics_text import typed_names

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
LEFT_OFF = {
    "resilience_proxy_alerts": "Slack delivery of the sidecar's own alerts: a detail of the alerting path",
    "resilience_proxy_config_reloads": "the last reload's result (a panel) says what an operator acts on",
    "resilience_proxy_config_last_reload_success_timestamp_seconds": "idem",
    "resilience_proxy_webhook_deliveries": "the delivery attempts panel shows the same outcomes and more",
}
"""Families the sidecar exports that the dashboard leaves off on purpose; any other new family must be shown."""


def test_the_dashboard_is_importable_as_it_is() -> None:
    dashboard = load()
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] == "resilience-proxy" and dashboard["id"] is None  # import creates; re-import replaces
    (source,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert (source["name"], source["query"]) == ("datasource", "prometheus")
    assert "__inputs" not in dashboard, "a ${DS_...} input would make users pick a data source at import only"
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["datasource", "upstream", "route"]
    for variable in dashboard["templating"]["list"][1:]:
        assert variable["datasource"] == DATASOURCE
        assert (variable["includeAll"], variable["multi"], variable["allValue"]) == (True, True, ".*")


def test_every_panel_queries_the_chosen_data_source_and_has_a_place() -> None:
    dashboard = load()
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    taken: set[tuple[int, int]] = set()
    for panel in panels(dashboard):
        box = panel["gridPos"]
        assert 0 <= box["x"] and box["x"] + box["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(box["x"], box["x"] + box["w"]) for y in range(box["y"], box["y"] + box["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"] and panel.get("description"), panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_the_breaker_timeline_names_every_state_as_the_gauge_codes_it() -> None:
    from proxy.observe.gauges import STATE_CODES

    (timeline,) = [p for p in panels(load()) if p["title"] == "Breaker state"]
    assert timeline["type"] == "state-timeline"
    (mapping,) = timeline["fieldConfig"]["defaults"]["mappings"]
    assert {int(code): shown["text"] for code, shown in mapping["options"].items()} == {
        code: state.value for state, code in STATE_CODES.items()}


async def test_the_dashboard_shows_the_families_the_sidecar_exposes_and_no_other(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar({"api": {"url": url}})
    async with http.get(admin_url(sidecar) + "/metrics") as response:
        exposed = {name.removesuffix("_total") for name in typed_names(await response.text())}
    dashboard = load()
    text = " ".join([expr for _, expr in expressions(dashboard)] + [s for _, s, _ in variable_queries(dashboard)])
    used = set(re.findall(r"\b(resilience_proxy_\w+?)(?:_total|_bucket)?\b", text))
    assert len(used) >= 20 and used <= exposed, f"not exposed: {used - exposed}"
    ours = {name for name in exposed if name.startswith("resilience_proxy_")}
    assert ours - used == set(LEFT_OFF), "a family neither shown nor deliberately left off (LEFT_OFF)"
