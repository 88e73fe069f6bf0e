"""The Zapier app and the n8n package call only operations that openapi.yaml has, as it has them.

``integrations/contract.json`` lists every call (method, path, the body fields the spec
requires). It is checked against the spec here, and against the integrations' code: each call
site in their source must be in the list and each listed call must still be made, so neither the
spec nor the code can change under the integrations without a test failing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = json.loads((ROOT / "integrations" / "contract.json").read_text())["operations"]
SPEC = yaml.safe_load((ROOT / "openapi.yaml").read_text())
SOURCES = {
    "zapier": [
        p
        for p in (ROOT / "integrations" / "zapier").rglob("*.js")
        if "node_modules" not in p.parts and "test" not in p.parts
    ],
    "n8n": [
        p
        for pattern in ("credentials/**/*.ts", "nodes/**/*.ts")
        for p in (ROOT / "integrations" / "n8n").glob(pattern)
    ],
}
#: A path literal in the code, with the method named just before it (GET when none is).
CALL = re.compile(
    r"""(?:['"](GET|POST|PATCH|DELETE)['"],\s*)?"""
    r"""(?:`(/api/v1/(?:[^`$?]|\$\{[^}]*\})*)[`?]|['"](/api/v1/[^'"?\s]*)['"?])"""
)


def _deref(ref: str) -> dict[str, Any]:
    node: Any = SPEC
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _required(schema: dict[str, Any]) -> set[str]:
    """The property names a request body schema requires, through $ref and allOf."""
    if "$ref" in schema:
        return _required(_deref(schema["$ref"]))
    required = set(schema.get("required", []))
    for part in schema.get("allOf", []):
        required |= _required(part)
    return required


def _shape(path: str) -> str:
    """A path with its parameters blanked: /x/{id} and /x/${id} are the same route."""
    return re.sub(r"\$?\{[^}]*\}", "{}", path)


def _code_calls(integration: str) -> dict[tuple[str, str], list[Path]]:
    calls: dict[tuple[str, str], list[Path]] = {}
    for source in SOURCES[integration]:
        for method, template, plain in CALL.findall(source.read_text()):
            calls.setdefault((method or "GET", _shape(template or plain)), []).append(source)
    return calls


def test_the_manifest_names_real_operations_and_their_required_fields():
    for entry in MANIFEST:
        item = SPEC["paths"].get(entry["path"])
        assert item is not None, f"{entry['path']} is no longer in openapi.yaml"
        operation = item.get(entry["method"].lower())
        assert operation is not None, f"{entry['method']} {entry['path']} is no longer in openapi.yaml"
        assert operation["operationId"] == entry["operationId"], entry
        body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
        required = _required(body["schema"]) if body else set()
        assert required == set(entry["required"]), (
            f"{entry['operationId']} now requires {sorted(required)}, the integrations send {entry['required']}"
        )


@pytest.mark.parametrize("integration", ["zapier", "n8n"])
def test_the_code_makes_exactly_the_listed_calls(integration):
    assert SOURCES[integration], f"no {integration} sources found"
    in_code = _code_calls(integration)
    listed = {(e["method"], _shape(e["path"])) for e in MANIFEST if integration in e["used_by"]}
    assert set(in_code) - listed == set(), (
        f"{integration} calls operations missing from integrations/contract.json"
    )
    assert listed - set(in_code) == set(), (
        f"integrations/contract.json lists calls {integration} no longer makes"
    )


@pytest.mark.parametrize("integration", ["zapier", "n8n"])
def test_the_code_sends_every_required_field(integration):
    in_code = _code_calls(integration)
    for entry in MANIFEST:
        if integration not in entry["used_by"]:
            continue
        files = in_code[(entry["method"], _shape(entry["path"]))]
        text = "\n".join(f.read_text() for f in files)
        for field in entry["required"]:
            assert re.search(rf"\b{field}\b", text), (
                f"{integration} never sends {field} to {entry['operationId']}"
            )


def test_every_rest_hook_event_has_a_trigger():
    events = set(SPEC["components"]["schemas"]["HookEvent"]["enum"])
    zapier = (ROOT / "integrations" / "zapier" / "triggers" / "hooks.js").read_text()
    n8n = (
        ROOT / "integrations" / "n8n" / "nodes" / "SeqbridgeTrigger" / "SeqbridgeTrigger.node.ts"
    ).read_text()
    for event in events:
        assert f"event: '{event}'" in zapier, f"no Zapier trigger for {event}"
        assert f"value: '{event}'" in n8n, f"the n8n trigger offers no {event}"


#: A module a source file loads: require('x') or import ... from 'x'.
IMPORT = re.compile(r"""(?:require\(\s*|\bfrom\s+)['"]([^'"./][^'"]*)['"]""")
NODE_BUILTINS = {"crypto", "node:crypto", "http", "node:http", "url", "node:url"}


def _imports(integration: str) -> set[str]:
    names = set()
    for source in SOURCES[integration]:
        for name in IMPORT.findall(source.read_text()):
            names.add(name if name.startswith("@") else name.split("/")[0])
    return names - NODE_BUILTINS


def test_the_published_packages_load_only_what_they_ship_with():
    """`zapier push` uploads the app with its `dependencies` only, and n8n loads a community node
    with nothing but n8n-workflow beside it: a module the code loads from devDependencies would
    be missing once installed."""
    zapier = json.loads((ROOT / "integrations" / "zapier" / "package.json").read_text())
    assert _imports("zapier") <= set(zapier["dependencies"]), (
        f"the Zapier app loads {sorted(_imports('zapier') - set(zapier['dependencies']))}, not in dependencies"
    )
    n8n = json.loads((ROOT / "integrations" / "n8n" / "package.json").read_text())
    assert _imports("n8n") <= set(n8n["peerDependencies"]), _imports("n8n")
    assert not n8n.get("dependencies"), "community nodes ship without runtime dependencies"
