"""JSON Schema (draft 2020-12) from type hints, and decoding JSON into those types.

Supported: `str`, `int`, `float`, `bool`, `None`, `Any`, `list[T]`, `tuple[T, ...]`,
`dict[str, T]`, `Optional[T]` and other unions, `Literal[...]`, `Enum`s, dataclasses and
`TypedDict`s (nested freely, not recursively). Field docs come from
`Annotated[T, "doc"]` or a dataclass `field(metadata={"doc": "..."})`; a class docstring
becomes the object's description.
"""

import dataclasses
import enum
import sys
import typing
from typing import Any, Dict, List, Literal, Union

from .errors import InvalidInput

DRAFT = "https://json-schema.org/draft/2020-12/schema"
_NONE = type(None)


def schema_for(tp: Any) -> Dict[str, Any]:
    """The top-level schema of `tp`, with `$schema` and a `title`."""
    schema = {"$schema": DRAFT}
    title = getattr(tp, "__name__", None)
    if title and (dataclasses.is_dataclass(tp) or _is_typeddict(tp)):
        schema["title"] = title
    schema.update(_schema(tp))
    return schema


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__total__")


def _doc(tp: Any) -> "str | None":
    doc = tp.__doc__
    if not doc or doc.startswith(tp.__name__ + "("):  # dataclass' generated signature
        return None
    return " ".join(doc.split())


def _split_annotated(tp: Any):
    if typing.get_origin(tp) is typing.Annotated:
        args = typing.get_args(tp)
        docs = [a for a in args[1:] if isinstance(a, str)]
        return args[0], (docs[0] if docs else None)
    return tp, None


def _hints(tp: Any) -> Dict[str, Any]:
    return typing.get_type_hints(tp, globalns=vars(sys.modules.get(tp.__module__, typing)), include_extras=True)


def _fields(tp: Any):
    """(name, type, doc, required) of a dataclass' or TypedDict's fields, in order."""
    hints = _hints(tp)
    if dataclasses.is_dataclass(tp):
        for f in dataclasses.fields(tp):
            inner, doc = _split_annotated(hints[f.name])
            doc = f.metadata.get("doc", doc)
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            yield f.name, inner, doc, required
    else:
        required_keys = getattr(tp, "__required_keys__", frozenset(hints) if tp.__total__ else frozenset())
        for name, hint in hints.items():
            inner, doc = _split_annotated(hint)
            origin = typing.get_origin(inner)
            if origin in (typing.Required, typing.NotRequired):
                inner = typing.get_args(inner)[0]
            yield name, inner, doc, name in required_keys


def _object_schema(tp: Any) -> Dict[str, Any]:
    properties, required = {}, []
    for name, inner, doc, is_required in _fields(tp):
        prop = _schema(inner)
        if doc:
            prop = {"description": doc, **prop}
        properties[name] = prop
        if is_required:
            required.append(name)
    schema: Dict[str, Any] = {"type": "object"}
    doc = _doc(tp)
    if doc:
        schema["description"] = doc
    schema["properties"] = properties
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    return schema


def _schema(tp: Any) -> Dict[str, Any]:
    tp, doc = _split_annotated(tp)
    schema = _schema_inner(tp)
    return {"description": doc, **schema} if doc else schema


_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", _NONE: "null", None: "null"}


def _schema_inner(tp: Any) -> Dict[str, Any]:
    if tp is Any:
        return {}
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    if tp in (dict, Dict):
        return {"type": "object"}
    if tp in (list, List):
        return {"type": "array"}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [m.value for m in tp]}
    if dataclasses.is_dataclass(tp) or _is_typeddict(tp):
        return _object_schema(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (list, List, tuple) and (origin is not tuple or (len(args) == 2 and args[1] is Ellipsis)):
        return {"type": "array", "items": _schema(args[0]) if args else {}}
    if origin in (dict, Dict):
        if args and args[0] is not str:
            raise TypeError(f"dict keys must be str for JSON, not {args[0]!r}")
        return {"type": "object", "additionalProperties": _schema(args[1]) if args else {}}
    if origin is Union or _is_union_type(tp):
        return {"anyOf": [_schema(a) for a in args]}
    raise TypeError(f"no JSON Schema for the type {tp!r}")


def _is_union_type(tp: Any) -> bool:
    union_type = getattr(__import__("types"), "UnionType", None)
    return union_type is not None and isinstance(tp, union_type)


# --- decoding -------------------------------------------------------------------------------


def decode(tp: Any, value: Any, path: str = "") -> Any:
    """`value` (parsed JSON) as an instance of `tp`; `InvalidInput` naming the field if not."""
    tp, _ = _split_annotated(tp)
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _mismatch(path, "a number", value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _mismatch(path, "an integer", value)
    if tp in (str, bool):
        if type(value) is tp:
            return value
        raise _mismatch(path, "a string" if tp is str else "a boolean", value)
    if tp in (_NONE, None):
        if value is None:
            return None
        raise _mismatch(path, "null", value)
    if tp in (list, List, dict, Dict):  # unparameterized: any JSON array / object
        if isinstance(value, list if tp in (list, List) else dict):
            return value
        raise _mismatch(path, "an array" if tp in (list, List) else "an object", value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise _error(path, f"expected one of {[m.value for m in tp]}, got {value!r}") from None
    if dataclasses.is_dataclass(tp) or _is_typeddict(tp):
        return _decode_object(tp, value, path)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise _error(path, f"expected one of {list(args)}, got {value!r}")
    if origin in (list, List, tuple):
        if not isinstance(value, list):
            raise _mismatch(path, "an array", value)
        items = [decode(args[0] if args else Any, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise _mismatch(path, "an object", value)
        return {k: decode(args[1] if args else Any, v, _join(path, k)) for k, v in value.items()}
    if origin is Union or _is_union_type(tp):
        return _decode_union(args, value, path)
    raise TypeError(f"cannot decode into the type {tp!r}")


def _tag_matches(arm: Any, value: Any) -> bool:
    """Whether `value` carries every `Literal` field of the object type `arm` (its tag)."""
    if not isinstance(value, dict) or not (dataclasses.is_dataclass(arm) or _is_typeddict(arm)):
        return False
    tags = [(n, typing.get_args(t)) for n, t, _, _ in _fields(arm) if typing.get_origin(t) is Literal]
    return bool(tags) and all(value.get(n) in allowed for n, allowed in tags)


def _decode_union(args, value, path):
    tagged = [arm for arm in args if _tag_matches(arm, value)]
    if len(tagged) == 1:  # a tagged union: errors name the field inside the chosen arm
        return decode(tagged[0], value, path)
    errors = []
    for arm in args:
        try:
            return decode(arm, value, path)
        except InvalidInput as e:
            errors.append(e.message)
    raise _error(path, "matches no alternative: " + "; ".join(errors))


def _decode_object(tp: Any, value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise _mismatch(path, f"an object ({tp.__name__})", value)
    fields = list(_fields(tp))
    known = {name for name, *_ in fields}
    for key in value:
        if key not in known:
            raise _error(_join(path, key), "unknown field")
    decoded = {}
    for name, inner, _, required in fields:
        if name in value:
            decoded[name] = decode(inner, value[name], _join(path, name))
        elif required:
            raise _error(_join(path, name), "missing field")
    return tp(**decoded)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _error(path: str, message: str) -> InvalidInput:
    return InvalidInput(f"at `{path}`: {message}" if path else message)


def _mismatch(path: str, expected: str, value: Any) -> InvalidInput:
    got = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
           dict: "an object", _NONE: "null"}.get(type(value), type(value).__name__)
    return _error(path, f"expected {expected}, got {got}")


# --- encoding -------------------------------------------------------------------------------


def encode(value: Any) -> Any:
    """`value` as plain JSON data: dataclasses to objects, enums to their values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return [encode(v) for v in sorted(value)]  # sorted: snapshots stay deterministic
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value
