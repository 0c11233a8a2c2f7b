"""What ``import audiencekit`` loads, and where its lazily loaded names live."""

from __future__ import annotations

import subprocess
import sys

import audiencekit


def test_importing_the_package_loads_neither_httpx_nor_the_engine() -> None:
    """The vocabulary, the errors and the registry load; the engine, httpx and the providers
    wait until first used (``import audiencekit`` costs about what ``import httpx`` does)."""
    code = (
        "import sys, audiencekit; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('httpx', 'anyio', 'cattrs') or m.startswith('audiencekit.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = eval(done.stdout)
    assert loaded == [
        "audiencekit.backend",
        "audiencekit.errors",
        "audiencekit.models",
        "audiencekit.providers",
        "audiencekit.providers._registry",
    ]


def test_lazy_names_resolve_to_their_home() -> None:
    assert audiencekit.sync.__module__ == "audiencekit.workflows._sync"
    for name in audiencekit.__all__:
        assert getattr(audiencekit, name) is not None, name


def test_the_top_level_is_small() -> None:
    assert len(audiencekit.__all__) <= 35
    assert len(set(audiencekit.__all__)) == len(audiencekit.__all__)


def test_each_moved_name_lives_in_its_new_home_only() -> None:
    """A name moved off the top level imports from its public module; the top level's
    AttributeError names that module."""
    import importlib

    import pytest

    moved = audiencekit._MOVED
    assert moved
    assert not set(moved) & set(audiencekit.__all__)
    for name, home in moved.items():
        module = importlib.import_module(home)
        assert getattr(module, name) is not None, (name, home)
        assert name in module.__all__, (name, home)
        with pytest.raises(AttributeError, match=f"lives in {home}"):
            getattr(audiencekit, name)
    from audiencekit import options
    from audiencekit.core import poll, transport

    # re-exported, not defined twice
    assert options.PollPolicy is poll.PollPolicy
    assert options.RetryPolicy is transport.RetryPolicy
    assert options.ClientOptions is transport.ClientOptions


def test_provider_names_stay_with_their_provider() -> None:
    """A provider's own vocabulary is read from its package, not from the neutral modules."""
    import audiencekit.models
    from audiencekit.providers.batch import IndexingState

    assert IndexingState("IN_PROCESS") is IndexingState.IN_PROGRESS
    assert not hasattr(audiencekit, "IndexingState")
    assert not hasattr(audiencekit.models, "IndexingState")
