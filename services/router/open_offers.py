"""The open offers (leases) in memory: by id, and which one each contact has.

An index of the ``offers`` rows in state ``pending``, rebuilt with the engine: answers look offers up by
id, withdrawals by contact, the tick scans them for expiry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class PendingOffer:
    offer_id: str
    contact_id: str
    agent_id: str
    expires_at: float


class OpenOffers:
    def __init__(self) -> None:
        self.by_id: dict[str, PendingOffer] = {}
        self.of_contact: dict[str, str] = {}  # contact -> its open offer

    def __len__(self) -> int:
        return len(self.by_id)

    def get(self, offer_id: str) -> PendingOffer | None:
        return self.by_id.get(offer_id)

    def for_contact(self, contact_id: str) -> PendingOffer | None:
        offer_id = self.of_contact.get(contact_id)
        return None if offer_id is None else self.by_id[offer_id]

    def values(self) -> list[PendingOffer]:
        return list(self.by_id.values())

    def track(self, offer: PendingOffer) -> None:
        self.by_id[offer.offer_id] = offer
        self.of_contact[offer.contact_id] = offer.offer_id

    def untrack(self, offer_id: str) -> PendingOffer | None:
        offer = self.by_id.pop(offer_id, None)
        if offer is not None and self.of_contact.get(offer.contact_id) == offer_id:
            del self.of_contact[offer.contact_id]
        return offer

    def clear(self) -> None:
        self.by_id.clear()
        self.of_contact.clear()
