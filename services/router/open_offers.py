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
        self.of_agent: dict[str, set[str]] = {}  # agent -> its open offers
        self.changed: set[str] = set()  # agents whose open offers changed (agent_work.py settles them)

    def __len__(self) -> int:
        return len(self.by_id)

    def get(self, offer_id: str) -> PendingOffer | None:
        return self.by_id.get(offer_id)

    def for_contact(self, contact_id: str) -> PendingOffer | None:
        offer_id = self.of_contact.get(contact_id)
        return None if offer_id is None else self.by_id[offer_id]

    def values(self) -> list[PendingOffer]:
        return list(self.by_id.values())

    def count_for(self, agent_id: str) -> int:
        return len(self.of_agent.get(agent_id, ()))

    def of(self, agent_id: str) -> list[PendingOffer]:
        return [self.by_id[o] for o in self.of_agent.get(agent_id, ())]

    def track(self, offer: PendingOffer) -> None:
        self.by_id[offer.offer_id] = offer
        self.of_contact[offer.contact_id] = offer.offer_id
        self.of_agent.setdefault(offer.agent_id, set()).add(offer.offer_id)
        self.changed.add(offer.agent_id)

    def untrack(self, offer_id: str) -> PendingOffer | None:
        offer = self.by_id.pop(offer_id, None)
        if offer is None:
            return None
        if self.of_contact.get(offer.contact_id) == offer_id:
            del self.of_contact[offer.contact_id]
        mine = self.of_agent.get(offer.agent_id)
        if mine is not None:
            mine.discard(offer_id)
            if not mine:
                del self.of_agent[offer.agent_id]
        self.changed.add(offer.agent_id)
        return offer

    def clear(self) -> None:
        self.by_id.clear()
        self.of_contact.clear()
        self.of_agent.clear()
        self.changed.clear()
