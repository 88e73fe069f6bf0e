"""/metrics after a small load: the counters match what happened."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.test_hooks import WHATSAPP_STOP, drain, meta_body, meta_headers, post_meta, write_mapping


def scrape(api) -> dict[tuple[str, tuple], float]:
    answer = api.get("/api/v1/me")  # a request of its own, counted too
    assert answer.status_code == 200
    response = api.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_match_a_small_load(app_config, api, client, services):
    write_mapping(app_config, WHATSAPP_STOP)
    from tests import factories

    factories.contact(api, phone="+15551234567")
    before = scrape(api)
    for n in range(3):
        assert post_meta(client, meta_body("STOP", message_id=f"wamid.M{n}")).status_code == 202
    assert post_meta(client, meta_body("STOP", message_id="wamid.M0")).status_code == 200  # a duplicate
    body = meta_body("STOP", message_id="wamid.bad")
    assert client.post("/hooks/whatsapp", data=body, headers=meta_headers(body, "wrong")).status_code == 401
    assert client.post("/hooks/nope", json={}).status_code == 404
    drain(services)
    after = scrape(api)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("seqbridge_webhook_deliveries_total", hook="whatsapp", outcome="queued") == 3
    assert delta("seqbridge_webhook_deliveries_total", hook="whatsapp", outcome="duplicate") == 1
    assert delta("seqbridge_webhook_rejections_total", hook="whatsapp", reason="signature_mismatch") == 1
    assert delta("seqbridge_webhook_rejections_total", hook="unknown", reason="hook_not_found") == 1
    assert delta("seqbridge_webhook_processed_total", hook="whatsapp", status="processed") == 3
    # The first STOP unsubscribes and finds nothing to unenroll; the next two change nothing.
    assert delta("seqbridge_actions_total", target="local", action="upsert_contact", outcome="done") == 1
    assert delta("seqbridge_actions_total", target="local", action="upsert_contact", outcome="skipped") == 2
    assert delta("seqbridge_ingest_to_action_seconds_count", hook="whatsapp") == 3
    assert (
        delta("seqbridge_http_requests_total", route="/hooks/<hook_name>", method="POST", status="202") == 3
    )
    assert delta("seqbridge_http_requests_total", route="/api/v1/me", method="GET", status="200") == 1
    assert value(after, "seqbridge_deliveries", status="processed") == 3
    assert value(after, "seqbridge_deliveries", status="rejected") == 1
    assert ("seqbridge_processor_tasks", (("state", "due"),)) in after


def test_metrics_need_a_key_with_audit_read(client, make_key):
    assert client.get("/metrics").status_code == 401
    weak = make_key("acme", ["contacts:read"])
    denied = client.get("/metrics", headers={"Authorization": f"Bearer {weak}"})
    assert denied.status_code == 403 and denied.json["error"]["code"] == "audit_read_denied"


def test_readyz_and_metrics_show_the_webhook_backlog_and_how_long_it_has_waited(
    app_config, api, client, services, clock
):
    write_mapping(app_config, WHATSAPP_STOP)
    for n in range(3):
        assert post_meta(client, meta_body("hello", message_id=f"wamid.B{n}")).status_code == 202
    clock.advance(seconds=30)
    ready = client.get("/readyz").json["data"]["deliveries"]
    assert ready == {"due": 3, "processing": 0, "retrying": 0, "oldest_due_seconds": 30.0}
    samples = scrape(api)
    assert value(samples, "seqbridge_deliveries_backlog", state="due") == 3
    assert value(samples, "seqbridge_deliveries_oldest_due_seconds") == 30.0
    drain(services)
    assert client.get("/readyz").json["data"]["deliveries"]["due"] == 0
    assert value(scrape(api), "seqbridge_deliveries_oldest_due_seconds") == 0.0
