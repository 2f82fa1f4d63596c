"""The Grafana dashboard and its provisioning, checked without Grafana."""

import pytest
import yaml

# What the dashboard must show, by the metric each view is computed from.
REQUIRED_METRICS = {
    "x-realtime": "amanuensis_realtime_factor",
    "throughput": "amanuensis_processing_seconds_total",
    "request rate and errors": "amanuensis_requests_total",
    "latency": "amanuensis_request_duration_seconds",
    "stage durations": "amanuensis_stage_duration_seconds",
    "active mel back-end": "amanuensis_mel_backend_info",
    "fallbacks": "amanuensis_mel_fallbacks_total",
    "encoder back-end": "amanuensis_encoder_backend_info",
    "where GELU and attention run": "amanuensis_op_backend_info",
    "GELU and attention fallbacks": "amanuensis_op_fallbacks_total",
    "GELU and attention calls": "amanuensis_op_calls_total",
    "in-flight": "amanuensis_requests_in_flight",
    "audio hours": "amanuensis_audio_seconds_total",
}


@pytest.fixture
def contract_series(contract) -> set[str]:
    return {name for metric in contract.metrics for name in contract.series_names(metric)}


def test_promql_identifiers_separates_functions_labels_and_metrics(contract):
    functions, metrics = contract.identifiers(
        'histogram_quantile(0.95, sum by (endpoint, le) '
        '(rate(amanuensis_request_duration_seconds_bucket{status=~"5.."}[$__rate_interval])))'
        ' / on (endpoint) group_left other_metric > bool 0.5')
    assert functions == {"histogram_quantile", "sum", "rate"}
    assert metrics == {"amanuensis_request_duration_seconds_bucket", "other_metric"}


def test_every_query_names_only_contract_metrics(dashboard_queries, contract, contract_series):
    for title, expr in dashboard_queries:
        functions, metrics = contract.identifiers(expr)
        assert functions <= contract.functions, (title, functions - contract.functions)
        assert metrics, f"{title}: no metric in {expr!r}"
        assert metrics <= contract_series, (title, metrics - contract_series)


def test_dashboard_covers_every_required_view(dashboard_queries, contract):
    used = {metric for _, expr in dashboard_queries for metric in contract.identifiers(expr)[1]}
    for view, metric in REQUIRED_METRICS.items():
        assert used & contract.series_names(metric), f"no panel shows {view} ({metric})"


def test_queries_use_only_known_grafana_macros(dashboard_queries, contract):
    for title, expr in dashboard_queries:
        for macro in contract.grafana_macros:
            expr = expr.replace(macro, "")
        assert "$" not in expr, f"{title}: unknown template variable in {expr!r}"


def test_panels_use_the_provisioned_datasource(repo_root, dashboard):
    datasources = yaml.safe_load(
        (repo_root / "config/grafana/provisioning/datasources/prometheus.yml").read_text())
    [datasource] = datasources["datasources"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in dashboard["panels"]:
        for ref in [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]:
            assert ref == {"type": datasource["type"], "uid": datasource["uid"]}, panel["title"]


def test_panels_do_not_overlap(dashboard):
    cells = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]
