"""httpx stays cheap per request: httpcore asks ``sniffio`` which event loop runs, on every request.

``httpcore._synchronization.current_async_library`` does ``import sniffio`` inside the function. With
sniffio installed that is a dictionary lookup (``sys.modules``); without it every request's import fails
after searching ``sys.path`` again, about 0.4 ms of CPU per request on the dev machine (the router's
proxying to a domain's owner and the connector use httpx). sniffio is therefore a runtime dependency.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from httpcore._synchronization import current_async_library


class Lookups(importlib.abc.MetaPathFinder):
    """Records every module name the import system had to search for (not found in ``sys.modules``)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        self.names.append(fullname)
        return None  # let the real finders answer


def test_httpcore_finds_its_event_loop_library_without_searching_for_it_per_request() -> None:
    async def per_request_probe() -> list[str]:
        return [current_async_library() for _ in range(50)]

    lookups = Lookups()
    sys.meta_path.insert(0, lookups)
    try:
        answers = asyncio.run(per_request_probe())
    finally:
        sys.meta_path.remove(lookups)
    assert set(answers) == {"asyncio"}
    assert "sniffio" not in lookups.names, f"searched for sniffio {lookups.names.count('sniffio')} times in 50 calls"
