"""Hypothesis strategies for any protobuf message, built from its descriptor (fuzz tests).

``messages(cls)`` draws whole messages of ``cls`` from nothing but ``cls.DESCRIPTOR``: every
scalar type at its edges (0, the type's extremes, NaN and infinities for floats), strings with
control characters, NUL, astral-plane characters and, now and then, a huge one; bytes; enums
including values the contract does not name (proto3 enums are open, so these reach the server);
repeated fields, maps, nested messages to a bounded depth, one member of each oneof, and proto3
``optional`` fields either absent or set. A new field or message in ``protos/`` is generated
without a change here.

Garbage is refused at a service's first check, so ``mutations(valid)`` starts from a valid
request and replaces a few of its fields (nested ones too) with generated values, clears some,
and leaves the rest valid: those inputs get past the first validation and reach the code behind
it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

__all__ = ["Limits", "field_values", "messages", "mutations", "with_bounds"]

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT32 = (0, 2**32 - 1)
_UINT64 = (0, 2**64 - 1)

_INT_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: _INT32,
    FieldDescriptor.CPPTYPE_INT64: _INT64,
    FieldDescriptor.CPPTYPE_UINT32: _UINT32,
    FieldDescriptor.CPPTYPE_UINT64: _UINT64,
}


class Limits:
    """Bounds on what one generated message may hold (its size and the work it can cause)."""

    def __init__(
        self,
        *,
        max_depth: int = 4,
        max_repeated: int = 3,
        max_text: int = 40,
        huge_text: int = 200_000,
        max_bytes: int = 64,
        huge_bytes: int = 200_000,
    ) -> None:
        self.max_depth = max_depth
        self.max_repeated = max_repeated
        self.max_text = max_text
        self.huge_text = huge_text
        self.max_bytes = max_bytes
        self.huge_bytes = huge_bytes


DEFAULT_LIMITS = Limits()


def _integers(lo: int, hi: int) -> st.SearchStrategy[int]:
    # The edges first: they are where overflow and off-by-one bugs live.
    edges = sorted({lo, hi, 0, 1, min(hi, 2**31 - 1), max(lo, -1), min(hi, 2**16), 2**8})
    edges = [e for e in edges if lo <= e <= hi]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi), st.integers(0, 100))


def _text(limits: Limits) -> st.SearchStrategy[str]:
    # Any code point that UTF-8 can carry (not a lone surrogate: protobuf refuses to serialize
    # one, so it never reaches a server), control characters and NUL included.
    chars = st.characters(exclude_categories=["Cs"])
    return st.one_of(
        st.text(chars, max_size=limits.max_text),
        st.sampled_from(["", " ", "\x00", "\n\r\t", "\u202e", "😀" * 3, "a\x00b", "..", "%s%n"]),
        st.builds(lambda c, n: c * n, st.sampled_from("a\x00é😀 "), st.just(limits.huge_text)),
    )


def _bytes(limits: Limits) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=limits.max_bytes),
        st.builds(
            lambda b, n: b * n,
            st.sampled_from([b"\x00", b"\xff", b"RIFF"]),
            st.just(limits.huge_bytes // 4),
        ),
    )


def _floats(single: bool) -> st.SearchStrategy[float]:
    special = [0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e-45, 3.4e38, 1e300]
    return st.one_of(
        st.sampled_from(special if not single else special[:-1]),
        st.floats(width=32 if single else 64, allow_nan=True, allow_infinity=True),
        st.floats(0, 2, width=32),
    )


def _scalar(field: FieldDescriptor, limits: Limits) -> st.SearchStrategy[Any]:
    cpp = field.cpp_type
    if cpp in _INT_RANGES:
        return _integers(*_INT_RANGES[cpp])
    if cpp == FieldDescriptor.CPPTYPE_DOUBLE:
        return _floats(single=False)
    if cpp == FieldDescriptor.CPPTYPE_FLOAT:
        return _floats(single=True)
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return st.booleans()
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        named = [v.number for v in field.enum_type.values]
        # Unknown values too: proto3 enums are open, a client may send any int32.
        return st.one_of(st.sampled_from(named), _integers(*_INT32))
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        return _bytes(limits) if field.type == FieldDescriptor.TYPE_BYTES else _text(limits)
    raise TypeError(f"no strategy for {field.full_name} (cpp type {cpp})")


def _is_map(field: FieldDescriptor) -> bool:
    return (
        field.is_repeated
        and field.message_type is not None
        and field.message_type.GetOptions().map_entry
    )


def field_values(field: FieldDescriptor, limits: Limits, depth: int) -> st.SearchStrategy[Any]:
    """One value of ``field`` as :func:`_assign` sets it: a scalar, a message, a list of either,
    or a dict for a map."""
    if _is_map(field):
        key, value = (
            field.message_type.fields_by_name["key"],
            field.message_type.fields_by_name["value"],
        )
        return st.dictionaries(
            _scalar(key, limits), _single(value, limits, depth), max_size=limits.max_repeated
        )
    single = _single(field, limits, depth)
    if field.is_repeated:
        return st.lists(single, max_size=limits.max_repeated)
    return single


def _single(field: FieldDescriptor, limits: Limits, depth: int) -> st.SearchStrategy[Any]:
    if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        return _message(field.message_type, limits, depth + 1)
    return _scalar(field, limits)


def _assign(message: Message, field: FieldDescriptor, value: Any) -> None:
    name = field.name
    if _is_map(field):
        target = getattr(message, name)
        target.clear()
        for k, v in value.items():
            if isinstance(v, Message):
                target[k].CopyFrom(v)
            else:
                target[k] = v
    elif field.is_repeated:
        target = getattr(message, name)
        del target[:]
        if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            target.extend(value)
        else:
            target.extend(value)
    elif field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        getattr(message, name).CopyFrom(value)
    else:
        setattr(message, name, value)


def _groups(descriptor: Descriptor) -> list[list[FieldDescriptor]]:
    """The fields to choose among: each plain field alone, each real oneof's members together
    (at most one of them is set). A proto3 ``optional`` is a synthetic oneof of one field: set
    or absent, as any field."""
    groups: list[list[FieldDescriptor]] = []
    seen: set[str] = set()
    for field in descriptor.fields:
        oneof = field.containing_oneof
        if oneof is not None and len(oneof.fields) > 1:
            if oneof.name not in seen:
                seen.add(oneof.name)
                groups.append(list(oneof.fields))
        else:
            groups.append([field])
    return groups


def _message(descriptor: Descriptor, limits: Limits, depth: int) -> st.SearchStrategy[Message]:
    cls = _class_of(descriptor)
    if depth > limits.max_depth:
        return st.just(cls())

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        for group in _groups(descriptor):
            chosen = draw(st.sampled_from([None, *group]))
            if chosen is None:
                continue
            _assign(message, chosen, draw(field_values(chosen, limits, depth)))
        return message

    return build()


def _class_of(descriptor: Descriptor) -> type[Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


def messages(cls: type[Message], limits: Limits = DEFAULT_LIMITS) -> st.SearchStrategy[Message]:
    """Any message of ``cls``: each field (one member per oneof) set or not, to a bounded
    depth; values as the module docstring says."""
    return _message(cls.DESCRIPTOR, limits, 0).map(lambda m: _as(cls, m))


def _as(cls: type[Message], message: Message) -> Message:
    # GetMessageClass returns the generated class for a generated descriptor; this keeps the
    # type the caller named even where a pool gives another class for it.
    if type(message) is cls:
        return message
    out = cls()
    out.MergeFromString(message.SerializeToString())
    return out


def _field_paths(
    descriptor: Descriptor, depth: int, limits: Limits
) -> list[tuple[FieldDescriptor, ...]]:
    """Every (nested) singular field path of ``descriptor``, to a bounded depth."""
    paths: list[tuple[FieldDescriptor, ...]] = []
    for field in descriptor.fields:
        paths.append((field,))
        if (
            field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE
            and not field.is_repeated
            and depth < limits.max_depth
        ):
            paths += [
                (field, *rest) for rest in _field_paths(field.message_type, depth + 1, limits)
            ]
    return paths


def mutations(
    valid: Message, limits: Limits = DEFAULT_LIMITS, max_changes: int = 3
) -> st.SearchStrategy[Message]:
    """``valid`` with one to ``max_changes`` fields (nested ones too) replaced by generated
    values or cleared; the rest stays as given."""
    paths = _field_paths(valid.DESCRIPTOR, 0, limits)
    if not paths:  # a message without fields (ListModelsRequest) has nothing to change
        return st.just(valid)

    @st.composite
    def mutate(draw: st.DrawFn) -> Message:
        message = type(valid)()
        message.CopyFrom(valid)
        for path in draw(st.lists(st.sampled_from(paths), min_size=1, max_size=max_changes)):
            parent = message
            for step in path[:-1]:
                parent = getattr(parent, step.name)
            field = path[-1]
            if draw(st.integers(0, 4)) == 0:
                parent.ClearField(field.name)
            else:
                _assign(parent, field, draw(field_values(field, limits, len(path))))
        return message

    return mutate()


def with_bounds(
    strategy: st.SearchStrategy[Message], bound: Callable[[Message], None]
) -> st.SearchStrategy[Message]:
    """``strategy``'s messages, copied and passed through ``bound``, which edits the copy in
    place (caps the work a generated request may cause) and returns nothing."""

    def apply(message: Message) -> Message:
        out = type(message)()
        out.CopyFrom(message)  # a shared message (st.just) is never edited
        bound(out)
        return out

    return strategy.map(apply)
