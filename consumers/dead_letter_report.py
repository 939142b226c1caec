"""What `commons-users dlq` prints (README: "Dead letters"): a line per dead letter, one dead letter
in full, and what a replay did.

Keys, values and headers are whatever a publisher sent: printable text is printed as it is, text
with control characters as a quoted string with escapes, and anything that is not UTF-8 as a bytes
literal (`b'\\xff...'`), so that nothing read can garble a terminal.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
import sys

from tqdm import tqdm

from consumers.dead_letters import Action, DeadLetter, DeadLetterReader, Filters, Republisher, replay
from consumers.topics import dead_letter_topic

# A replay draws its progress bar on a terminal only, and only once it has run this long.
PROGRESS_AFTER_SECONDS = 2.0


def time_text(moment: datetime) -> str:
    """ISO 8601 in UTC to the second, as `--since` and `--until` take it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_text(key: bytes | None) -> str:
    """A key, quoted (`'r1'`, or `b'\\xff'` when it is not UTF-8), or `none`."""
    if key is None:
        return "none"
    try:
        return repr(key.decode())
    except UnicodeDecodeError:
        return repr(key)


def free_text(data: bytes | str, *, lines: bool = False) -> str:
    """Printable text as it is (with its line breaks and tabs when `lines`), else quoted."""
    try:
        text = data.decode() if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        return repr(data)
    bare = text.replace("\n", "").replace("\t", "") if lines else text
    return text if bare.isprintable() else repr(text)


def _indented(text: str) -> str:
    """A header value's later lines (PostgreSQL's DETAIL, say) under its first."""
    return text.replace("\n", "\n    ")


def line(letter: DeadLetter) -> str:
    """The dead letter in one line: where its record was read, key, size, when it was
    dead-lettered, and why (last, as it is free text; its first line: `show` prints all of it)."""
    stub = " stub" if letter.stub else ""
    reason = letter.reason.partition("\n")[0]
    return (
        f"{letter.source} key={key_text(letter.key)} size={letter.size}{stub} "
        f"time={time_text(letter.time)} {free_text(reason)}"
    )


def details(letter: DeadLetter) -> str:
    shown = [
        f"dead letter {letter.address}, written {time_text(letter.time)}",
        f"key: {key_text(letter.key)}",
        "headers:",
        *(f"  {free_text(name)}: {_indented(free_text(value, lines=True))}" for name, value in letter.headers),
    ]
    if letter.value is None:
        shown.append("value: none")
    else:
        shown += [f"value ({len(letter.value)} bytes):", free_text(letter.value, lines=True)]
    return "\n".join(shown)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _warn_missing(reader: DeadLetterReader) -> None:
    for topic in reader.missing:
        print(f"commons-users: the broker has no topic {topic}: nothing was read there", file=sys.stderr)


async def list_dead_letters(bootstrap_servers: str, topics: list[str], filters: Filters) -> int:
    """One line per dead letter the filters take, on stdout; the count on stderr."""
    listed = 0
    async with DeadLetterReader(bootstrap_servers, topics, filters.since) as reader:
        _warn_missing(reader)
        async for batch in reader.batches():
            for letter in filter(filters.match, batch):
                print(line(letter))
                listed += 1
        print(f"listed {listed} of the {_count(reader.total, 'dead letter')} read", file=sys.stderr)
    return 0


async def show_dead_letter(bootstrap_servers: str, topics: list[str], name: str) -> int:
    """The dead letters of a record, named by its source offset (or topic/partition/offset), or a
    dead letter by its own address: 0, or 1 when there is none, 2 when a bare offset names records
    of several partitions."""
    found: list[DeadLetter] = []
    async with DeadLetterReader(bootstrap_servers, topics) as reader:
        _warn_missing(reader)
        async for batch in reader.batches():
            found += [letter for letter in batch if name in (letter.source, letter.source_offset, letter.address)]
    sources = sorted({letter.source for letter in found})
    if not sources:
        read = ", ".join(map(dead_letter_topic, topics))
        print(f"commons-users: no dead letter of {name} in {read}", file=sys.stderr)
        return 1
    if len(sources) > 1:
        print(f"commons-users: offset {name} is ambiguous; show one of {', '.join(sources)}", file=sys.stderr)
        return 2
    print("\n\n".join(details(letter) for letter in found))
    return 0


async def replay_dead_letters(bootstrap_servers: str, topics: list[str], filters: Filters, *, dry_run: bool) -> int:
    """Publish the dead letters the filters take to their source topics, printing each; stubs are
    named, not published. A progress bar on a terminal's stderr when the run is long."""
    started = datetime.now(UTC)
    counts = dict.fromkeys(Action, 0)
    verb = "would replay" if dry_run else "replayed"
    async with (
        DeadLetterReader(bootstrap_servers, topics, filters.since) as reader,
        contextlib.nullcontext() if dry_run else Republisher(bootstrap_servers) as republisher,
    ):
        _warn_missing(reader)
        bar = tqdm(
            total=reader.total, unit=" dead letters", file=sys.stderr, disable=None, delay=PROGRESS_AFTER_SECONDS
        )
        with bar:
            async for letter, action in replay(reader, republisher, filters):
                counts[action] += 1
                bar.update()
                if action is Action.REPLAYED:
                    tqdm.write(f"{verb} {letter.source} key={key_text(letter.key)} size={letter.size}", file=sys.stdout)
                elif action is Action.STUB:
                    tqdm.write(
                        f"not replayed {letter.source}: a stub, without the value; read the record at offset "
                        f"{letter.source_offset} of {letter.source_topic} partition {letter.source_partition}",
                        file=sys.stdout,
                    )
    print(
        f"read {_count(sum(counts.values()), 'dead letter')}: {counts[Action.REPLAYED]} {verb}, "
        f"{_count(counts[Action.STUB], 'stub')} not replayed, {counts[Action.LEFT]} left by the filters"
        + ("; a dry run: nothing was published" if dry_run else "")
    )
    if counts[Action.REPLAYED] and not dry_run:
        print(f"records that fail again are dead-lettered anew: commons-users dlq list --since {time_text(started)}")
    return 0
