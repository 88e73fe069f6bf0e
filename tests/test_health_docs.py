from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

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


def test_try_it_out_calls_the_origin_the_docs_came_from(client, app):
    # Swagger UI's "Try it out" sends requests to servers[0]: it must be where the reader is.
    for base in ("http://127.0.0.1:9000", "https://bridge.example.net", "http://10.1.2.3:8123"):
        served = yaml.safe_load(client.get("/openapi.yaml", base_url=base).data)
        assert served["servers"][0]["url"] == base, served["servers"]
    assert "localhost:8000" not in client.get("/openapi.yaml", base_url="http://example.org").text
    # Behind a proxy, the configured public URL is the one readers reach.
    app.config["PUBLIC_BASE_URL"] = "https://hooks.example.com/"
    served = yaml.safe_load(client.get("/openapi.yaml", base_url="http://10.0.0.5:8000").data)
    assert served["servers"][0]["url"] == "https://hooks.example.com"
    # Everything else is the file as written.
    written = yaml.safe_load((Path(__file__).parents[1] / "openapi.yaml").read_text())
    assert {k: v for k, v in served.items() if k != "servers"} == {
        k: v for k, v in written.items() if k != "servers"
    }


def test_the_mapping_schema_is_published_and_validates_the_shipped_examples(client):
    answer = client.get("/docs/mapping-schema.json")
    assert answer.status_code == 200 and answer.mimetype == "application/schema+json"
    schema = answer.get_json()
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    for path in sorted((Path(__file__).parent.parent / "mappings").glob("*.yaml")):
        assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == [], path
    assert list(validator.iter_errors({"hooks": {"h": {"organisation": "x"}}}))


# The contract as documentation: /docs renders openapi.yaml, so what a reader sees is this file. ----

_METHODS = ("get", "post", "put", "patch", "delete")


def _spec_path() -> str:
    from seqbridge.config import load_settings

    return load_settings()["OPENAPI_PATH"]


def _spec() -> dict:
    return yaml.safe_load(Path(_spec_path()).read_text())


def _operations(spec):
    for path, item in spec["paths"].items():
        for method in _METHODS:
            if method in item:
                yield path, method, item[method]


def _media_types(spec):
    """(where, media type object, JSON pointer of its schema) for every request and response body."""
    for path, method, op in _operations(spec):
        body = op.get("requestBody", {})
        for media, content in body.get("content", {}).items():
            yield f"{method.upper()} {path} request {media}", content
        for status, response in op["responses"].items():
            if "$ref" not in response:
                for media, content in response.get("content", {}).items():
                    yield f"{method.upper()} {path} {status} {media}", content
    for name, response in spec["components"]["responses"].items():
        for media, content in response.get("content", {}).items():
            yield f"components/responses/{name} {media}", content


def _examples(content) -> list:
    if "example" in content:
        return [content["example"]]
    return [example["value"] for example in content.get("examples", {}).values()]


def test_every_operation_says_what_it_does_and_every_body_has_an_example():
    spec = _spec()
    for path, method, op in _operations(spec):
        where = f"{method.upper()} {path}"
        assert op.get("summary") and op.get("description"), f"{where}: a summary and a description"
        assert op["operationId"][0].islower() and op["operationId"].isalnum(), where
    for where, content in _media_types(spec):
        assert _examples(content), f"{where}: no example"


def test_every_example_matches_its_schema():
    """An example in the docs is a promise: each one validates against the schema beside it."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    spec = _spec()
    registry = Registry().with_resource(
        "urn:spec", Resource.from_contents(spec, default_specification=DRAFT202012)
    )
    checked = 0
    for where, content in _media_types(spec):
        if "schema" not in content:
            continue
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **content["schema"]}
        schema = json.loads(json.dumps(schema).replace('"#/components/', '"urn:spec#/components/'))
        validator = Draft202012Validator(
            schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        for example in _examples(content):
            errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(example)]
            assert not errors, f"{where}: {errors}"
            checked += 1
    assert checked > 60


def test_the_spec_has_no_yaml_slips():
    """Duplicate keys (plain YAML keeps the last silently) and flow-mapping commas that cut a
    description short (`{description: A, b.}` makes a key `b.` with no value)."""

    class Strict(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            keys = [self.construct_object(key, deep=True) for key, _ in node.value]
            duplicates = {k for k in keys if keys.count(k) > 1}
            assert not duplicates, f"line {node.start_mark.line + 1}: duplicate keys {duplicates}"
            return super().construct_mapping(node, deep)

    spec = yaml.load(Path(_spec_path()).read_text(), Loader=Strict)
    slips = []

    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("example", "examples"):
                    continue  # example data may hold nulls
                if value is None and key not in ("default", "const"):
                    slips.append(f"{where}/{key}")
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    walk(spec, "")
    assert slips == []
