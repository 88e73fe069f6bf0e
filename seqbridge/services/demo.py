"""The demo organization ``./scripts/up`` creates: what the shipped mappings name, so that the
banner's and the README's examples work on a fresh database.

The shipped hooks (``mappings/*.yaml``) enroll into the sequences "Welcome" and "VIP onboarding" and
the event queue "Webinar follow-up", and the banner's Zapier call enrolls grace@example.com. Each is
created when the organization has none of that name, so running it again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seqbridge.context import Caller
from seqbridge.errors import Conflict, NotFound
from seqbridge.services.keys import CLI_ACTOR
from seqbridge.services.sequences import SequenceKind, SequenceStatus


@dataclass(frozen=True)
class DemoDefinition:
    """A sequence or queue of the demo, with its one step."""

    kind: SequenceKind
    name: str
    fields: dict[str, Any]
    step: dict[str, Any]


DEMO_DEFINITIONS = (
    DemoDefinition(
        SequenceKind.SEQUENCE,
        "Welcome",
        {
            "description": "Demo: the forms and Zapier / n8n hooks enroll new leads here.",
            "trigger_type": "manual",
        },
        {
            "action": "email",
            "delay_days": 0,
            "subject": "Welcome, {{ first_name }}!",
            "body": "Thanks for signing up. Reply to this email if you have any question.",
        },
    ),
    DemoDefinition(
        SequenceKind.SEQUENCE,
        "VIP onboarding",
        {
            "description": "Demo: ActiveCampaign's vip tag and HubSpot's vip lead status enroll here.",
            "trigger_type": "manual",
        },
        {
            "action": "email",
            "delay_days": 0,
            "subject": "A warm welcome, {{ first_name }}",
            "body": "As a VIP you get a personal contact: just reply to this email.",
        },
    ),
    DemoDefinition(
        SequenceKind.EVENT_QUEUE,
        "Webinar follow-up",
        {"description": "Demo: ActiveCampaign's webinar tag enrolls here."},
        {
            "action": "email",
            "delay_days": 1,
            "subject": "Thanks for joining the webinar",
            "body": "Here are the slides and the recording.",
        },
    ),
)
#: The contact the banner's examples enroll (the README tour creates its own, Ada).
DEMO_CONTACT = {"email": "grace@example.com", "first_name": "Grace", "last_name": "Hopper"}


@dataclass
class DemoResult:
    org_id: str
    #: "sequence Welcome", "event queue Webinar follow-up", "contact grace@example.com"
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


def seed_demo(services, org_name: str) -> DemoResult:
    """Give ``org_name`` (created if needed) the demo's sequences, queue and contact, each only if
    it has none of that name (or email) yet. ``services`` is :class:`seqbridge.services.Services`."""
    org = services.keys.ensure_org(org_name)
    caller = Caller(org["id"], CLI_ACTOR)
    result = DemoResult(org["id"])
    for definition in DEMO_DEFINITIONS:
        label = f"{definition.kind.value.replace('_', ' ')} {definition.name}"
        try:
            services.sequences.resolve_id(caller, definition.kind, definition.name)
        except Conflict:  # several already: certainly not ours to add to
            result.existing.append(label)
            continue
        except NotFound:
            _create(services, caller, definition)
            result.created.append(label)
            continue
        result.existing.append(label)
    label = f"contact {DEMO_CONTACT['email']}"
    if services.contacts.find_by_email(caller, DEMO_CONTACT["email"]) is None:
        services.contacts.create_contact(caller, dict(DEMO_CONTACT))
        result.created.append(label)
    else:
        result.existing.append(label)
    return result


def _create(services, caller: Caller, definition: DemoDefinition) -> None:
    sequences = services.sequences
    created = sequences.create_sequence(
        caller, definition.kind, {"name": definition.name, **definition.fields}
    )
    sequences.add_step(caller, definition.kind, created["id"], definition.step)
    if created["status"] != SequenceStatus.ACTIVE:
        sequences.update_sequence(
            caller, definition.kind, created["id"], {"status": SequenceStatus.ACTIVE.value}
        )
