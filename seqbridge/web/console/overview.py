"""The overview: charts of deliveries and latency, the backlog, dead and failed counts, workers."""

from __future__ import annotations

from datetime import timedelta

from flask import jsonify, render_template, request

from seqbridge.services.common import format_time
from seqbridge.web.console import bp
from seqbridge.web.console.session import caller, can, require
from seqbridge.web.pipeline import services


@bp.get("/")
def overview():
    health = services().overview.health(caller()) if can("hooks:read") else None
    hook = request.args.get("hook") or None
    day_ago = format_time(services().clock.now() - timedelta(days=1))
    charts = {}
    if health is not None:  # embedded in the page as JSON data (not script): one query per window
        overview = services().overview
        charts["1h"] = overview.charts(caller(), overview.window("1h"), hook)
        # The day's latency is the costliest aggregate: the page's script fetches it (/overview/charts).
        charts["24h"] = overview.charts(
            caller(), overview.window("24h"), hook, with_latency=False, per_hook=True
        )
    return render_template("console/overview.html", health=health, hook=hook, charts=charts, day_ago=day_ago)


@bp.get("/overview/charts")
def overview_charts():
    """The chart data (JSON): per bucket, deliveries per minute by status and latency p50 / p99."""
    require("hooks:read")
    window = services().overview.window(request.args.get("range"))
    return jsonify({"data": services().overview.charts(caller(), window, request.args.get("hook") or None)})
