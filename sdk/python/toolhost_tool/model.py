"""Language-model calls through the host, which holds the keys, enforces the grant and budgets,
and journals each response so a resumed session never repeats a call.

    reply = model.complete("default", "Summarize: ...")
    summary, response = model.structured("default", Summary, [model.user("Summarize: ...")])
"""

import json
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from .errors import ModelDenied, ModelError


@dataclass
class Message:
    role: str  # "system" | "user" | "assistant" | "tool"
    content: str
    tool_call_id: Optional[str] = None


def system(content: str) -> Message:
    return Message("system", content)


def user(content: str) -> Message:
    return Message("user", content)


def assistant(content: str) -> Message:
    return Message("assistant", content)


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: Any  # parsed JSON


@dataclass
class Response:
    text: str
    tool_calls: List[ToolCall]
    finish_reason: str
    input_tokens: int
    output_tokens: int
    model: str


def chat(
    alias: str,
    messages: List[Message],
    max_tokens: Optional[int] = None,
    temperature: Optional[float] = None,
    stop: Tuple[str, ...] = (),
    response_schema: Optional[dict] = None,
) -> Response:
    """Sends a chat request to the model behind `alias`. Raises `ModelDenied` or `ModelError`."""
    from componentize_py_types import Err
    from wit_world.imports import model as wit

    request = wit.ChatRequest(
        messages=[_wit_message(wit, m) for m in messages],
        tools=[],
        tool_choice=None,
        max_tokens=max_tokens,
        temperature=temperature,
        stop=list(stop),
        response_schema=json.dumps(response_schema) if response_schema is not None else None,
    )
    try:
        r = wit.chat(alias, request)
    except Err as e:
        raise _error(wit, e.value) from None
    calls = [ToolCall(c.id, c.name, json.loads(c.arguments or "null")) for c in r.tool_calls]
    return Response(r.text, calls, r.finish_reason.name.lower().replace("_", "-"), r.usage.input_tokens,
                    r.usage.output_tokens, r.model)


def complete(alias: str, prompt: str, max_tokens: Optional[int] = None) -> str:
    """One user prompt in, the reply text out."""
    return chat(alias, [user(prompt)], max_tokens=max_tokens).text


def structured(alias: str, output_type: Any, messages: List[Message], **options: Any) -> Tuple[Any, Response]:
    """Asks for JSON matching `output_type`'s schema and decodes the reply into it."""
    from .schema import decode, schema_for

    response = chat(alias, messages, response_schema=schema_for(output_type), **options)
    try:
        value = json.loads(response.text)
    except ValueError as e:
        raise ModelError(f"the model's reply is not JSON: {e}") from None
    try:
        return decode(output_type, value), response
    except Exception as e:
        raise ModelError(f"the model's reply does not decode: {e}") from None


def _wit_message(wit, m: Message):
    role = getattr(wit.Role, m.role.upper())
    return wit.Message(role=role, content=m.content, tool_calls=[], tool_call_id=m.tool_call_id)


def _error(wit, e) -> Exception:
    if isinstance(e, wit.ModelError_Denied):
        return ModelDenied(f"model call denied: {e.value}")
    if isinstance(e, wit.ModelError_ProviderError):
        status = f" (HTTP {e.value.status})" if e.value.status is not None else ""
        return ModelError(f"model provider error{status}: {e.value.message}")
    kind = {
        wit.ModelError_BudgetExceeded: "model budget exceeded",
        wit.ModelError_RateLimited: "model rate limited",
        wit.ModelError_Timeout: "model call timed out",
        wit.ModelError_InvalidRequest: "invalid model request",
    }.get(type(e), "model call failed")
    return ModelError(f"{kind}: {e.value}")
