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
from typing import Any, Callable, Dict, List, Literal, Union

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
#
# A type's decoder is compiled once (type hints resolved, fields listed, tags found) and cached:
# `exports` compiles the tool's input and state types at build time, so a call only runs them.
# Containers hand their items the container's own path and, only if an item fails, decode it
# again with its full path for the error: building `rows[4711][2]` for every item of a large
# snapshot cost more than decoding it. Decoding is pure, so the second pass fails the same way.


def decode(tp: Any, value: Any, path: str = "") -> Any:
    """`value` (parsed JSON) as an instance of `tp`; `InvalidInput` naming the field if not."""
    return decoder(tp)(value, path)


Decoder = Callable[[Any, str], Any]
_DECODERS: Dict[Any, Decoder] = {}


def decoder(tp: Any) -> Decoder:
    """The compiled decoder of `tp`: `decoder(tp)(value, path)` is `decode(tp, value, path)`."""
    try:
        return _DECODERS[tp]
    except KeyError:
        pass
    except TypeError:  # an unhashable hint: compiled each time
        return _compile(tp)
    compiled = _compile(tp)
    _DECODERS[tp] = compiled
    return compiled


def _compile(tp: Any) -> Decoder:
    tp, _ = _split_annotated(tp)
    if tp is Any:
        return lambda value, path: value
    if tp is float:
        return _decode_float
    if tp is int:
        return _decode_int
    if tp is str or tp is bool:
        expected = "a string" if tp is str else "a boolean"

        def scalar(value: Any, path: str) -> Any:
            if type(value) is tp:
                return value
            raise _mismatch(path, expected, value)

        return scalar
    if tp in (_NONE, None):
        return _decode_null
    if tp in (list, List, dict, Dict):  # unparameterized: any JSON array / object
        kind = list if tp in (list, List) else dict
        expected = "an array" if kind is list else "an object"

        def untyped(value: Any, path: str) -> Any:
            if isinstance(value, kind):
                return value
            raise _mismatch(path, expected, value)

        return untyped
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_decoder(tp)
    if dataclasses.is_dataclass(tp) or _is_typeddict(tp):
        return _object_decoder(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return _literal_decoder(args)
    if origin in (list, List, tuple):
        return _array_decoder(decoder(args[0] if args else Any), origin is tuple)
    if origin in (dict, Dict):
        return _map_decoder(decoder(args[1] if args else Any))
    if origin is Union or _is_union_type(tp):
        return _union_decoder(args)
    raise TypeError(f"cannot decode into the type {tp!r}")


def _decode_float(value: Any, path: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise _mismatch(path, "a number", value)


def _decode_int(value: Any, path: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _mismatch(path, "an integer", value)


def _decode_null(value: Any, path: str) -> None:
    if value is None:
        return None
    raise _mismatch(path, "null", value)


def _enum_decoder(tp: Any) -> Decoder:
    def decode_enum(value: Any, path: str) -> Any:
        try:
            return tp(value)
        except ValueError:
            raise _error(path, f"expected one of {[m.value for m in tp]}, got {value!r}") from None

    return decode_enum


def _literal_decoder(args: tuple) -> Decoder:
    types = {type(a) for a in args}

    def literal(value: Any, path: str) -> Any:
        if value in args and type(value) in types:
            return value
        raise _error(path, f"expected one of {list(args)}, got {value!r}")

    return literal


def _array_decoder(item: Decoder, as_tuple: bool) -> Decoder:
    def array(value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise _mismatch(path, "an array", value)
        try:
            items = [item(v, path) for v in value]
        except InvalidInput:
            items = [item(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if as_tuple else items

    return array


def _map_decoder(item: Decoder) -> Decoder:
    def mapping(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise _mismatch(path, "an object", value)
        try:
            return {k: item(v, path) for k, v in value.items()}
        except InvalidInput:
            return {k: item(v, _join(path, k)) for k, v in value.items()}

    return mapping


def _tags(arm: Any) -> "list | None":
    """The `Literal` fields of the object type `arm` (its tag) as (name, allowed values)."""
    if not (dataclasses.is_dataclass(arm) or _is_typeddict(arm)):
        return None
    tags = [(n, typing.get_args(t)) for n, t, _, _ in _fields(arm) if typing.get_origin(t) is Literal]
    return tags or None


def _union_decoder(args: tuple) -> Decoder:
    arms = [(decoder(arm), _tags(arm)) for arm in args]
    tagged_arms = [(arm, tags) for arm, tags in arms if tags]

    def union(value: Any, path: str) -> Any:
        if tagged_arms and isinstance(value, dict):
            tagged = [arm for arm, tags in tagged_arms if all(value.get(n) in allowed for n, allowed in tags)]
            if len(tagged) == 1:  # a tagged union: errors name the field inside the chosen arm
                return tagged[0](value, path)
        errors = []
        for arm, _ in arms:
            try:
                return arm(value, path)
            except InvalidInput as e:
                errors.append(e.message)
        raise _error(path, "matches no alternative: " + "; ".join(errors))

    return union


def _object_decoder(tp: Any) -> Decoder:
    fields = [(name, decoder(inner), required) for name, inner, _, required in _fields(tp)]
    known = frozenset(name for name, _, _ in fields)
    expected = f"an object ({tp.__name__})"

    def decode_object(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise _mismatch(path, expected, value)
        for key in value:
            if key not in known:
                raise _error(_join(path, key), "unknown field")
        decoded = {}
        for name, decode_field, required in fields:
            if name in value:
                try:
                    decoded[name] = decode_field(value[name], path)
                except InvalidInput:
                    decoded[name] = decode_field(value[name], _join(path, name))
            elif required:
                raise _error(_join(path, name), "missing field")
        return tp(**decoded)

    return decode_object


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _error(path: str, message: str) -> InvalidInput:
    return InvalidInput(f"at `{path}`: {message}" if path else message)


def _mismatch(path: str, expected: str, value: Any) -> InvalidInput:
    got = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
           dict: "an object", _NONE: "null"}.get(type(value), type(value).__name__)
    return _error(path, f"expected {expected}, got {got}")


# --- encoding -------------------------------------------------------------------------------


_PLAIN = frozenset({str, int, float, bool, _NONE})
_FIELD_NAMES: Dict[type, tuple] = {}


def encode(value: Any) -> Any:
    """`value` as plain JSON data: dataclasses to objects, enums to their values."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is list or kind is tuple:
        return [v if type(v) in _PLAIN else encode(v) for v in value]
    if kind is dict:
        return {k if type(k) is str else str(k): v if type(v) in _PLAIN else encode(v) for k, v in value.items()}
    names = _FIELD_NAMES.get(kind)
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELD_NAMES[kind] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        return {name: encode(getattr(value, name)) for name in names}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return [encode(v) for v in sorted(value)]  # sorted: snapshots stay deterministic
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value
