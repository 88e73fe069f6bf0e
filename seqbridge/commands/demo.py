"""``seqbridge demo``: the demo organization ``./scripts/up`` creates, and the banner it prints."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import click

from seqbridge.errors import SeqbridgeError

BANNER = """
  Demo API key (organization "{org}", all scopes), shown once:

      {key}

  Console: {url}/   (sign in with the key above)
  Try:     curl -H "Authorization: Bearer {key}" {url}/api/v1/me
  Docs:    {url}/docs

  The example hooks (mappings/*.yaml) listen on {url}/hooks/<name>; their secrets are in
  var/hooks.env. The demo organization has what they name: the sequences "Welcome" and
  "VIP onboarding", the event queue "Webinar follow-up", and the contact {email}.
  A Zapier-style call, and the same into the queue:
         curl -H "X-Seqbridge-Token: {token}" -H "Content-Type: application/json" \\
              -d '{{"action":"enroll","sequence":"Welcome","email":"{email}"}}' \\
              {url}/hooks/zapier
         curl -H "X-Seqbridge-Token: {token}" -H "Content-Type: application/json" \\
              -d '{{"action":"enroll","queue":"Webinar follow-up","email":"{email}"}}' \\
              {url}/hooks/zapier
"""


@click.command()
@click.option("--org", "org_name", default="demo", show_default=True, help="The demo organization's name.")
@click.option(
    "--url",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="Where the server listens, for the examples printed.",
)
def demo(org_name: str, url: str) -> None:
    """Set up the demo organization (safe to run again) with what the shipped mappings name, create an
    API key for it, and print the key once with examples that work as printed."""
    from seqbridge.cli import _services
    from seqbridge.services.demo import DEMO_CONTACT, seed_demo

    services = _services()
    try:
        result = seed_demo(services, org_name)
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        key = services.keys.create_key(org_name, ["*"], f"demo {stamp}")
    except SeqbridgeError as error:
        raise click.ClickException(error.message) from None
    if result.created:
        click.echo(f"demo organization {org_name!r}: created {', '.join(result.created)}", err=True)
    token = os.environ.get("ZAPIER_HOOK_TOKEN") or "<ZAPIER_HOOK_TOKEN from var/hooks.env>"
    click.echo(
        BANNER.format(
            org=org_name, key=key.raw_key, url=url.rstrip("/"), token=token, email=DEMO_CONTACT["email"]
        )
    )
