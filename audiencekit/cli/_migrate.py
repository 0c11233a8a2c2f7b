"""``migrate``: copy an audience to another provider, then verify."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import attrs
import click

from ..core.resolve import resolve_audience
from ..errors import CheckpointError
from ._options import Options, state_store
from ._output import Output
from ._runs import retry_hint
from ._session import OK, PARTIAL, Session, run

__all__ = ["add_migrate"]


def add_migrate(app: click.Group, options: Options) -> None:
    """Add the ``migrate`` command to ``app``."""

    @app.command()
    @click.option("--from", "source", required=True, metavar="PROVIDER:AUDIENCE",
                  callback=options.endpoint, help="The audience to copy.")  # fmt: skip
    @click.option("--to", "target", required=True, metavar="PROVIDER:AUDIENCE",
                  callback=options.endpoint, help="The audience to copy it to.")  # fmt: skip
    @click.option("--create", is_flag=True, help="Create the target when it does not exist.")
    @options.channel
    @click.option("--dry-run", is_flag=True,
                  help="Read, check and compare; print what would be sent (counts, the first "
                  "ids of each kind); send nothing.")  # fmt: skip
    @click.option("--resume", is_flag=True, help="Continue an interrupted run.")
    @click.option("--restart", is_flag=True,
                  help="Forget an interrupted run and start over.")  # fmt: skip
    @options.state
    @options.common
    @run
    async def migrate(
        session: Session,
        source: tuple[str, str],
        target: tuple[str, str],
        create: bool,
        channel: str | None,
        dry_run: bool,
        resume: bool,
        restart: bool,
        state: Path | str,
    ) -> int:
        """Copy an audience to another provider, then verify.

        The target ends up holding exactly the source's members (what only the target held
        is removed); an interrupted run continues with --resume."""
        from ..workflows import migrate as run_migration

        if resume and restart:
            raise click.UsageError("--resume and --restart exclude each other")
        store = state_store(state)
        try:
            async with (
                session.backend(source[0]) as source_backend,
                session.backend(target[0]) as target_backend,
            ):
                found, _ = await resolve_audience(source_backend, source[1])
                if not dry_run:
                    session.resume = session.command("--resume", drop=["--restart"])

                async def once(resume: bool) -> Any:
                    with session.progress(f"migrate {source[1]}", found.size) as progress:
                        return await run_migration(
                            source_backend, found.id, target_backend, target[1], create=create,
                            channel=channel, dry_run=dry_run, state=store, resume=resume,
                            on_progress=progress,
                        )  # fmt: skip

                try:
                    report = await once(resume)
                except CheckpointError as exc:
                    if not (restart and exc.interrupted):
                        raise
                    await anyio.to_thread.run_sync(store.clear_checkpoint, exc.run)
                    report = await once(False)
        finally:
            store.close()
        data = attrs.asdict(report, recurse=False)
        data.update(source_audience=source[1], verified=report.verified,
                    invalid=[str(p) for p in report.invalid], ok=report.ok,
                    examples=dict(report.examples))  # fmt: skip
        data.pop("target_ids", None)
        data.pop("expected_ids", None)
        hint = retry_hint(session, report.history_id, len(report.failed) + len(report.unknown))
        session.out.data(data, lambda: "\n".join([_migration_text(session.out, data, report),
                                                  *hint]))  # fmt: skip
        return OK if report.ok else PARTIAL


def _migration_text(out: Output, data: dict[str, Any], report: Any) -> str:
    lines = [
        f"{'checked' if report.dry_run else 'migrated'} {data['source_audience']} -> "
        f"{report.target_audience}: read {report.read:,}, sent {report.sent:,}, "
        f"applied {report.applied:,}, unchanged {report.unchanged:,}, removed {report.removed:,}"
    ]
    if report.dry_run:
        counts = {"added": report.added, "changed": report.changed, "removed": report.removed}
        lines += out.would(counts, report.examples)
        lines.append("nothing was sent")
    if report.resumed_from:
        lines.append(f"resumed from {report.resumed_from:,}")
    lines += out.causes(report.failed, "failed")
    lines += out.causes(report.unknown, "unknown (may or may not have been applied)")
    lines += [f"invalid: {p}" for p in data["invalid"][:10]]
    if not report.dry_run:
        verified = {True: "yes", False: "NO", None: "not checked"}[report.verified]
        lines.append(f"verified identical: {verified}")
    return "\n".join(lines)
