"""The `Tool` base class and the `@tool` decorator."""

import typing
from typing import Any, Callable, ClassVar, Dict, Optional

from .capabilities import Capabilities
from .schema import _doc, _hints

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")


class Tool:
    """A tool: typed input in, typed output out.

    Subclass it, set `name` (1-64 chars of [a-z0-9_-]), `description` (or a docstring),
    `version` and `capabilities`, and define `call(self, input: In) -> Out` with a dataclass
    or TypedDict as `In` (its JSON Schema is the tool's input schema; the host validates every
    input against it) and a JSON-serializable `Out`.

    One instance lives in the sandbox for the whole session. A tool that keeps in-memory state
    declares it as a class annotation `state: SomeDataclass` (created with `SomeDataclass()`):
    the host then snapshots it as JSON between steps and restores it on resume.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    version: ClassVar[str] = "0.1.0"
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self) -> None:
        state_type = state_type_of(type(self))
        if state_type is not None and "state" not in vars(self):
            self.state = state_type()

    def call(self, input: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define call(self, input)")


def input_type_of(cls: type) -> Any:
    hints = typing.get_type_hints(cls.call, include_extras=True)
    params = [p for p in hints if p != "return"]
    if not params:
        raise TypeError(f"{cls.__name__}.call needs a type hint on its input parameter")
    return hints[params[0]]


def output_type_of(cls: type) -> Optional[Any]:
    return typing.get_type_hints(cls.call, include_extras=True).get("return")


def state_type_of(cls: type) -> Optional[Any]:
    """The declared `state: T` annotation, if the tool keeps snapshotted state."""
    for klass in cls.__mro__:
        if klass is Tool:
            return None
        if "state" in getattr(klass, "__annotations__", {}):
            return _hints(klass)["state"]
    return None


def description_of(cls: type) -> str:
    return cls.description or _doc(cls) or ""


def check(cls: type) -> None:
    """Raises `TypeError` if `cls` is not a complete tool (checked at build time)."""
    name = getattr(cls, "name", "")
    if not (1 <= len(name) <= 64 and set(name) <= NAME_CHARS):
        raise TypeError(f"{cls.__name__}.name must be 1-64 chars of [a-z0-9_-], not {name!r}")
    if not description_of(cls):
        raise TypeError(f"{cls.__name__} needs a description (the `description` attribute or a docstring)")
    input_type_of(cls)


def tool(
    name: str,
    description: str = "",
    version: str = "0.1.0",
    capabilities: Capabilities = Capabilities(),
) -> Callable[[Callable[..., Any]], type]:
    """Makes a stateless tool of a typed function `f(input: In) -> Out`."""

    def wrap(function: Callable[..., Any]) -> type:
        def call(self, input):
            return function(input)

        call.__annotations__ = dict(typing.get_type_hints(function, include_extras=True))
        attrs: Dict[str, Any] = {
            "name": name,
            "description": description or _doc(function) or "",
            "version": version,
            "capabilities": capabilities,
            "call": call,
            "__module__": function.__module__,
            "__doc__": function.__doc__,
        }
        return type(function.__name__, (Tool,), attrs)

    return wrap
