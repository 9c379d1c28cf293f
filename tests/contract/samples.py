"""One instance of every event type, every field filled (optional ones too), made from the models themselves.

Built from the field annotations rather than written out by hand, so a new event type or field is covered
without touching the tests. ``full=False`` leaves optional fields at their defaults (the lean event).
"""

from __future__ import annotations

import types
import typing
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel

from shared.events import EVENT_TYPES, EventData

AT = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=UTC)


def _value(annotation: Any, name: str, full: bool) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        (arg,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _value(arg, name, full)
    if origin is list:
        return [_value(typing.get_args(annotation)[0], name, full)]
    if origin is dict:
        key, value = typing.get_args(annotation) or (str, Any)
        if key is str and value is Any:
            return {"why": name}
        return {_value(key, name, full): _value(value, name, full)}
    if isinstance(annotation, type):
        if issubclass(annotation, Enum):
            return list(annotation)[-1]
        if issubclass(annotation, BaseModel):
            return build(annotation, full)
        if issubclass(annotation, bool):
            return True
        if issubclass(annotation, int):
            return 2
        if issubclass(annotation, float):
            return 1.5
        if issubclass(annotation, datetime):
            return AT
        if issubclass(annotation, str):
            return f"{name}-1"
    raise TypeError(f"no sample for {name}: {annotation!r}")


def build(cls: type[BaseModel], full: bool = True) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {
        name: _value(hints[name], name, full) for name, info in cls.model_fields.items() if full or info.is_required()
    }
    return cls(**kwargs)


def sample_events(full: bool = True) -> list[EventData]:
    return [build(cls, full) for cls in EVENT_TYPES.values()]
