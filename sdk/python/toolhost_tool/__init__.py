"""The toolhost SDK for Python tools. See README, "Writing a tool in Python".

    from dataclasses import dataclass
    from toolhost_tool import Tool, InvalidInput

    @dataclass
    class Input:
        text: str

    class Shout(Tool):
        name = "shout"
        description = "Upper-cases text."

        def call(self, input: Input) -> dict:
            return {"text": input.text.upper()}
"""

from . import http, log, model
from .capabilities import Access, Capabilities
from .errors import (
    Denied, Failed, HttpDenied, HttpError, InvalidInput, ModelDenied, ModelError, StateDenied, StateError, ToolError,
)
from .schema import decode, encode, schema_for
from .state import Namespace
from .tooldef import Tool, tool

__all__ = [
    "Access", "Capabilities", "Denied", "Failed", "HttpDenied", "HttpError", "InvalidInput", "http", "ModelDenied",
    "ModelError", "Namespace", "StateDenied", "StateError", "Tool", "ToolError", "decode", "encode", "log",
    "model", "schema_for", "tool",
]
