"""Reload the strategy file without a restart. It is validated before anything changes, so an invalid
file leaves the active strategy in place (the API answers 422 with the errors).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from services.router.strategy import Strategy, load_strategy

if TYPE_CHECKING:
    from services.router.service import RouterService

log = structlog.get_logger(__name__)


async def reload_strategy(router: RouterService, path: Path | None) -> Strategy:
    """Load, validate and activate a strategy file; on error the active one stays (raises)."""
    strategy = await asyncio.to_thread(load_strategy, path)
    async with router.writer.locked():
        router.engine.replace_strategy(strategy)
        router.strategy = strategy
        router.goodwill.policy = strategy.goodwill
    log.info("router.strategy_reloaded", version=strategy.version, path=str(path) if path else None)
    router.wake()
    return strategy
