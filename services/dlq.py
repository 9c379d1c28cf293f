"""``switchboard dlq list|show|replay``: inspect dead letters and put them back on their topic.

Works on both buses, configured like the services (``SWITCHBOARD_BUS``, ``SWITCHBOARD_DATA_DIR``,
``SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS``, ``SWITCHBOARD_TOPIC_PREFIX``...).

What ``replay`` does: it publishes the dead letter's original bytes (so the same CloudEvents ``id``) with
its original key to its original topic (the ``x-original-topic`` header), keeping the original headers
and adding ``x-replayed-from``. Every consumer group of that topic receives it again: a consumer that
already handled the event finds its id in its inbox and skips it (no second effect; within the inbox
retention, ``SWITCHBOARD_INBOX_RETENTION_DAYS``), and the router additionally never creates a contact
twice. The DLQ itself is a log and keeps the entry; replaying it twice is harmless for the same reason.
Entries whose bytes are not a valid event are not replayed (they would come straight back).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from shared.bus import EventBus, Record, create_bus
from shared.bus.base import (
    DLQ_ATTEMPTS,
    DLQ_CONSUMER_GROUP,
    DLQ_ERROR,
    DLQ_HEADERS,
    DLQ_ORIGINAL_OFFSET,
    DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_TOPIC,
    REPLAYED_FROM,
)
from shared.events import CONTENT_TYPE_HEADER, STRUCTURED_HEADERS, MalformedEvent, decode_event
from shared.settings import CommonSettings
from shared.topics import DLQ_SUFFIX, dlq

cli = typer.Typer(help="Inspect and replay dead-lettered events (both buses).", no_args_is_help=True)


@dataclass(frozen=True)
class DeadLetter:
    """One DLQ entry, with what the bus wrote about why it is there."""

    record: Record

    @property
    def ref(self) -> str:
        return f"{self.record.partition}:{self.record.offset}"

    def header(self, name: str) -> str | None:
        for key, value in self.record.headers:
            if key == name:
                return value.decode("utf-8", "replace")
        return None

    @property
    def original_topic(self) -> str:
        return self.header(DLQ_ORIGINAL_TOPIC) or self.record.topic.removesuffix(DLQ_SUFFIX)

    def event(self) -> dict[str, Any] | None:
        """The event as JSON if the bytes are a valid event, else None."""
        try:
            envelope = decode_event(self.record.value)
        except MalformedEvent:
            return None
        event: dict[str, Any] = json.loads(envelope.to_bytes())  # an envelope encodes a JSON object
        return event

    def summary(self) -> dict[str, Any]:
        event = self.event()
        return {
            "ref": self.ref,
            "key": self.record.key,
            "event_id": event["id"] if event else None,
            "type": event["type"] if event else None,
            "valid": event is not None,
            "original": f"{self.original_topic}/{self.header(DLQ_ORIGINAL_PARTITION)}"
            f"@{self.header(DLQ_ORIGINAL_OFFSET)}",
            "group": self.header(DLQ_CONSUMER_GROUP),
            "attempts": self.header(DLQ_ATTEMPTS),
            "error": self.header(DLQ_ERROR),
            "replayed_from": self.header(REPLAYED_FROM),
        }

    def detail(self) -> dict[str, Any]:
        event = self.event()
        return {
            **self.summary(),
            "headers": {k: v.decode("utf-8", "replace") for k, v in self.record.headers},
            "event": event,
            "raw": None if event is not None else self.record.value.decode("utf-8", "replace"),
        }

    def replay_headers(self) -> list[tuple[str, bytes]]:
        """The original record's headers without the DLQ's own. Only valid events are replayed, so a
        record written before events carried the structured-mode content type gets it now."""
        kept = [(k, v) for k, v in self.record.headers if k not in DLQ_HEADERS and k != REPLAYED_FROM]
        if not any(k.lower() == CONTENT_TYPE_HEADER for k, _ in kept):
            kept = [*STRUCTURED_HEADERS, *kept]
        return [*kept, (REPLAYED_FROM, f"{self.record.topic}/{self.ref}".encode())]


def dlq_topic(topic: str) -> str:
    """``contacts`` and ``contacts.dlq`` both name the contacts DLQ."""
    return topic if topic.endswith(DLQ_SUFFIX) else dlq(topic)


async def read_dead_letters(bus: EventBus, topic: str) -> list[DeadLetter]:
    return [DeadLetter(r) for r in await bus.read_topic(dlq_topic(topic))]


async def replay(bus: EventBus, letters: list[DeadLetter]) -> tuple[list[DeadLetter], list[DeadLetter]]:
    """Republish valid dead letters to their original topic; returns (replayed, skipped as malformed)."""
    replayed, skipped = [], []
    for letter in letters:
        if letter.event() is None:
            skipped.append(letter)
            continue
        await bus.publish_raw(letter.original_topic, letter.record.key, letter.record.value, letter.replay_headers())
        replayed.append(letter)
    return replayed, skipped


async def _with_bus(action: Any) -> Any:
    bus = create_bus(CommonSettings())
    await bus.start()
    try:
        return await action(bus)
    finally:
        await bus.stop()


def _select(letters: list[DeadLetter], refs: list[str], group: str | None) -> list[DeadLetter]:
    by_ref = {letter.ref: letter for letter in letters}
    unknown = [ref for ref in refs if ref not in by_ref]
    if unknown:
        typer.echo(f"no dead letter {', '.join(unknown)} (see `switchboard dlq list`)", err=True)
        raise typer.Exit(2)
    chosen = [by_ref[ref] for ref in refs] if refs else letters
    return [letter for letter in chosen if group is None or letter.header(DLQ_CONSUMER_GROUP) == group]


TopicArg = Annotated[str, typer.Argument(help="Topic whose DLQ to read, e.g. `contacts` (or `contacts.dlq`).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]


@cli.command("list")
def list_(topic: TopicArg, as_json: JsonOpt = False) -> None:
    """List the dead letters of a topic: ref (partition:offset), event, consumer group, attempts, error."""
    letters: list[DeadLetter] = asyncio.run(_with_bus(lambda bus: read_dead_letters(bus, topic)))
    if as_json:
        for letter in letters:
            typer.echo(json.dumps(letter.summary()))
        return
    typer.echo(f"{len(letters)} dead letter(s) in {dlq_topic(topic)}")
    for letter in letters:
        s = letter.summary()
        error = (s["error"] or "").replace("\n", " ")[:120]
        typer.echo(
            f"  {s['ref']:<10} {s['type'] or '(not an event)'} id={s['event_id']} key={s['key']} "
            f"group={s['group']} attempts={s['attempts']} error={error}"
        )


@cli.command()
def show(topic: TopicArg, ref: Annotated[str, typer.Argument(help="partition:offset, from `list`.")]) -> None:
    """Show one dead letter in full: headers, the event (or its raw bytes), the error."""
    letters: list[DeadLetter] = asyncio.run(_with_bus(lambda bus: read_dead_letters(bus, topic)))
    (letter,) = _select(letters, [ref], None)
    typer.echo(json.dumps(letter.detail(), indent=2))


@cli.command("replay")
def replay_(
    topic: TopicArg,
    refs: Annotated[list[str] | None, typer.Argument(help="partition:offset of the entries; none: all.")] = None,
    group: Annotated[str | None, typer.Option(help="Only entries dead-lettered by this consumer group.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be replayed, publish nothing.")] = False,
) -> None:
    """Republish dead letters to their original topic with their original id and key.

    Consumers that already handled an event skip it (inbox dedupe); the DLQ keeps its entries.
    """

    async def run(bus: EventBus) -> tuple[list[DeadLetter], list[DeadLetter]]:
        chosen = _select(await read_dead_letters(bus, topic), refs or [], group)
        if dry_run:
            return [c for c in chosen if c.event() is not None], [c for c in chosen if c.event() is None]
        return await replay(bus, chosen)

    replayed, skipped = asyncio.run(_with_bus(run))
    verb = "would replay" if dry_run else "replayed"
    for letter in replayed:
        s = letter.summary()
        typer.echo(f"{verb} {s['ref']} {s['type']} id={s['event_id']} -> {letter.original_topic}")
    for letter in skipped:
        typer.echo(f"skipped {letter.ref}: not a valid event (replaying it would dead-letter it again)")
    typer.echo(f"{verb} {len(replayed)}, skipped {len(skipped)}")
