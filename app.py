"""WSGI entry point: ``gunicorn app:app``."""

from seqbridge import create_app

app = create_app()
