"""Glue between a user's `Tool` and the component's exports (`toolhost:tool/tool` and, for
tools that declare `state`, `toolhost:tool/stateful`). The build's generated entry module
calls `exports(module, world)`; componentize-py runs it at build time, so a tool that does not
fit its world fails the build, not the first call.
"""

import json
from types import ModuleType
from typing import Any, Optional, Tuple

from . import tooldef as tool_mod
from .errors import InvalidInput, ToolError
from .schema import decode, encode, schema_for

PLAIN, STATEFUL = "plain-tool", "stateful-tool"


def find_tool(module: ModuleType) -> type:
    """The one `Tool` subclass defined in `module` (or named by its `TOOL` attribute)."""
    named = getattr(module, "TOOL", None)
    if named is not None:
        return named
    found = [
        v for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, tool_mod.Tool) and v is not tool_mod.Tool
        and v.__module__ == module.__name__
    ]
    if len(found) != 1:
        names = ", ".join(t.__name__ for t in found) or "none"
        raise TypeError(f"{module.__name__} must define exactly one Tool (or set TOOL = ...); found {names}")
    return found[0]


def world_of(cls: type) -> str:
    return STATEFUL if tool_mod.state_type_of(cls) is not None else PLAIN


class _Session:
    """The session's one tool instance, created on first use."""

    cls: type
    instance: Optional[Any] = None

    @classmethod
    def get(cls) -> Any:
        if cls.instance is None:
            cls.instance = cls.cls()
        return cls.instance


def describe(cls: type):
    from wit_world.imports import types

    caps = cls.capabilities
    access = {"read": types.Access.READ, "read-write": types.Access.READ_WRITE}
    output = tool_mod.output_type_of(cls)
    return types.Descriptor(
        name=cls.name,
        description=tool_mod.description_of(cls),
        version=cls.version,
        input_schema=json.dumps(schema_for(tool_mod.input_type_of(cls))),
        output_schema=json.dumps(schema_for(output)) if output is not None else None,
        capabilities=types.Capabilities(
            state=[types.StateRequest(ns, access[a.value]) for ns, a in caps.state],
            models=list(caps.models),
            filesystem=[types.FilesystemRequest(p, access[a.value]) for p, a in caps.filesystem],
            network=list(caps.network),
            env=list(caps.env),
        ),
    )


def call(cls: type, input_json: str) -> str:
    from componentize_py_types import Err
    from wit_world.imports import types

    try:
        try:
            raw = json.loads(input_json)
        except ValueError as e:
            raise InvalidInput(f"input is not JSON: {e}") from None
        parsed = decode(tool_mod.input_type_of(cls), raw)
        output = _Session.get().call(parsed)
        return json.dumps(encode(output), separators=(",", ":"))
    except ToolError as e:
        case = {
            "invalid-input": types.ToolError_InvalidInput,
            "denied": types.ToolError_Denied,
        }.get(e.kind, types.ToolError_Failed)
        raise Err(case(e.message)) from None


def snapshot(cls: type) -> bytes:
    return json.dumps(encode(_Session.get().state), separators=(",", ":")).encode()


def restore(cls: type, data: bytes) -> None:
    from componentize_py_types import Err

    try:
        state = decode(tool_mod.state_type_of(cls), json.loads(data))
    except Exception as e:
        raise Err(f"snapshot does not decode: {e}") from None
    _Session.get().state = state


def exports(module: ModuleType, world: str) -> Tuple[type, Optional[type]]:
    """The `Tool` export class and, for the stateful world, the `Stateful` one."""
    cls = find_tool(module)
    tool_mod.check(cls)
    if world_of(cls) != world:
        raise TypeError(f"{cls.__name__} fits the `{world_of(cls)}` world, but is built for `{world}`")
    _Session.cls = cls
    # Build the schemas now (at build time) so a type without a schema fails the build.
    schema_for(tool_mod.input_type_of(cls))
    if tool_mod.output_type_of(cls) is not None:
        schema_for(tool_mod.output_type_of(cls))

    class ToolExport:
        def describe(self):
            return describe(cls)

        def call(self, input: str) -> str:
            return call(cls, input)

    if world == PLAIN:
        return ToolExport, None

    class StatefulExport:
        def snapshot(self) -> bytes:
            return snapshot(cls)

        def restore(self, snapshot_bytes: bytes) -> None:
            restore(cls, snapshot_bytes)

    return ToolExport, StatefulExport
