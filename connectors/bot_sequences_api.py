"""A remote backend speaking the bot dialect (seed 004): enroll and unenroll by ``contact_id``."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from connectors.remote import RemoteTarget, contact_of, failed, skipped


class BotSequencesApi(RemoteTarget):
    type = "bot_sequences_api"
    actions = frozenset({"enroll", "unenroll"})

    def _contact_id(self, action: dict[str, Any]) -> str | None:
        return contact_of(action).get("id")

    def _path(self, action: dict[str, Any], verb: str) -> str:
        return f"/api/v1/sequences/{quote(self.resolve_sequence(action), safe='')}/{verb}"

    def _enroll(self, action: dict[str, Any], key: str) -> dict[str, Any]:
        contact_id = self._contact_id(action)
        if contact_id is None:
            return failed(
                "missing_contact", f"{self.name}: the bot dialect identifies contacts by contact_id"
            )
        response = self.call("POST", self._path(action, "enroll"), key=key, json={"contact_id": contact_id})
        remote = (response.json().get("data") or {}) if response.status_code in (200, 201) else {}
        return self.outcome(response, "the sequence or contact", enrollment_id=remote.get("id"))

    def _unenroll(self, action: dict[str, Any], key: str) -> dict[str, Any]:
        if action.get("sequence", action.get("queue")) == "*":
            return failed("unsupported", f'{self.name}: unenroll from "*" works on the local target only')
        contact_id = self._contact_id(action)
        if contact_id is None:
            return failed(
                "missing_contact", f"{self.name}: the bot dialect identifies contacts by contact_id"
            )
        response = self.call("POST", self._path(action, "unenroll"), key=key, json={"contact_id": contact_id})
        if response.status_code == 404 and "not_enrolled" in response.text:
            return skipped("not_enrolled", f"the contact is not enrolled in {self.name}")
        return self.outcome(response, "the sequence")
