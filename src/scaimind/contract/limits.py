"""Size caps and character rules of every request, in one place for both sides.

The gateway's pydantic schemas read these numbers (a 422 naming the field), and the coordinator
enforces the same ones on every RPC with `first_violation` (an INVALID_ARGUMENT naming the
field), because it is also called directly over gRPC. The HTTP body limit comes first of all:
a request larger than `SCAIMIND_MAX_BODY_BYTES` is refused before it is read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # settings and the CLI import this module; protobuf is not needed for them
    from google.protobuf.message import Message

DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024

# Characters of one string.
ID_CHARS: Final = 128  # job, node, evaluation and checkpoint ids, queue names
NAME_CHARS: Final = 256  # job, model and benchmark names
MODEL_ID_CHARS: Final = 512  # base model ids ("org/name" on a hub, or a URI)
REASON_CHARS: Final = 1024  # cancel and drain reasons
PATH_CHARS: Final = 4096  # paths and URIs
VALUE_CHARS: Final = 4096  # any other string, and every map value unless named below
TEMPLATE_CHARS: Final = 65536  # preprocess.chat_template
KEY_CHARS: Final = 256  # map keys unless named below
LABEL_KEY_CHARS: Final = 63
LABEL_VALUE_CHARS: Final = 256
PAGE_TOKEN_CHARS: Final = 1024

# Entries of one map or list.
LABELS: Final = 64  # labels and label filters
ENVIRONMENT: Final = 64
HYPERPARAMETERS: Final = 256
OPTIONS: Final = 64  # every other string map: model_kwargs, framework configs, field_mapping, ...
SOURCES: Final = 256
COLUMNS: Final = 256
BENCHMARKS: Final = 32
NODE_AFFINITY: Final = 32
NODE_SELECTOR: Final = 32
STATUS_FILTERS: Final = 32
LIST_ITEMS: Final = 256  # any other list


@dataclass(frozen=True, slots=True)
class Cap:
    """Caps of one field: each string's length, entries of a map or list, map key length."""

    chars: int = VALUE_CHARS
    items: int | None = None
    key_chars: int = KEY_CHARS
    # Line breaks and tabs are allowed only in free text; other control characters nowhere.
    multiline: bool = False


_LABELS = Cap(chars=LABEL_VALUE_CHARS, items=LABELS, key_chars=LABEL_KEY_CHARS)
_ID = Cap(chars=ID_CHARS)
_PATH = Cap(chars=PATH_CHARS)

# "Message.field" (messages of scaimind.v1) -> caps; fields not listed get the defaults below.
FIELD_CAPS: Final[Mapping[str, Cap]] = {
    "SubmitJobRequest.name": Cap(chars=NAME_CHARS),
    "SubmitJobRequest.labels": _LABELS,
    "BaseModel.model_id": Cap(chars=MODEL_ID_CHARS),
    "TrainingConfig.hyperparameters": Cap(items=HYPERPARAMETERS),
    # Values may be multi-line (a certificate, a small config file).
    "TrainingConfig.environment": Cap(items=ENVIRONMENT, multiline=True),
    "TrainingConfig.resume_from_checkpoint": _PATH,
    "FrameworkConfig.custom_script_path": _PATH,
    "DataConfig.sources": Cap(items=SOURCES),
    "DataSource.path": _PATH,
    "DataSource.columns": Cap(chars=KEY_CHARS, items=COLUMNS),
    "PreprocessConfig.chat_template": Cap(chars=TEMPLATE_CHARS, multiline=True),
    "ResourceConfig.node_selector": Cap(
        chars=LABEL_VALUE_CHARS, items=NODE_SELECTOR, key_chars=LABEL_KEY_CHARS
    ),
    "OutputConfig.output_path": _PATH,
    "OutputConfig.model_name": Cap(chars=NAME_CHARS),
    "SchedulingConfig.queue_name": _ID,
    "SchedulingConfig.node_affinity": Cap(chars=ID_CHARS, items=NODE_AFFINITY),
    "ListJobsRequest.status_filter": Cap(items=STATUS_FILTERS),
    "ListJobsRequest.label_filter": _LABELS,
    "ListJobsRequest.page_token": Cap(chars=PAGE_TOKEN_CHARS),
    "ListJobsRequest.order_by": _ID,
    "CancelJobRequest.reason": Cap(chars=REASON_CHARS, multiline=True),
    "ResumeJobRequest.checkpoint_id": _ID,
    "RetryJobRequest.checkpoint_id": _ID,
    "BenchmarkSpec.name": Cap(chars=NAME_CHARS),
    "BenchmarkSpec.dataset": _PATH,
    "SubmitEvaluationRequest.model_uri": _PATH,
    "SubmitEvaluationRequest.checkpoint_id": _ID,
    "SubmitEvaluationRequest.benchmarks": Cap(items=BENCHMARKS),
    "ListEvaluationsRequest.page_token": Cap(chars=PAGE_TOKEN_CHARS),
    "ValidateDataRequest.sources": Cap(items=SOURCES),
    "ListNodesRequest.status_filter": _ID,
    "ListNodesRequest.page_token": Cap(chars=PAGE_TOKEN_CHARS),
    "DrainNodeRequest.reason": Cap(chars=REASON_CHARS, multiline=True),
    "GetQueueStatusRequest.queue_name": _ID,
}
# Every field named like these is an id.
_ID_FIELDS: Final = frozenset({"job_id", "node_id", "evaluation_id", "checkpoint_id"})
_DEFAULT_MAP = Cap(items=OPTIONS)
_DEFAULT_LIST = Cap(items=LIST_ITEMS)
_DEFAULT = Cap()

_LINE_BREAKS: Final = frozenset("\t\n\r")


def text_problem(value: str, *, multiline: bool = False) -> str | None:
    """Why `value` is not acceptable text (lone surrogates, control characters), or None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode (lone surrogate U+{ord(value[exc.start]):04X})"
    for ch in value:
        code = ord(ch)
        # C0, DEL and C1 (U+0080..U+009F, e.g. NEL, which some tools treat as a line break).
        if code < 0x20 or 0x7F <= code <= 0x9F:
            if multiline and ch in _LINE_BREAKS:
                continue
            return f"must not contain control characters (U+{code:04X})"
    return None


def cap_of(message_name: str, field_name: str, *, is_map: bool, is_list: bool) -> Cap:
    """The caps of one field of a scaimind.v1 message."""
    cap = FIELD_CAPS.get(f"{message_name}.{field_name}")
    if cap is not None:
        return cap
    if field_name in _ID_FIELDS:
        return _ID
    if is_map:
        return _DEFAULT_MAP
    if is_list:
        return _DEFAULT_LIST
    return _DEFAULT


@dataclass(frozen=True, slots=True)
class Violation:
    """One field over its caps: the dotted field path and what is wrong."""

    field: str
    message: str


def _string_problem(value: str, cap: Cap, *, key: bool = False) -> str | None:
    limit = cap.key_chars if key else cap.chars
    if len(value) > limit:
        return f"at most {limit} characters (got {len(value)})"
    # Map keys are names: one line, whatever their values may hold.
    return text_problem(value, multiline=cap.multiline and not key)


def violations(msg: Message, prefix: str = "") -> Iterator[Violation]:
    """Every cap `msg` breaks, walking set fields depth-first in field order."""
    from google.protobuf.descriptor import FieldDescriptor

    desc: Any = msg.DESCRIPTOR
    fd: Any
    for fd, value in msg.ListFields():
        path = f"{prefix}{fd.name}"
        is_map = fd.message_type is not None and fd.message_type.GetOptions().map_entry
        cap = cap_of(desc.name, fd.name, is_map=is_map, is_list=fd.is_repeated and not is_map)
        if fd.is_repeated and cap.items is not None and len(value) > cap.items:
            yield Violation(path, f"at most {cap.items} entries (got {len(value)})")
            continue
        if is_map:
            value_fd = fd.message_type.fields_by_name["value"]
            for key, item in value.items():
                problem = _string_problem(key, cap, key=True)
                if problem is None and value_fd.type == FieldDescriptor.TYPE_STRING:
                    problem = _string_problem(item, cap)
                if problem is not None:
                    yield Violation(f"{path}[{key[:64]!r}]", problem)
                elif value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                    yield from violations(item, f"{path}[{key[:64]!r}].")
        elif fd.is_repeated:
            for i, item in enumerate(value):
                if fd.type == FieldDescriptor.TYPE_STRING:
                    problem = _string_problem(item, cap)
                    if problem is not None:
                        yield Violation(f"{path}[{i}]", problem)
                elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                    yield from violations(item, f"{path}[{i}].")
        elif fd.type == FieldDescriptor.TYPE_STRING:
            problem = _string_problem(value, cap)
            if problem is not None:
                yield Violation(path, problem)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            yield from violations(value, f"{path}.")


def first_violation(msg: Message) -> Violation | None:
    """The first cap `msg` breaks, or None."""
    return next(violations(msg), None)
