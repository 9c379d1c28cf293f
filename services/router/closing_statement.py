"""On PostgreSQL a transaction ends with one statement: its lease renewed, its agents' settled work, the
offers it made, its timeline entries, counters and outbox rows written, where it took six round trips.

Each statement on PostgreSQL is a round trip, and the router has one writer: at 100 contacts/s on this
machine the writer was busy 93 % of the time, a group's transaction taking 9–18 ms of which the fixed
statements were about a third, so changes queued behind it. Data-modifying CTEs over arrays (``unnest``)
put them in one statement, the same for every transaction whatever it holds (an empty array writes
nothing), so the server keeps one prepared statement for it.

The lease is renewed last, in that statement, rather than first: fencing holds the same. The commit
follows only if every lease was still this router's; if another router took one meanwhile, the statement
says so (the names it renewed), :class:`~services.router.ownership.OwnershipLost` is raised and the whole
transaction rolls back. A router that takes a lease over does so in its own committed ``UPDATE`` on the
lease row, so of two transactions one sees the other's owner and finds nothing to renew.

SQLite keeps its statements (``unit_of_work.py``): they are calls on the loop's thread, not round trips.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from services.router.rows import period_of
from services.router.store import agents, counters, leases, offers, timeline
from shared.outbox import outbox

if TYPE_CHECKING:
    from services.router.ownership import Ownership
    from services.router.unit_of_work import UnitOfWork

CLOSING_STATEMENT = text(
    f"""
WITH renewed AS (
    UPDATE {leases.name} SET expires_at = :expires_at
    WHERE name = ANY(CAST(:lease_names AS text[])) AND owner = :lease_owner
    RETURNING name
), noted AS (
    INSERT INTO {timeline.name} (contact_id, at, kind, agent_id, detail)
    SELECT contact_id, at, kind, agent_id, CAST(detail AS json)
    FROM unnest(
        CAST(:note_contacts AS text[]), CAST(:note_ats AS float8[]), CAST(:note_kinds AS text[]),
        CAST(:note_agents AS text[]), CAST(:note_details AS text[])
    ) WITH ORDINALITY AS n(contact_id, at, kind, agent_id, detail, ord)
    ORDER BY ord
), counted AS (
    INSERT INTO {counters.name} (period, name, value)
    SELECT CAST(:period AS text), name, value
    FROM unnest(CAST(:counter_names AS text[]), CAST(:counter_values AS float8[])) AS c(name, value)
    ON CONFLICT (period, name) DO UPDATE SET value = {counters.name}.value + excluded.value
), worked AS (
    UPDATE {agents.name} AS a SET
        activity = CASE WHEN w.set_activity THEN w.activity ELSE a.activity END,
        activity_since = CASE WHEN w.set_activity THEN w.activity_since ELSE a.activity_since END,
        wrap_up_until = CASE WHEN w.set_until THEN w.wrap_up_until ELSE a.wrap_up_until END
    FROM unnest(
        CAST(:work_agents AS text[]), CAST(:work_set_activity AS bool[]), CAST(:work_activity AS text[]),
        CAST(:work_since AS float8[]), CAST(:work_set_until AS bool[]), CAST(:work_until AS float8[])
    ) AS w(agent_id, set_activity, activity, activity_since, set_until, wrap_up_until)
    WHERE a.agent_id = w.agent_id
), offered AS (
    INSERT INTO {offers.name} (
        offer_id, contact_id, agent_id, state, made_at, expires_at, resolved_at, rule, score, explanation, reason
    )
    SELECT offer_id, contact_id, agent_id, state, made_at, expires_at, resolved_at, rule, score,
        CAST(explanation AS json), reason
    FROM unnest(
        CAST(:offer_ids AS text[]), CAST(:offer_contacts AS text[]), CAST(:offer_agents AS text[]),
        CAST(:offer_states AS text[]), CAST(:offer_made AS float8[]), CAST(:offer_expires AS float8[]),
        CAST(:offer_resolved AS float8[]), CAST(:offer_rules AS text[]), CAST(:offer_scores AS float8[]),
        CAST(:offer_explanations AS text[]), CAST(:offer_reasons AS text[])
    ) AS f(offer_id, contact_id, agent_id, state, made_at, expires_at, resolved_at, rule, score, explanation, reason)
), staged AS (
    INSERT INTO {outbox.name} (topic, key, payload, created_at)
    SELECT topic, key, payload, created_at
    FROM unnest(
        CAST(:topics AS text[]), CAST(:keys AS text[]), CAST(:payloads AS bytea[]),
        CAST(:created AS timestamptz[])
    ) WITH ORDINALITY AS o(topic, key, payload, created_at, ord)
    ORDER BY ord
)
SELECT array_agg(name) FROM renewed
"""
)


def closing_parameters(tx: UnitOfWork, names: list[str], owner: str, expires_at: float) -> dict[str, Any]:
    """The statement's arrays, a column each, in the order the transaction noted and staged them."""
    notes, staged, work, made = tx.notes, tx.staged, tx.work, tx.offers
    return {
        "expires_at": expires_at,
        "lease_names": names,
        "lease_owner": owner,
        "note_contacts": [n["contact_id"] for n in notes],
        "note_ats": [float(n["at"]) for n in notes],
        "note_kinds": [n["kind"] for n in notes],
        "note_agents": [n["agent_id"] for n in notes],
        "note_details": [json.dumps(n["detail"]) for n in notes],
        "period": period_of(tx.now),
        "counter_names": list(tx.bumps),
        "counter_values": [float(v) for v in tx.bumps.values()],
        # Each agent's row names the columns that moved (``new_<column>``); the others stay as they are.
        "work_agents": [w["agent"] for w in work],
        "work_set_activity": [("new_activity" in w) for w in work],
        "work_activity": [w.get("new_activity") for w in work],
        "work_since": [w.get("new_activity_since") for w in work],
        "work_set_until": [("new_wrap_up_until" in w) for w in work],
        "work_until": [w.get("new_wrap_up_until") for w in work],
        "offer_ids": [o["offer_id"] for o in made],
        "offer_contacts": [o["contact_id"] for o in made],
        "offer_agents": [o["agent_id"] for o in made],
        "offer_states": [o["state"] for o in made],
        "offer_made": [o["made_at"] for o in made],
        "offer_expires": [o["expires_at"] for o in made],
        "offer_resolved": [o["resolved_at"] for o in made],
        "offer_rules": [o["rule"] for o in made],
        "offer_scores": [float(o["score"]) for o in made],
        "offer_explanations": [json.dumps(o["explanation"]) for o in made],
        "offer_reasons": [o["reason"] for o in made],
        "topics": [r["topic"] for r in staged],
        "keys": [r["key"] for r in staged],
        "payloads": [r["payload"] for r in staged],
        "created": [r["created_at"] for r in staged],
    }


async def close(tx: UnitOfWork, ownership: Ownership) -> None:
    """Renew the leases and write what ``tx`` buffered, in one round trip; raises ``OwnershipLost``
    (before the commit, which then never happens) if a lease is not this router's any more."""
    names, expires_at = ownership.renewal(tx.now)
    params = closing_parameters(tx, names, ownership.owner, expires_at)
    renewed = (await tx.session.execute(CLOSING_STATEMENT, params)).scalar()
    tx.notes, tx.bumps, tx.staged, tx.work, tx.offers = [], {}, [], [], []
    ownership.confirm(names, set(renewed or ()))
