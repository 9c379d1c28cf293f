"""Goodwill grants, durable and tenant-wide: the goodwill period budget holds for the whole tenant, however
many routers share its domains.

Each completion that grants goodwill writes a row in ``router_goodwill_grants`` in its own transaction.
The router's :class:`GoodwillLedger` (what the period has left, shown on offers and in stats) is read back
from those rows: on rebuild, and, with several active routers, before a grant is checked, under a lock
that makes the check and the grant one step across routers. A router that checked only its own ledger
would let N routers grant N times the budget in a period.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import bindparam, select, text

from services.router.store import goodwill_grants
from services.router.strategy import GoodwillLedger, GoodwillPolicy
from shared.db import SqlSession
from shared.events import Role

if TYPE_CHECKING:
    from services.router.service import RouterService
    from services.router.unit_of_work import UnitOfWork

# One transaction-scoped advisory lock (PostgreSQL) serialises the check-and-grant of routers sharing
# a database; released at commit or rollback. SQLite needs none: a router's transaction writes its lease
# first, so it holds the database's one write lock until it ends.
GRANT_LOCK = text("SELECT pg_advisory_xact_lock(7247081512)")
INSERT_GRANT = goodwill_grants.insert()
GRANTS_SINCE = (
    select(goodwill_grants.c.granted_at, goodwill_grants.c.amount, goodwill_grants.c.role)
    .where(goodwill_grants.c.granted_at > bindparam("since"))
    .order_by(goodwill_grants.c.granted_at, goodwill_grants.c.seq)
)


async def ledger(session: SqlSession, policy: GoodwillPolicy, now: float) -> GoodwillLedger:
    """The grants of the rolling period ending ``now``, every router's, as a ledger."""
    book = GoodwillLedger(policy)
    rows = await session.execute(GRANTS_SINCE, {"since": now - policy.period_seconds})
    for granted_at, amount, role in rows:
        book.record(amount, granted_at, Role(role) if role else None)
    return book


def _budgeted(policy: GoodwillPolicy) -> bool:
    return policy.period_budget is not None or bool(policy.role_budgets)


async def before_grant(router: RouterService, tx: UnitOfWork) -> None:
    """Make the router's ledger every router's, as of now, before a grant is checked against it.

    Only with several active routers (one owning the whole database knows every grant already), only
    when the strategy budgets the period, and once per transaction: later grants of the same group are
    recorded in the ledger as they are made. Holds the grant lock until the transaction ends, so another
    router's check waits for this grant to commit (or not) and then reads it.
    """
    if router.domains.whole or tx.goodwill_synced or not _budgeted(router.strategy.goodwill):
        return
    if tx.dialect == "postgresql":
        await tx.session.execute(GRANT_LOCK)
    router.goodwill = await ledger(tx.session, router.strategy.goodwill, tx.now)
    tx.goodwill_synced = True


async def grant(router: RouterService, tx: UnitOfWork, contact_id: str, amount: float, role: Role | None) -> None:
    """Record a grant: durable in this transaction, and in the router's ledger at once."""
    if amount <= 0:
        return
    await tx.session.execute(
        INSERT_GRANT,
        {"contact_id": contact_id, "granted_at": tx.now, "amount": amount, "role": role.value if role else None},
    )
    router.goodwill.record(amount, tx.now, role)
