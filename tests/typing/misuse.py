"""Mistakes a type checker must catch (each line marked with the error mypy reports)."""

from __future__ import annotations

from audiencekit import open_backend

open_backend("dexatle")  # E: call-overload
open_backend("batch", api_kye="k")  # E: call-overload
open_backend("dexatel", project_key="k")  # E: call-overload
open_backend("dexatel").client.create_campaing()  # E: attr-defined
_ = open_backend("batch").add_members("a", [1, 2])  # E: list-item
