"""Move a Dexatel audience to Batch, resumably: ``python examples/migrate_dexatel_to_batch.py``.

The state file journals the run: if the script dies halfway, run it again with ``--resume``; it
reads the source again and sends only what Batch has not confirmed, changes at the source
included. Audiences are named by name on both sides.
"""

from __future__ import annotations

import sys

import anyio
from _emulators import providers

from audiencekit import BatchBackend, DexatelBackend, Member, StateStore
from audiencekit.workflows import migrate


def to_batch(contact: Member) -> Member:
    """Dexatel contact -> Batch member: the number is the id; names become attributes."""
    fields = contact.attributes
    return Member(
        contact.id,
        attributes={
            "first_name": fields.get("first_name", ""),
            "last_name": fields.get("last_name", ""),
            "segment": fields.get("custom1", "none"),
        },
    )


async def main(resume: bool = False) -> bool:
    with providers() as settings, StateStore("migration-state.sqlite3") as state:
        async with (
            DexatelBackend(**settings["dexatel"]) as dexatel,
            BatchBackend(**settings["batch"]) as batch,
        ):
            if not resume:  # the example fills its own source audience
                source = await dexatel.create_audience("newsletter", channel="SMS")
                await dexatel.add_members(
                    source.id,
                    (Member(f"+3749{i:07d}", attributes={"first_name": f"Reader{i}",
                                                         "custom1": "weekly"})
                     for i in range(1_500)),
                )  # fmt: skip
            report = await migrate(dexatel, "newsletter", batch, "newsletter_readers",
                                   create=True, mapping=to_batch, state=state,
                                   resume=resume)  # fmt: skip
    print(
        f"read {report.read:,}, sent {report.sent:,}, applied {report.applied:,}; "
        f"Batch holds {report.target_size:,} (verified: {report.verified})"
    )
    return bool(report.verified)


if __name__ == "__main__":
    anyio.run(main, "--resume" in sys.argv)
