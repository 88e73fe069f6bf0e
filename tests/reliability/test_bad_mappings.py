"""Broken mapping files: each one is refused with the line (and column) of the problem, by
``seqbridge mappings validate`` and by a running server, which keeps serving every good hook.

The corpus: alias bombs ("billion laughs"), Python object tags, enormous files, deep nesting
(block, flow and recursive aliases), tabs, duplicate keys, invalid UTF-8, NUL, several documents,
values JSON cannot hold (``.nan``, ``!!binary``). Each file declares one hook, named after it; a
file the server cannot read at all still makes its hook answer 503 ``hook_misconfigured``, never
404 and never a crash.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from seqbridge.cli import main
from seqbridge.mapping.source import MAX_FILE_BYTES
from tests.test_hooks import write_mapping

HEAD = b"hooks:\n  HOOK:\n    organization: acme\n    source: {connector: generic, public: true}\n"


def _laughs() -> bytes:
    levels = [b"    x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"]
    for n in range(1, 9):
        levels.append(b"    x%d: &x%d [" % (n, n) + b", ".join([b"*x%d" % (n - 1)] * 10) + b"]\n")
    return HEAD + b"    rules: []\n    targets:\n" + b"".join(levels)


#: name -> (file contents with HOOK for the hook's name, line, column, what the problem says)
CORPUS: dict[str, tuple[bytes, int, int, str]] = {
    # The line of the anchored list being expanded when the count ran out.
    "laughs": (_laughs(), 7, 9, "more than 100000 values (an alias bomb?)"),
    "python-apply": (
        HEAD + b"    rules:\n      - actions: !!python/object/apply:os.system ['touch /tmp/pwned']\n",
        6,
        18,
        "the tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed",
    ),
    "python-name": (
        b"hooks:\n  HOOK:\n    organization: !!python/name:os.system\n",
        3,
        19,
        "the tag 'tag:yaml.org,2002:python/name:os.system' is not allowed",
    ),
    "python-new": (
        b"hooks:\n  HOOK: !!python/object/new:subprocess.Popen [['true']]\n",
        2,
        15,
        "the tag 'tag:yaml.org,2002:python/object/new:subprocess.Popen' is not allowed",
    ),
    "custom-tag": (HEAD.replace(b"acme", b"!vault acme"), 3, 19, "the tag '!vault' is not allowed"),
    "binary": (
        HEAD + b"    rules: [{actions: [{enroll: {sequence: S, contact: {id: !!binary aGk=}}}]}]\n",
        5,
        61,
        "the tag 'tag:yaml.org,2002:binary' is not allowed",
    ),
    "nan": (HEAD + b"    rate_limit: {per_second: .nan}\n", 5, 30, "'.nan' is not a number JSON can hold"),
    "enormous": (HEAD + b"# " + b"x" * MAX_FILE_BYTES + b"\n", 1, 1, f"larger than {MAX_FILE_BYTES} bytes"),
    "deep-flow": (
        HEAD + b"    rules: " + b"[" * 5000 + b"]" * 5000 + b"\n",
        5,
        59,
        "nested deeper than 50 levels",
    ),
    "deep-mapping": (
        HEAD + b"    rules: " + b"{a: " * 5000 + b"1" + b"}" * 5000 + b"\n",
        5,
        200,
        "nested deeper than 50 levels",
    ),
    "deep-block": (
        HEAD + b"    rules:\n" + b"".join(b"  " * (n + 3) + b"-\n" for n in range(60)),
        54,
        103,
        "nested deeper than 50 levels",
    ),
    "recursive-alias": (
        HEAD.replace(b"source: {", b"source: &s {again: *s, "),
        4,
        17,
        "nested deeper than 50 levels",
    ),
    "tabs": (b"hooks:\n  HOOK:\n\torganization: acme\n", 3, 1, "YAML indents with spaces, never tabs"),
    "duplicate-key": (
        HEAD + b"    rules: []\n    organization: other\n",
        6,
        5,
        "duplicate key 'organization'",
    ),
    "invalid-utf8": (
        HEAD + b"    rules: [] # caf\xe9\n",
        5,
        20,
        "the file is not UTF-8 (invalid continuation byte)",
    ),
    "nul": (HEAD + b"    rules: [] # \x00\n", 5, 17, "the character U+0000 is not allowed in YAML"),
    "two-documents": (HEAD + b"    rules: []\n---\nhooks: {}\n", 6, 1, "but found another document"),
}

GOOD = (
    "hooks:\n  good:\n    organization: acme\n    source: {connector: generic, public: true}\n    rules: []\n"
)


def write_corpus(directory: Path) -> dict[str, Path]:
    paths = {}
    for name, (text, *_) in CORPUS.items():
        paths[name] = directory / f"{name}.yaml"
        paths[name].write_bytes(text.replace(b"HOOK", name.encode()))
    return paths


def test_validate_refuses_each_broken_file_at_its_line(tmp_path):
    paths = write_corpus(tmp_path)
    (tmp_path / "good.yaml").write_text(GOOD)
    result = CliRunner().invoke(main, ["mappings", "validate", str(tmp_path)])
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    for name, (_, line, col, message) in CORPUS.items():
        found = [entry for entry in lines if entry.startswith(f"{paths[name]}:")]
        assert len(found) == 1, (name, found)  # one problem, the real one, not a cascade
        assert found[0].startswith(f"{paths[name]}:{line}:{col}: "), (name, found[0])
        assert message in found[0], (name, found[0])
    assert not [entry for entry in lines if "good.yaml" in entry]
    assert not os.path.exists("/tmp/pwned")


def test_a_server_started_with_broken_files_serves_the_good_hooks(app_config, tmp_path):
    """Every broken hook answers 503 hook_misconfigured, the good one 202; the registry lists each
    with its problem and line (the API shows an organization only the hooks that name it, and
    these files could not be read that far)."""
    from seqbridge import create_app
    from tests.conftest import Api

    mappings = Path(app_config["MAPPINGS_DIR"])
    write_corpus(mappings)
    write_mapping(app_config, GOOD, "good.yaml")
    app = create_app(app_config)  # loading the corpus at start must not raise
    try:
        client = app.test_client()
        key = app.extensions["seqbridge"].keys.create_key("acme", ["*"], "test").raw_key
        api = Api(client, key)
        good = client.post("/hooks/good", json={"n": 1})
        assert good.status_code == 202, good.get_json()
        for name in CORPUS:
            broken = client.post(f"/hooks/{name}", json={"n": 1})
            assert broken.status_code == 503, (name, broken.get_json())
            assert broken.get_json()["error"]["code"] == "hook_misconfigured", name
            assert broken.headers["Retry-After"] == "60"
        assert [s["name"] for s in api.get("/api/v1/mappings").get_json()["data"]] == ["good"]
        statuses = {s["name"]: s for s in app.extensions["seqbridge"].inbox.registry.statuses()}
        assert statuses.pop("good")["status"] == "ok"
        assert set(statuses) == set(CORPUS)
        for name, status in statuses.items():
            _, line, col, message = CORPUS[name]
            assert status["status"] == "invalid", status
            [problem] = status["problems"]
            assert (problem["line"], problem["col"]) == (line, col), (name, problem)
            assert message in problem["message"] and problem["file"].endswith(f"{name}.yaml"), problem
        assert client.post("/hooks/good", json={"n": 2}).status_code == 202
    finally:
        app.extensions["seqbridge"].db.dispose()


@pytest.fixture
def good_hook(app_config, api):
    path = write_mapping(app_config, GOOD.replace("good", "h"), "h.yaml")
    return path, api


def test_a_file_broken_while_serving_keeps_its_last_good_version(good_hook, client):
    path, api = good_hook
    assert client.post("/hooks/h", json={"n": 0}).status_code == 202
    for tick, (name, (text, line, col, message)) in enumerate(CORPUS.items(), start=1):
        path.write_bytes(text.replace(b"HOOK", b"h"))
        os.utime(path, ns=(tick * 10**9, tick * 10**9))  # a new mtime, whatever the filesystem's resolution
        answer = client.post("/hooks/h", json={"n": tick})
        assert answer.status_code == 202, (name, answer.get_json())  # the last good version serves
        [status] = api.get("/api/v1/mappings").get_json()["data"]
        assert status["status"] == "stale", (name, status)
        [problem] = status["problems"]
        if b"HOOK" in text.splitlines()[line - 1]:  # the hook is called h here, not after the file
            col += len("h") - len(name)
        assert (problem["line"], problem["col"], message in problem["message"]) == (line, col, True), problem
    path.write_text(GOOD.replace("good", "h").replace("rules: []", "rules: [{name: back, actions: []}]"))
    os.utime(path, ns=(10**12, 10**12))
    assert client.post("/hooks/h", json={"n": "back"}).status_code == 202
    [status] = api.get("/api/v1/mappings").get_json()["data"]
    assert (status["status"], status["rules"], status["problems"]) == ("ok", ["back"], [])


def test_an_enormous_file_is_refused_and_its_hook_is_still_known(tmp_path):
    """A sparse 64 MiB file (the reader and the hook-name guess read only a prefix of it)."""
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as handle:
        handle.write(b"hooks:\n  huge:\n    organization: acme\n")
        handle.truncate(64 * 1024**2)
    result = CliRunner().invoke(main, ["mappings", "validate", str(path)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [f"{path}:1:1: the file is larger than {MAX_FILE_BYTES} bytes"]
    from seqbridge.mapping.registry import guess_hook_names

    assert guess_hook_names(str(path)) == ["huge"]


def test_a_date_in_a_mapping_is_its_text_not_a_value_json_cannot_hold(tmp_path):
    from seqbridge.mapping.source import read_document

    doc = read_document("m.yaml", "data: {at: 2026-01-01, when: 2026-01-01T10:00:00Z, n: 1e3, i: 0x1f}\n", {})
    assert doc.data == {"data": {"at": "2026-01-01", "when": "2026-01-01T10:00:00Z", "n": "1e3", "i": 31}}
