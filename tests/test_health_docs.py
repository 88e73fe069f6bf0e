from __future__ import annotations

import re

from seqbridge import create_app


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json == {"data": {"status": "ok"}}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["data"]["status"] == "ready" and ready.json["data"]["database"] == "ok"
    assert ready.headers["X-Request-Id"]


def test_readyz_fails_when_the_database_is_unreachable(tmp_path):
    app = create_app({"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    client = app.test_client()
    assert client.get("/healthz").status_code == 200  # the process is alive
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json["error"]["code"] == "not_ready"
    assert response.headers["Retry-After"] == "5"


def test_readyz_fails_when_the_schema_is_not_current(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/empty.db"})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["error"]["details"]["schema_revision"] is None
    assert "seqbridge init" in response.json["error"]["message"]


def test_docs_page_uses_only_local_assets(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(s.startswith("/docs/") for s in sources), sources
    for source in sources:
        asset = client.get(source)
        assert asset.status_code == 200, source
        assert len(asset.data) > 100
    initializer = client.get("/docs/swagger-initializer.js").get_data(as_text=True)
    assert 'url: "/openapi.yaml"' in initializer
    bundle = client.get("/docs/assets/swagger-ui-bundle.js").get_data(as_text=True)
    assert "SwaggerUIBundle" in bundle
    missing = client.get("/docs/assets/nope.js")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"


def test_the_mapping_schema_is_published_and_validates_the_shipped_examples(client):
    from pathlib import Path

    import yaml
    from jsonschema import Draft202012Validator

    answer = client.get("/docs/mapping-schema.json")
    assert answer.status_code == 200 and answer.mimetype == "application/schema+json"
    schema = answer.get_json()
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    for path in sorted((Path(__file__).parent.parent / "mappings").glob("*.yaml")):
        assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == [], path
    assert list(validator.iter_errors({"hooks": {"h": {"organisation": "x"}}}))
