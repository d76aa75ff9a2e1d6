"""Drives `toolhost serve` with the official MCP Python SDK (a client we did not write).

Run by tests/integration/mcp.rs; each scenario prints one JSON report on its last stdout line
and exits non-zero (with a message) when the server misbehaves.

  client.py session --stdio BIN ARG... | --url URL  [--mode legacy|2026-07-28] [--handle H]
      Without --handle: lists tools, adds three notes in the connection's own session (no
      handle passed), checks every result names that session, makes a bad call. With --handle:
      resumes that session and lists its notes, and checks a call without a handle gets a
      fresh, empty session.
  client.py bad-http --url URL
      Malformed JSON-RPC, an unknown method, an oversized body, a wrong Origin, a wrong Host:
      checks each answer, then that the server still serves a real client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

HANDLE_META = "dev.toolhost/session"


def fail(message: str) -> None:
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def client_for(args: argparse.Namespace) -> Client:
    mode = args.mode
    if args.url:
        headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
        http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60.0))
        return Client(streamable_http_client(args.url, http_client=http), mode=mode)
    command, *rest = args.stdio
    return Client(StdioServerParameters(command=command, args=rest), mode=mode)


def as_dict(value: Any) -> dict[str, Any]:
    """SDK models (schemas, `_meta`) as plain dicts, whichever era's types the SDK used."""
    if value is None:
        return {}
    if hasattr(value, "model_dump"):
        return value.model_dump(by_alias=True, exclude_none=True)
    return dict(value)


def text_of(result: Any) -> str:
    return "\n".join(block.text for block in result.content if getattr(block, "type", None) == "text")


def handle_of(result: Any) -> str | None:
    return as_dict(result.meta).get(HANDLE_META)


async def call(client: Client, arguments: dict[str, Any], handle: str | None = None) -> Any:
    if handle is not None:
        arguments = {**arguments, "session_handle": handle}
    return await client.call_tool("notes", arguments)


async def session(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {}
    async with client_for(args) as client:
        report["protocol_version"] = client.protocol_version
        listed = await client.list_tools()
        tools = {tool.name: tool for tool in listed.tools}
        report["tools"] = sorted(tools)
        check("notes" in tools, f"tools/list lacks notes: {sorted(tools)}")
        notes = tools["notes"]
        schema = as_dict(notes.input_schema)
        check(schema.get("type") == "object", f"inputSchema root is not an object: {schema}")
        check("session_handle" in schema.get("properties", {}), "inputSchema lacks the session_handle argument")
        check(notes.description and "notes" in notes.description.lower(), f"bad description: {notes.description!r}")
        output_schema = notes.output_schema
        report["notes_has_output_schema"] = output_schema is not None

        if args.handle is None:
            first = await call(client, {"op": "add", "title": "note 0", "body": "body number 0"})
            check(not first.is_error, f"add 0 failed: {text_of(first)}")
            handle = handle_of(first)
            check(handle is not None, "the result names no session")
            check(f"session_handle: {handle}" in text_of(first), "the handle is not in the text")
            report["handle"] = handle
            # Where calls without a handle are independent (2026-07-28 over HTTP), the client
            # threads the handle; elsewhere the connection keeps its session by itself.
            thread = handle if args.per_request else None
            if args.per_request:
                probe = await call(client, {"op": "search", "query": "body"})
                check(handle_of(probe) not in (None, handle), "two requests without a handle shared a session")
                check(probe.structured_content["matches"] == [], f"a fresh session saw notes: {text_of(probe)}")
            for i in (1, 2):
                result = await call(client, {"op": "add", "title": f"note {i}", "body": f"body number {i}"}, thread)
                check(not result.is_error, f"add {i} failed: {text_of(result)}")
                check(result.structured_content["id"] == i + 1, f"add {i} returned {result.structured_content}")
                check(handle_of(result) == handle, f"add {i} ran in {handle_of(result)}, not {handle}")

            listing = await call(client, {"op": "search", "query": "body"}, thread)
            check(not listing.is_error, f"search failed: {text_of(listing)}")
            report["found_before_restart"] = len(listing.structured_content["matches"])

            # Explicitly naming the same handle reaches the same session.
            got = await call(client, {"op": "get", "id": 2}, handle)
            check(not got.is_error and got.structured_content["title"] == "note 1", f"get: {text_of(got)}")

            # Schema violations, the tool's own errors and bad handles are tool errors.
            invalid = await call(client, {"op": "add", "title": 5}, thread)
            check(invalid.is_error, f"invalid arguments were accepted: {text_of(invalid)}")
            check("does not match its schema" in text_of(invalid), f"unhelpful error: {text_of(invalid)}")
            report["invalid_arguments_error"] = text_of(invalid)
            missing = await call(client, {"op": "get", "id": 99}, thread)
            check(missing.is_error and "no note with id 99" in text_of(missing), f"missing note: {text_of(missing)}")
            unknown = await call(client, {"op": "list"}, "00000000-0000-4000-8000-000000000000")
            check(unknown.is_error and "no session" in text_of(unknown), f"unknown handle: {text_of(unknown)}")
            malformed = await call(client, {"op": "list"}, "../../etc")
            check(malformed.is_error, f"malformed handle: {text_of(malformed)}")

            # The session still works after the failures.
            again = await call(client, {"op": "search", "query": "number"}, thread)
            check(not again.is_error and len(again.structured_content["matches"]) == 3, f"after errors: {text_of(again)}")

            # An unknown tool is a protocol error, and the connection stays up.
            try:
                await client.call_tool("no-such-tool", {})
                fail("calling an unknown tool succeeded")
            except Exception as e:  # the SDK raises MCPError
                report["unknown_tool_error"] = str(e)
            check((await client.list_tools()).tools, "the connection died after an unknown tool")
        else:
            found = await call(client, {"op": "search", "query": "body"}, args.handle)
            check(not found.is_error, f"resumed search failed: {text_of(found)}")
            check(handle_of(found) == args.handle, f"resumed call ran in {handle_of(found)}")
            report["found_after_restart"] = len(found.structured_content["matches"])
            added = await call(client, {"op": "add", "title": "after restart", "body": "more"}, args.handle)
            check(not added.is_error, f"add after restart failed: {text_of(added)}")
            report["id_after_restart"] = added.structured_content["id"]
            fresh = await call(client, {"op": "search", "query": "body"})
            check(not fresh.is_error, f"fresh search failed: {text_of(fresh)}")
            check(handle_of(fresh) not in (None, args.handle), "a call without a handle reused the old session")
            report["found_in_fresh_session"] = len(fresh.structured_content["matches"])
    return report


async def bad_http(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {}
    auth = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    base = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **auth}
    modern = {**base, "MCP-Protocol-Version": "2026-07-28"}
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "bad-traffic", "version": "0"},
    }

    def body_of(response: httpx2.Response) -> Any:
        text = response.text
        if "text/event-stream" in response.headers.get("content-type", ""):
            data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]
            return json.loads(data[-1]) if data else None
        try:
            return json.loads(text)
        except ValueError:
            return text

    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30.0)) as http:
        # Malformed JSON: 400 with a JSON-RPC parse error.
        r = await http.post(args.url, content=b'{"jsonrpc": "2.0", "id": 1, "method": ', headers=base)
        report["malformed"] = {"status": r.status_code, "body": body_of(r)}
        check(r.status_code == 400, f"malformed JSON got {r.status_code}: {r.text}")
        body = body_of(r)
        check(isinstance(body, dict) and body.get("error", {}).get("code") == -32700, f"no parse error: {r.text}")

        # Not JSON-RPC at all (valid JSON): rejected, not crashed.
        r = await http.post(args.url, content=b'{"hello": "world"}', headers=base)
        report["not_jsonrpc"] = {"status": r.status_code, "body": body_of(r)}
        check(400 <= r.status_code < 500, f"a non-JSON-RPC body got {r.status_code}: {r.text}")

        # Unknown method (2026-07-28 request): JSON-RPC method-not-found.
        unknown = {"jsonrpc": "2.0", "id": 2, "method": "tools/frobnicate", "params": {"_meta": meta}}
        r = await http.post(args.url, json=unknown, headers={**modern, "Mcp-Method": "tools/frobnicate"})
        body = body_of(r)
        report["unknown_method"] = {"status": r.status_code, "body": body}
        check(isinstance(body, dict) and body.get("error", {}).get("code") == -32601, f"unknown method: {r.status_code} {r.text}")

        # Oversized body: 413, before the server reads it all.
        big = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
               "params": {"name": "notes", "arguments": {"op": "add", "title": "x", "body": "y" * (args.max_body + 1)}, "_meta": meta}}
        r = await http.post(args.url, json=big, headers={**modern, "Mcp-Method": "tools/call", "Mcp-Name": "notes"})
        report["oversized"] = {"status": r.status_code}
        check(r.status_code == 413, f"an oversized body got {r.status_code}: {r.text[:200]}")

        # A browser page from another origin: 403.
        discover = {"jsonrpc": "2.0", "id": 4, "method": "server/discover", "params": {"_meta": meta}}
        r = await http.post(args.url, json=discover, headers={**modern, "Mcp-Method": "server/discover", "Origin": "https://evil.example"})
        report["wrong_origin"] = {"status": r.status_code}
        check(r.status_code == 403, f"a foreign Origin got {r.status_code}: {r.text}")

        # DNS rebinding: a Host that is not ours: 403.
        r = await http.post(args.url, json=discover, headers={**modern, "Mcp-Method": "server/discover", "Host": "evil.example"})
        report["wrong_host"] = {"status": r.status_code}
        check(r.status_code == 403, f"a foreign Host got {r.status_code}: {r.text}")

        # A loopback origin is fine, and discovery works.
        r = await http.post(args.url, json=discover, headers={**modern, "Mcp-Method": "server/discover", "Origin": "http://localhost:3000"})
        body = body_of(r)
        report["discover"] = {"status": r.status_code, "body": body}
        check(r.status_code == 200 and "2026-07-28" in json.dumps(body), f"discover: {r.status_code} {r.text}")

        if args.token:
            r = await http.post(args.url, json=discover, headers={**modern, "Authorization": "Bearer wrong", "Mcp-Method": "server/discover"})
            report["wrong_token"] = {"status": r.status_code}
            check(r.status_code == 401, f"a wrong token got {r.status_code}")
            no_auth = {k: v for k, v in modern.items() if k != "Authorization"}
            r = await http.post(args.url, json=discover, headers={**no_auth, "Mcp-Method": "server/discover"})
            report["no_token"] = {"status": r.status_code}
            check(r.status_code == 401, f"no token got {r.status_code}")

    # After all that, a real client is still served.
    async with client_for(args) as client:
        result = await client.call_tool("notes", {"op": "add", "title": "still", "body": "serving"})
        check(not result.is_error, f"the server stopped serving: {text_of(result)}")
        report["still_serving"] = True
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["session", "bad-http"])
    parser.add_argument("--stdio", nargs=argparse.REMAINDER, help="server command and arguments (last option)")
    parser.add_argument("--url")
    parser.add_argument("--token")
    parser.add_argument("--mode", default="auto")
    parser.add_argument("--handle")
    parser.add_argument("--per-request", action="store_true", help="calls without a handle get fresh sessions")
    parser.add_argument("--max-body", type=int, default=4 << 20)
    args = parser.parse_args()
    if bool(args.stdio) == bool(args.url):
        fail("give exactly one of --stdio or --url")
    run = {"session": session, "bad-http": bad_http}[args.scenario]
    report = asyncio.run(run(args))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
