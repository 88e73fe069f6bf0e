"""The framework ceiling for ``bench.ingest``: a bare Flask app with the hook's route, nothing else.

It parses the JSON body and answers 202 with a small JSON, like Seqbridge's hook does, but does
not verify, deduplicate or store anything. Served by the same gunicorn settings as Seqbridge:

    python -m gunicorn -c python:seqbridge.gunicorn_conf 'bench.bare_app:app'
"""

from __future__ import annotations

import uuid

from flask import Flask, request

app = Flask(__name__)


@app.post("/hooks/<hook_name>")
def receive(hook_name: str):
    """Parse the body and answer as Seqbridge does: 202 ``{"data": {"delivery_id", "status"}}``."""
    request.get_json()
    return {"data": {"delivery_id": uuid.uuid4().hex, "status": "queued"}}, 202
