"""One module per outside system, and none of them imports Flask.

- Inbound sources verify and parse webhooks (WhatsApp Cloud, Twilio, Typeform, HubSpot, ...).
- Outbound targets act on remote backends (sequences, bot and event-queue dialects) over HTTP.
"""
