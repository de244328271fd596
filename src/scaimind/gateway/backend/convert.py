"""Conversion between the HTTP JSON shapes and the protocol messages.

proto → dict: enum values as names without their type prefix, RFC 3339 times (null when unset),
integers as JSON numbers, unset scalars present with their zero value.
dict → proto: the inverse, driven by the message descriptor, so schemas and protos cannot drift
silently (an unknown field raises).
"""

from __future__ import annotations

import functools
import keyword
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

M = TypeVar("M", bound=Message)

_TIMESTAMP = Timestamp.DESCRIPTOR.full_name
# Enums the HTTP API spells in lower case (data formats: "jsonl", "csv", ...).
_LOWERCASE_ENUMS = frozenset({"scaimind.v1.DataFormat"})


def _enum_prefix(enum: Any) -> str:
    # JOB_STATUS_UNSPECIFIED -> "JOB_STATUS_"
    return str(enum.values_by_number[0].name.removesuffix("UNSPECIFIED"))


def enum_name(enum: Any, number: int) -> str | None:
    """Short name of an enum value ("QUEUED"), None for UNSPECIFIED/unknown."""
    if number == 0 or number not in enum.values_by_number:
        return None
    name: str = enum.values_by_number[number].name.removeprefix(_enum_prefix(enum))
    return name.lower() if enum.full_name in _LOWERCASE_ENUMS else name


def enum_value(enum: Any, name: str) -> int:
    """Number of an enum value given its short or full name; ValueError if unknown."""
    upper = str(name).upper()
    full = upper if upper.startswith(_enum_prefix(enum)) else _enum_prefix(enum) + upper
    value = enum.values_by_name.get(full)
    if value is None or value.number == 0:
        raise ValueError(f"unknown {enum.name} value: {name!r}")
    return int(value.number)


def format_time(ts: Timestamp) -> str:
    """RFC 3339 UTC with milliseconds and a Z."""
    return _format_seconds(ts.seconds, ts.nanos)


# Listings repeat the same instants (created_at, checkpoints) on every poll.
@functools.lru_cache(maxsize=8192)
def _format_seconds(seconds: int, nanos: int) -> str:
    dt = Timestamp(seconds=seconds, nanos=nanos).ToDatetime(tzinfo=UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def finite(value: Any) -> Any:
    """Replace NaN/±inf (which JSON cannot carry) with None, recursively (keys become str)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def message_to_dict(msg: Message) -> Any:
    """Convert a message to the API's JSON shape."""
    return converter(msg.DESCRIPTOR)(msg)


# --- proto → dict, compiled once per message type ----------------------------------------------
# Walking the descriptor for every field of every message (what the first version did) cost more
# than the rest of a GET /jobs/{id}. Each message type is now compiled, on first use, into one
# function whose body is a single dict display reading each field by attribute (the way attrs
# and cattrs generate their converters): no call per field, and the decisions (enum names,
# presence, maps, repeats) are taken once per type.

Converter = Callable[[Any], Any]
_converters: dict[str, Converter] = {}


def converter(desc: Any) -> Converter:
    """The proto → dict function of a message type (compiled on first use)."""
    found = _converters.get(desc.full_name)
    if found is None:
        found = _converters[desc.full_name] = _compile(desc)
    return found


def _compile(desc: Any) -> Converter:
    if desc.full_name == _TIMESTAMP:
        return format_time
    namespace: dict[str, Any] = {}
    items = [
        f"{fd.name!r}: {_expression(fd, f'_f{i}', namespace)}" for i, fd in enumerate(desc.fields)
    ]
    source = "def convert(m):\n    return {" + ", ".join(items) + "}\n"
    # Only descriptor names go into the source: field names are identifiers (protoc's rule),
    # and every value is a name bound in `namespace`.
    exec(compile(source, f"<convert {desc.full_name}>", "exec"), namespace)
    convert: Converter = namespace["convert"]
    return convert


def _expression(fd: Any, key: str, namespace: dict[str, Any]) -> str:
    """The expression of field `fd` of message `m`; helpers it calls are bound under `key`."""
    name = fd.name
    plain = name.isidentifier() and not keyword.iskeyword(name)
    value = f"m.{name}" if plain else f"getattr(m, {name!r})"
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        convert_value = _value_converter(fd.message_type.fields_by_name["value"], key, namespace)
        if convert_value is None:
            return f"dict({value})"
        return f"{{k: {convert_value}(v) for k, v in {value}.items()}}"
    convert = _value_converter(fd, key, namespace)
    if fd.is_repeated:
        return f"list({value})" if convert is None else f"[{convert}(v) for v in {value}]"
    if fd.type == FieldDescriptor.TYPE_MESSAGE or fd.has_presence:
        present = f"{convert}({value})" if convert else value
        return f"({present} if m.HasField({name!r}) else None)"
    return value if convert is None else f"{convert}({value})"


def _value_converter(fd: Any, key: str, namespace: dict[str, Any]) -> str | None:
    """The name (bound in `namespace`) of what turns one value of `fd` into JSON; None when it
    is already its JSON value."""
    if fd.type == FieldDescriptor.TYPE_ENUM:
        namespace[key] = _enum_names(fd.enum_type).get
        return key
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        sub = fd.message_type

        # Resolved on first call (message types may refer to themselves), then bound directly.
        def first(value: Any) -> Any:
            namespace[key] = found = converter(sub)
            return found(value)

        namespace[key] = first
        return key
    return None


def _enum_names(enum: Any) -> dict[int, str | None]:
    return {number: enum_name(enum, number) for number in enum.values_by_number}


def _timestamp_from(value: Any) -> Timestamp:
    ts = Timestamp()
    if isinstance(value, datetime):
        ts.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    else:
        ts.FromJsonString(str(value))
    return ts


def _assign(msg: Message, fd: Any, value: Any) -> None:
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        target = getattr(msg, fd.name)
        value_fd = fd.message_type.fields_by_name["value"]
        for k, v in value.items():
            if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                dict_into(v, target[k])
            else:
                target[k] = v
    elif fd.is_repeated:
        target = getattr(msg, fd.name)
        for item in value:
            if fd.type == FieldDescriptor.TYPE_MESSAGE:
                dict_into(item, target.add())
            elif fd.type == FieldDescriptor.TYPE_ENUM:
                target.append(enum_value(fd.enum_type, item))
            else:
                target.append(item)
    elif fd.type == FieldDescriptor.TYPE_MESSAGE:
        if fd.message_type.full_name == _TIMESTAMP:
            getattr(msg, fd.name).CopyFrom(_timestamp_from(value))
        else:
            dict_into(value, getattr(msg, fd.name))
    elif fd.type == FieldDescriptor.TYPE_ENUM:
        setattr(msg, fd.name, enum_value(fd.enum_type, value))
    else:
        setattr(msg, fd.name, value)


def dict_into(data: Mapping[str, Any], msg: M) -> M:
    """Fill `msg` from an API-shaped dict; None values are skipped (left unset)."""
    fields: Any = msg.DESCRIPTOR.fields_by_name
    for key, value in data.items():
        if value is None:
            continue
        fd = fields.get(key)
        if fd is None:
            raise ValueError(f"{msg.DESCRIPTOR.name} has no field {key!r}")
        _assign(msg, fd, value)
    # Mark empty sub-messages as present ({} in the body means "set, all defaults").
    for key, value in data.items():
        fd = fields.get(key)
        if (
            isinstance(value, Mapping)
            and not value
            and fd is not None
            and fd.type == FieldDescriptor.TYPE_MESSAGE
            and not (fd.message_type.GetOptions().map_entry or fd.is_repeated)
        ):
            getattr(msg, key).SetInParent()
    return msg


def dict_to_message(data: Mapping[str, Any], cls: type[M]) -> M:
    """Build a new message of `cls` from an API-shaped dict."""
    return dict_into(data, cls())
