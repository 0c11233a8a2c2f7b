"""The provider-neutral checks every operation passes before any provider sees it (the
provider's own rules come after, in its ``prepare``)."""

from __future__ import annotations

from collections.abc import Callable, Collection

from ..errors import Problem, ValidationError
from ..models import Add, Member, Operation, Remove
from .wire import is_text

__all__ = ["check_id", "check_operation", "plain_key", "validate_all"]


_GOOD_NAMES: set[str] = set()  # attribute names already found valid (bounded)


def check_operation(op: object) -> Operation:
    """The provider-neutral checks every operation passes before any provider sees it."""
    if plain_key(op) is not None:  # the common case, found with C-level tests
        return op  # type: ignore[return-value]
    if isinstance(op, Add):
        member = op.member
        if not isinstance(member, Member):
            raise ValidationError([Problem(f"Add needs a Member, got {type(member).__name__}")])
        ident = member.id
        _check_id(ident)
        attributes = member.attributes
        if attributes and not _GOOD_NAMES.issuperset(attributes):
            bad = [k for k in attributes if not isinstance(k, str) or not k]
            if len(_GOOD_NAMES) < 10_000:
                _GOOD_NAMES.update(k for k in attributes if k not in bad)
            if bad:
                raise ValidationError(
                    [Problem("attribute names must be non-empty strings", id=ident,
                             field=str(k)) for k in bad]
                )  # fmt: skip
        return op
    if isinstance(op, Remove):
        _check_id(op.id)
        return op
    raise ValidationError([Problem(f"expected Add or Remove, got {type(op).__name__}: {op!r:.80}")])


def plain_key(op: object) -> str | None:
    """The id of an operation of the common kind, which passes :func:`check_operation` as it
    is, found with C-level tests only (the bulk engine's loop runs this for every operation):
    an Add of a Member, or a Remove, whose id is a non-blank ASCII string, with attribute names
    already found valid. None for any other, which then gets the full checks."""
    if type(op) is Add:
        member = op.member
        if type(member) is not Member:
            return None
        key = member.id
        attributes = member.attributes
        if attributes and not _GOOD_NAMES.issuperset(attributes):
            return None
    elif type(op) is Remove:
        key = op.id
    else:
        return None
    if type(key) is str and key.isascii() and key and not key.isspace():
        return key
    return None


def check_id(value: object) -> str:
    """A bare id (an add of a member without attributes, in ``add_members``), checked as a
    member's id is; raises ValidationError."""
    _check_id(value)
    return value  # type: ignore[return-value]


def _check_id(value: object) -> None:
    if not isinstance(value, str):
        raise ValidationError([Problem(f"an id must be a string, got {type(value).__name__}")])
    if not value or value.isspace():
        raise ValidationError([Problem("an id must not be empty or blank", id=value)])
    if not is_text(value):  # a lone surrogate; the message shows it escaped (repr)
        raise ValidationError([Problem("an id must be valid text", id=value)])


def validate_all(
    ops: Collection[object],
    prepare: Callable[[Operation], Operation] | None,
    *,
    bare_ids: bool = False,
    prepare_id: Callable[[str], Operation | str] | None = None,
) -> list[Operation | str]:
    """Every operation of a sized input checked (and prepared), or one ValidationError naming
    every bad one: a list is refused whole, before anything is sent. With ``bare_ids``, the
    items are Members (each read as an Add of it) and ``str`` ids (an add of a member without
    attributes, checked with ``prepare_id``)."""
    prepared: list[Operation | str] = []
    problems: list[Problem] = []
    for op in ops:
        try:
            if bare_ids and type(op) is str:
                if not (op.isascii() and op and not op.isspace()):
                    _check_id(op)
                prepared.append(prepare_id(op) if prepare_id is not None else op)
                continue
            checked = check_operation(Add(op) if bare_ids else op)  # type: ignore[arg-type]
            prepared.append(prepare(checked) if prepare is not None else checked)
        except ValidationError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ValidationError(problems)
    return prepared
