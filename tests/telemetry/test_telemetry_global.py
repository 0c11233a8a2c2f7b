"""Which implementation audiencekit picks, in child processes (the global providers can be set
once per process): the global SDK providers when configured, and nothing of OpenTelemetry at
all when it cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from .conftest import Recorded  # noqa: F401 (skips, as the fixtures do, without the SDK)

#: A bulk add and a read against the emulators, in a child process; prints what it saw.
RUN = """
import json, sys
import anyio
from audiencekit import Member, telemetry
from audiencekit.providers.batch import BatchBackend
from audiencekit.testing import EmulatorServer

async def main(ends):
    options = dict(ends["batch"].options)
    async with BatchBackend(**options, rate_limit=None, chunk_size=50) as batch:
        await batch.create_audience("a")
        result = await batch.add_members("a", (Member(f"u{i}") for i in range(120)))
        assert result.applied == 120

with EmulatorServer() as server:
    anyio.run(main, server.endpoints)
loaded = sorted(m for m, v in sys.modules.items() if m.startswith("opentelemetry") and v)
print(json.dumps({"enabled": telemetry.ENABLED, "loaded": loaded, **extra()}))
"""


def child(prelude: str, extra: str = "def extra():\n    return {}\n") -> dict[str, object]:
    code = textwrap.dedent(prelude) + "\n" + textwrap.dedent(extra) + RUN
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_without_opentelemetry_nothing_of_it_is_imported() -> None:
    """opentelemetry blocked (as when the extra is not installed): the hooks are no-ops and not
    one opentelemetry module is loaded by importing audiencekit and running a bulk add."""
    seen = child("import sys\nsys.modules['opentelemetry'] = None\n")
    assert seen == {"enabled": False, "loaded": []}


def test_with_the_api_only_nothing_breaks_and_nothing_is_recorded() -> None:
    """The API installed, no SDK configured: its no-op providers take the calls."""
    seen = child("")
    assert seen["enabled"] is True
    assert "opentelemetry.trace" in seen["loaded"]  # type: ignore[operator]
    assert not any(m.startswith("opentelemetry.sdk") for m in seen["loaded"])  # type: ignore[union-attr]


def test_the_global_providers_receive_the_spans_and_metrics() -> None:
    """Configured the usual way (the global providers, set before or after audiencekit is
    imported), the SDK gets every span and metric."""
    prelude = """
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    import audiencekit  # before the providers are set: the proxies pass the calls on

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    """
    extra = """
    def extra():
        spans = exporter.get_finished_spans()
        data = json.loads(reader.get_metrics_data().to_json())
        names = sorted({m["name"] for r in data["resource_metrics"]
                        for s in r["scope_metrics"] for m in s["metrics"]})
        scopes = sorted({(s.instrumentation_scope.name, s.instrumentation_scope.version)
                         for s in spans})
        return {"spans": sorted({s.name for s in spans}), "metrics": names, "scopes": scopes}
    """
    seen = child(prelude, extra)
    assert seen["enabled"] is True
    assert sorted(seen["spans"]) == [  # type: ignore[type-var]
        "GET /2.3/audiences/view",
        "POST /2.3/audiences/create",
        "POST /2.3/audiences/update",
        "audiencekit.add_members",
    ]
    assert seen["scopes"] == [["audiencekit", "0.1.0"]]
    assert {"http.client.request.duration", "audiencekit.ids.applied"} <= set(
        seen["metrics"]  # type: ignore[arg-type]
    )
