"""Drives toolhost's MCP Tasks (io.modelcontextprotocol/tasks, 2026-07-28) with the official
MCP Python SDK.

The SDK (mcp 2.3.0) has no tasks runtime of its own, but it has the extension API the Tasks
extension is meant to plug into (SEP-2133): a `ClientExtension` advertises the extension in
every request's capabilities and claims the `resultType: "task"` shape of `tools/call`; its
resolver polls `tasks/get` through the SDK session (which stamps the 2026-07-28 `_meta` and the
`Mcp-Method`/`Mcp-Name` headers), answers `input_required` tasks by dispatching their
`inputRequests` through the client's own elicitation callback and sending `tasks/update`,
and returns the task's final `CallToolResult` from `client.call_tool`.

Run by tests/integration/mcp_tasks.rs; each scenario prints one JSON report on its last stdout
line and exits non-zero (with a message) when the server misbehaves.

  tasks_client.py long-call --url URL --ms N
      A call of the hostile tool sleeping N ms, polled to its end. Prints `TASK <id>` as soon
      as it has the handle (the test restarts the server then) and keeps polling through
      connection failures until the server is back.
  tasks_client.py plain --url URL --ms N [--mode legacy|2026-07-28]
      The same call from a client without the extension: an ordinary result.
  tasks_client.py approve --url URL --tool AGENT --goal TEXT --decision accept|decline
      Starts an agent run through its tool; answers the approval the task asks for.
  tasks_client.py ask --url URL --tool AGENT --goal TEXT --decision accept|decline [--mode M]
      The same from a client without the extension: on 2026-07-28 the approval comes back as
      the call's `InputRequiredResult` (SEP-2322). One round is driven by hand (the result's
      shape, a tampered `requestState` refused, a retry without answers asked again), then the
      SDK's own multi round-trip driver answers it through the elicitation callback. With
      `--mode legacy` (2025-11-25) the call just returns.
  tasks_client.py flood --url URL --tool AGENT --goal TEXT --n N
  tasks_client.py flood --url URL --tool hostile --ms MS --n N
      N calls at once from one client that takes tasks: which got a task, which a result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any, Literal

import httpx2
from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, ElicitResult, ErrorData, InputRequest, Request, RequestParams, Result
from pydantic import TypeAdapter

TASKS = "io.modelcontextprotocol/tasks"
TERMINAL = {"completed", "failed", "cancelled"}


def fail(message: str) -> None:
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


class CreateTaskResult(Result):
    """`resultType: "task"`: the seed state of a task (the extension's `CreateTaskResult`)."""

    result_type: Literal["task"] = "task"
    task_id: str
    status: str
    poll_interval_ms: int | None = None


class TaskParams(RequestParams):
    task_id: str


class UpdateTaskParams(TaskParams):
    input_responses: dict[str, Any]


class GetTask(Request[TaskParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    name_param = "taskId"


class UpdateTask(Request[UpdateTaskParams, Literal["tasks/update"]]):
    method: Literal["tasks/update"] = "tasks/update"
    name_param = "taskId"


class DetailedTask(Result):
    """A `tasks/get` result: the task with its status-specific payload inlined."""

    task_id: str
    status: str
    status_message: str | None = None
    poll_interval_ms: int | None = None
    input_requests: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class AckResult(Result):
    pass


class Tasks(ClientExtension):
    """The tasks extension, client side: polls a task to its end, answering its input requests."""

    identifier = TASKS

    def __init__(self, deadline_s: float = 90.0) -> None:
        self.deadline_s = deadline_s
        self.report: dict[str, Any] = {"statuses": [], "failed_polls": 0, "answered": []}

    def claims(self) -> list[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=CreateTaskResult, resolve=self.resolve)]

    async def resolve(self, created: CreateTaskResult, ctx: ClaimContext) -> CallToolResult:
        self.report["task"] = created.task_id
        self.report["created_status"] = created.status
        print(f"TASK {created.task_id}", flush=True)
        answered: set[str] = set()
        interval = (created.poll_interval_ms or 500) / 1000
        deadline = time.monotonic() + self.deadline_s
        while time.monotonic() < deadline:
            await asyncio.sleep(interval)
            try:
                task = await ctx.session.send_request(GetTask(params=TaskParams(task_id=created.task_id)), DetailedTask)
            except Exception as e:  # the server is down (being restarted): keep polling
                self.report["failed_polls"] += 1
                self.report["last_poll_error"] = f"{type(e).__name__}: {e}"
                continue
            if not self.report["statuses"] or self.report["statuses"][-1] != task.status:
                self.report["statuses"].append(task.status)
            interval = (task.poll_interval_ms or 500) / 1000
            if task.status == "completed":
                check(task.result is not None, f"a completed task has no result: {task}")
                return CallToolResult.model_validate(task.result)
            if task.status in TERMINAL:
                self.report["final"] = task.model_dump(by_alias=True, exclude_none=True)
                fail(f"the task ended {task.status}: {task.status_message} {task.error}")
            if task.status == "input_required":
                check(bool(task.input_requests), f"input_required without inputRequests: {task}")
                responses: dict[str, Any] = {}
                for key, raw in (task.input_requests or {}).items():
                    if key in answered:
                        continue  # the extension: deduplicate keys across polls
                    request = TypeAdapter(InputRequest).validate_python(raw)
                    context = ClientRequestContext(session=ctx.session, request_id=f"{created.task_id}/{key}")
                    answer = await ctx.session.dispatch_input_request(context, request)
                    check(not isinstance(answer, ErrorData), f"the elicitation callback refused: {answer}")
                    responses[key] = answer.model_dump(by_alias=True, mode="json", exclude_none=True)
                    answered.add(key)
                    self.report["answered"].append({"key": key, "request": raw, "response": responses[key]})
                if responses:
                    params = UpdateTaskParams(task_id=created.task_id, input_responses=responses)
                    await ctx.session.send_request(UpdateTask(params=params), AckResult)
        fail(f"task {created.task_id} did not end within {self.deadline_s} s: {self.report}")
        raise AssertionError("unreachable")


def http_client(url: str, mode: str, extensions: list[ClientExtension], **kwargs: Any) -> Client:
    http = httpx2.AsyncClient(timeout=httpx2.Timeout(60.0))
    return Client(streamable_http_client(url, http_client=http), mode=mode, extensions=extensions, **kwargs)


def result_report(result: CallToolResult) -> dict[str, Any]:
    text = "\n".join(block.text for block in result.content if getattr(block, "type", None) == "text")
    return {"is_error": result.is_error, "structured": result.structured_content, "text": text}


async def long_call(args: argparse.Namespace) -> dict[str, Any]:
    tasks = Tasks()
    async with http_client(args.url, "2026-07-28", [tasks]) as client:
        result = await client.call_tool("hostile", {"attack": "sleep", "ms": args.ms})
    check("task" in tasks.report, "the long call got no task handle")
    return {**tasks.report, "result": result_report(result)}


async def plain(args: argparse.Namespace) -> dict[str, Any]:
    async with http_client(args.url, args.mode, []) as client:
        started = time.monotonic()
        result = await client.call_tool("hostile", {"attack": "sleep", "ms": args.ms})
        waited = time.monotonic() - started
        return {"protocol_version": client.protocol_version, "waited_s": waited, "result": result_report(result)}


def answering(args: argparse.Namespace, asked: list[dict[str, Any]]):
    """An elicitation callback that records each question and answers with `args.decision`."""

    async def elicit(context: ClientRequestContext, params: Any) -> ElicitResult:
        asked.append(params.model_dump(by_alias=True, mode="json", exclude_none=True))
        if args.decision == "accept":
            return ElicitResult(action="accept", content={})
        return ElicitResult(action="decline", content={"reason": args.reason})

    return elicit


async def approve(args: argparse.Namespace) -> dict[str, Any]:
    asked: list[dict[str, Any]] = []
    elicit = answering(args, asked)
    tasks = Tasks()
    async with http_client(args.url, "2026-07-28", [tasks], elicitation_callback=elicit) as client:
        result = await client.call_tool(args.tool, {"goal": args.goal})
    check(len(asked) == 1, f"asked {len(asked)} times: {asked}")
    return {**tasks.report, "asked": asked, "result": result_report(result)}


async def ask(args: argparse.Namespace) -> dict[str, Any]:
    from mcp.shared.exceptions import MCPError
    from mcp_types import InputRequiredResult

    asked: list[dict[str, Any]] = []
    elicit = answering(args, asked)
    report: dict[str, Any] = {}
    arguments = {"goal": args.goal}
    async with http_client(args.url, args.mode, [], elicitation_callback=elicit) as client:
        report["protocol_version"] = client.protocol_version
        if args.mode == "legacy":
            report["result"] = result_report(await client.call_tool(args.tool, arguments))
            report["asked"] = asked
            return report
        first = await client.session.call_tool(args.tool, arguments, allow_input_required=True)
        check(isinstance(first, InputRequiredResult), f"the first round is not input_required: {first}")
        assert isinstance(first, InputRequiredResult)
        report["first"] = first.model_dump(by_alias=True, mode="json", exclude_none=True)
        state = first.request_state
        check(bool(state), f"no requestState: {report['first']}")
        try:
            await client.session.call_tool(args.tool, arguments, request_state=f"{state}-tampered")
            fail("a tampered requestState was accepted")
        except MCPError as e:
            report["tampered"] = {"code": e.code, "message": e.message}
        again = await client.session.call_tool(args.tool, arguments, request_state=state, allow_input_required=True)
        check(isinstance(again, InputRequiredResult), f"a retry without answers was not asked again: {again}")
        assert isinstance(again, InputRequiredResult)
        report["asked_again"] = sorted((again.input_requests or {}).keys())
        result = await client.call_tool(args.tool, arguments, request_state=state)
    report["asked"] = asked
    report["result"] = result_report(result)
    return report


async def flood(args: argparse.Namespace) -> dict[str, Any]:
    """--n calls at once from one client that takes tasks (of agent --tool toward --goal, or
    without --goal of the hostile tool sleeping --ms); how each came back: a task handle (not
    polled), or a result."""
    report: dict[str, Any] = {"tasks": [], "results": []}
    arguments = {"goal": args.goal} if args.goal else {"attack": "sleep", "ms": args.ms}
    async with http_client(args.url, "2026-07-28", [Tasks()]) as client:
        calls = [client.session.call_tool(args.tool, arguments, allow_claimed=True) for _ in range(args.n)]
        for answer in await asyncio.gather(*calls):
            if isinstance(answer, CreateTaskResult):
                report["tasks"].append(answer.task_id)
            else:
                check(isinstance(answer, CallToolResult), f"neither a task nor a result: {answer}")
                meta = answer.meta or {}
                report["results"].append({**result_report(answer), "kind": meta.get("dev.toolhost/error")})
    return report


async def get(args: argparse.Namespace) -> dict[str, Any]:
    """One tasks/get of task --task: its status, or the JSON-RPC error it got."""
    from mcp.shared.exceptions import MCPError

    async with http_client(args.url, "2026-07-28", [Tasks()]) as client:
        try:
            task = await client.session.send_request(GetTask(params=TaskParams(task_id=args.task)), DetailedTask)
        except MCPError as e:
            return {"error": {"code": e.code, "message": e.message}}
        return {"status": task.status}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["long-call", "plain", "approve", "ask", "flood", "get"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--ms", type=int, default=3000)
    parser.add_argument("--mode", default="2026-07-28")
    parser.add_argument("--tool")
    parser.add_argument("--goal")
    parser.add_argument("--decision", choices=["accept", "decline"], default="accept")
    parser.add_argument("--reason", default="not today")
    parser.add_argument("--task")
    parser.add_argument("--n", type=int, default=10)
    args = parser.parse_args()
    run = {"long-call": long_call, "plain": plain, "approve": approve, "ask": ask, "flood": flood, "get": get}[args.scenario]
    report = asyncio.run(run(args))
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
