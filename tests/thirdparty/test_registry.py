"""The registry: providers from installed packages' entry points, from register_provider, and
what it refuses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from audiencekit import ConfigurationError, open_backend
from audiencekit.providers import Provider, get_provider, register_provider, unregister_provider

ROOT = Path(__file__).parents[2]


def installed(tmp_path: Path, entry_points: str, module: str) -> dict[str, str]:
    """An environment in which a package is installed that declares ``entry_points`` (the
    ``audiencekit.providers`` group) and ships ``acme_pkg.py``."""
    dist = tmp_path / "acme_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[audiencekit.providers]\n{entry_points}\n")
    (tmp_path / "acme_pkg.py").write_text(textwrap.dedent(module))
    path = os.pathsep.join([str(tmp_path), str(ROOT)])
    return {**os.environ, "PYTHONPATH": path}


def test_an_installed_package_registers_through_its_entry_point(tmp_path: Path) -> None:
    env = installed(
        tmp_path,
        "acme = acme_pkg:ACME\nbroken = no_such_module:ACME\nwrong = acme_pkg:NOT_A_PROVIDER",
        """
        from audiencekit.providers import Provider

        ACME = Provider(name="acme", backend="tests.thirdparty.acme:AcmeBackend",
                        env={"api_key": "ACME_API_KEY"})
        NOT_A_PROVIDER = 42
        """,
    )
    code = (
        "from audiencekit.providers import provider_names, open_backend\n"
        "print(provider_names())\n"
        "print(type(open_backend('acme', api_key='k')).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    names, built = done.stdout.splitlines()
    assert eval(names) == ["acme", "batch", "dexatel", "fake"]
    assert built == "AcmeBackend"
    # A broken entry point is skipped with a warning, not fatal to every provider.
    assert "'broken' skipped" in done.stderr
    assert "'wrong' skipped: not a Provider" in done.stderr


def test_register_refuses_a_taken_name_and_bad_names() -> None:
    with pytest.raises(ConfigurationError, match="already registered"):
        register_provider(Provider(name="batch", backend="x:y"))
    with pytest.raises(ConfigurationError, match="lowercase identifier"):
        Provider(name="Acme-2", backend="x:y")
    known = r"no provider 'acme_nowhere'; known: .*batch, dexatel"
    with pytest.raises(ConfigurationError, match=known):
        open_backend("acme_nowhere")


def test_a_registered_factory_is_called_with_options_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[dict[str, object]] = []

    def factory(**options: object) -> object:
        seen.append(options)
        return get_provider("fake").build()

    register_provider(Provider(name="recorded", backend=factory, env={"token": "RECORDED_TOKEN"}))
    try:
        monkeypatch.setenv("RECORDED_TOKEN", "from-env")
        open_backend("recorded", size=3)
        open_backend("recorded", token="given")
    finally:
        unregister_provider("recorded")
    assert seen == [{"size": 3, "token": "from-env"}, {"token": "given"}]
    with pytest.raises(ConfigurationError):
        get_provider("recorded")


def test_the_emulator_command_serves_a_registered_providers_emulator(
    acme_server: object, capsys: pytest.CaptureFixture[str]
) -> None:
    """With Acme registered, the emulator command serves its emulator beside the built-ins and
    prints how to connect to it."""
    import json
    import threading

    from audiencekit.testing.emulator import main

    stop = threading.Event()
    done: list[int] = []
    runner = threading.Thread(target=lambda: done.append(main(["--json"], stop=stop)))
    runner.start()
    try:
        for _ in range(200):
            printed = capsys.readouterr().out
            if printed:
                break
            stop.wait(0.05)
    finally:
        stop.set()
        runner.join(10)
    ends = json.loads(printed)
    assert set(ends) == {"dexatel", "batch", "acme"}
    assert ends["acme"]["url"].endswith("/v2")
    assert ends["acme"]["options"]["api_key"] == ends["acme"]["key"]
    assert done == [0]


def test_a_providers_command_line_options_come_from_the_registry() -> None:
    """A provider's ``cli_options`` become ``--NAME-OPTION`` on every command, passed to its
    factory as keywords; the command line knows nothing of any one provider."""
    from click.testing import CliRunner

    from audiencekit.cli._app import build_app

    seen: list[dict[str, object]] = []

    def factory(**options: object) -> object:
        seen.append(options)
        return get_provider("fake").build()

    register_provider(Provider(name="recorded", backend=factory,
                               cli_options={"region": "Which region."}))  # fmt: skip
    try:
        app = build_app()
        shown = CliRunner().invoke(app, ["audiences", "list", "--help"]).output
        result = CliRunner().invoke(
            app, ["--recorded-region", "eu-2", "audiences", "list", "-p", "recorded", "--json"]
        )
    finally:
        unregister_provider("recorded")
    assert "--recorded-region" in shown
    assert "Which region." in shown
    assert "--batch-api-version" in shown  # the built-in's, declared the same way
    assert result.exit_code == 0, result.output
    assert seen == [{"region": "eu-2"}]
    with pytest.raises(ConfigurationError, match="cli_options"):
        Provider(name="bad", backend="x:y", cli_options={"base_url": "shadowed"})
