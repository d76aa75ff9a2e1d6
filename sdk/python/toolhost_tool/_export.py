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
from .schema import decoder, encode, schema_for

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
    from wit_world.imports import toolhost_tool_types as types

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


_COMPACT = json.JSONEncoder(separators=(",", ":"))


class _Calls:
    """What every call needs, looked up once (at build time: `exports` runs then)."""

    def __init__(self, cls: type):
        from componentize_py_types import Err
        from wit_world.imports import toolhost_tool_types as types

        self.err = Err
        self.cases = {"invalid-input": types.ToolError_InvalidInput, "denied": types.ToolError_Denied}
        self.failed = types.ToolError_Failed
        self.decode_input = decoder(tool_mod.input_type_of(cls))
        state_type = tool_mod.state_type_of(cls)
        self.decode_state = decoder(state_type) if state_type is not None else None

    def call(self, input_json: str) -> str:
        try:
            try:
                raw = json.loads(input_json)
            except ValueError as e:
                raise InvalidInput(f"input is not JSON: {e}") from None
            output = _Session.get().call(self.decode_input(raw, ""))
            return _COMPACT.encode(encode(output))
        except ToolError as e:
            raise self.err(self.cases.get(e.kind, self.failed)(e.message)) from None

    def snapshot(self) -> bytes:
        return _COMPACT.encode(encode(_Session.get().state)).encode()

    def restore(self, data: bytes) -> None:
        try:
            state = self.decode_state(json.loads(data), "")
        except Exception as e:
            raise self.err(f"snapshot does not decode: {e}") from None
        _Session.get().state = state


def exports(module: ModuleType, world: str) -> Tuple[type, Optional[type]]:
    """The `Tool` export class and, for the stateful world, the `Stateful` one."""
    cls = find_tool(module)
    tool_mod.check(cls)
    if world_of(cls) != world:
        raise TypeError(f"{cls.__name__} fits the `{world_of(cls)}` world, but is built for `{world}`")
    _Session.cls = cls
    # Build the schemas and decoders now (at build time) so a type without a schema fails the
    # build, and calls find them ready.
    schema_for(tool_mod.input_type_of(cls))
    if tool_mod.output_type_of(cls) is not None:
        schema_for(tool_mod.output_type_of(cls))

    calls = _Calls(cls)

    class ToolExport:
        def describe(self):
            return describe(cls)

        def call(self, input: str) -> str:
            return calls.call(input)

    if world == PLAIN:
        return ToolExport, None

    class StatefulExport:
        def snapshot(self) -> bytes:
            return calls.snapshot()

        def restore(self, snapshot_bytes: bytes) -> None:
            calls.restore(snapshot_bytes)

    return ToolExport, StatefulExport
