"""One module per outside system, and none of them imports Flask.

- Inbound sources verify and parse webhooks (WhatsApp Cloud, Twilio, Typeform, HubSpot, ...).
- Outbound targets act on remote backends (sequences, bot and event-queue dialects) over HTTP.
"""

from connectors.crm_form import ActiveCampaign, CrmForm
from connectors.form import Form
from connectors.generic import Generic, N8n, Zapier
from connectors.hubspot import HubSpot
from connectors.standard_webhooks import StandardWebhooks
from connectors.twilio import Twilio
from connectors.typeform import Typeform
from connectors.whatsapp_cloud import WhatsAppCloud

#: Inbound source connectors by the name a hook's ``source.connector`` uses.
SOURCES = {
    connector.name: connector
    for connector in (
        WhatsAppCloud,
        Twilio,
        Typeform,
        HubSpot,
        StandardWebhooks,
        ActiveCampaign,
        CrmForm,
        Zapier,
        N8n,
        Generic,
        Form,
    )
}

from connectors.bot_sequences_api import BotSequencesApi  # noqa: E402
from connectors.event_queues_api import EventQueuesApi  # noqa: E402
from connectors.sequences_api import SequencesApi  # noqa: E402

#: Outbound target connectors by the ``type`` a mapping's target names.
TARGETS = {target.type: target for target in (SequencesApi, BotSequencesApi, EventQueuesApi)}
