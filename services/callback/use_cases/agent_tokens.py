"""``agent.token_issued``: the router issued an agent a new token; every older token of that agent is
refused from then on (``views.CallbackViews.agent_token_is_current`` answers the API's check).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.callback.store import AgentToken
from services.callback.unit_of_work import UnitOfWork
from shared.events import AgentTokenIssued, Envelope

if TYPE_CHECKING:
    from services.callback.service import CallbackService


async def on_agent_token_issued(callbacks: CallbackService, tx: UnitOfWork, env: Envelope) -> None:
    """Remember the agent's current token id: every older token of that agent is revoked here."""
    ev = env.payload
    assert isinstance(ev, AgentTokenIssued)
    s = tx.session
    row = await s.get(AgentToken, (ev.tenant_id, ev.agent_id), with_for_update=True)
    if row is None:
        s.add(AgentToken(tenant_id=ev.tenant_id, agent_id=ev.agent_id, token_id=ev.token_id, issued_at=ev.at))
    elif ev.at >= row.issued_at:  # an older issue arriving late must not revive its token
        row.token_id, row.issued_at = ev.token_id, ev.at
