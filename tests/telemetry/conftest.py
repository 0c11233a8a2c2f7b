"""An in-memory OpenTelemetry SDK for the telemetry tests, bound to audiencekit's hooks per test.

The global providers can be set once per process, so these tests do not set them: each test
binds audiencekit's tracer and instruments to providers of its own and unbinds them after
(``test_telemetry_global.py`` checks the global providers, in child processes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import attrs
import pytest

from audiencekit import telemetry

try:
    import opentelemetry.sdk  # noqa: F401
except ImportError:
    if os.environ.get("CI"):  # CI installs the test extra, which brings the SDK: never skip
        raise
    pytest.skip("the test extra installs the OpenTelemetry SDK", allow_module_level=True)

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)


@attrs.define
class Recorded:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    @property
    def spans(self) -> tuple[ReadableSpan, ...]:
        return tuple(self.exporter.get_finished_spans())

    def metrics_json(self) -> str:
        data = self.reader.get_metrics_data()
        return data.to_json() if data is not None else ""

    def points(self, name: str) -> list[tuple[dict[str, object], object]]:
        """(attributes, value) of every point of the metric ``name``: a sum's value, a
        histogram's count."""
        found: list[tuple[dict[str, object], object]] = []
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = getattr(point, "count", None)
                        found.append((dict(point.attributes or {}), value))
        return found


@pytest.fixture
def otel() -> Iterator[Recorded]:
    """Spans and metrics of this test, in memory."""
    if not telemetry.ENABLED:
        pytest.fail("opentelemetry-api is not importable: install the test extra")
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry.bind(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield Recorded(exporter, reader)
    finally:
        telemetry.bind()
        tracer_provider.shutdown()
        meter_provider.shutdown()
