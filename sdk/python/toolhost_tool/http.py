"""Outgoing HTTP(S) through the host (`wasi:http`).

The host sends a request only if its destination is on the tool's network allowlist (request
hosts with `Capabilities.of(network=["api.example.com"])`); anything else raises `HttpDenied`
(a `Denied`, audited by the host). An allowed request that fails raises `HttpError` (a
`Failed`). The host journals every exchange, so a resumed session gets the recorded responses
without sending the requests again.

    page = http.get("https://api.example.com/v1/items", headers={"accept": "application/json"})
    items = page.json()
    http.post("https://api.example.com/v1/items", json={"name": "x"})
"""

import json as _json
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union
from urllib.parse import urlsplit

from .errors import HttpDenied, HttpError

try:  # the bindings componentize-py generates; imported at build time, so the component has them
    from componentize_py_types import Err as _Err
    from wit_world.imports import outgoing_handler as _handler
    from wit_world.imports import streams as _streams
    from wit_world.imports import wasi_http_types as _types
except ImportError:  # plain Python (a tool's unit tests): no host
    _handler = None

Headers = Union[Dict[str, str], Iterable[Tuple[str, str]], None]
Body = Union[bytes, bytearray, str, None]

_CHUNK = 4096  # the most `blocking-write-and-flush` takes at once
_READ = 64 << 10


class Response:
    """A response, read whole."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: List[Tuple[str, bytes]], body: bytes):
        self.status = status
        #: Header names (lowercase) and raw values, in the order received.
        self.headers = headers
        self.body = body

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: str) -> Optional[str]:
        """The first value of header `name` (any case) as text; None if absent."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value.decode("latin-1")
        return None

    def text(self) -> str:
        """The body as UTF-8 text (undecodable bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; `HttpError` if it is not JSON."""
        try:
            return _json.loads(self.body)
        except ValueError as e:
            raise HttpError(f"the response body is not JSON: {e}") from None

    def __repr__(self) -> str:
        return f"Response(status={self.status}, {len(self.body)} bytes)"


def get(url: str, headers: Headers = None) -> Response:
    """GET `url`."""
    return request("GET", url, headers=headers)


def post(url: str, body: Body = None, headers: Headers = None, json: Any = None) -> Response:
    """POST `body` (bytes, or text as UTF-8) or `json` (serialized, with its content type) to `url`."""
    return request("POST", url, headers=headers, body=body, json=json)


def request(method: str, url: str, headers: Headers = None, body: Body = None, json: Any = None) -> Response:
    """Sends `method` to `url` (`http://` or `https://`) and reads the whole response."""
    pairs = _header_pairs(headers)
    if json is not None:
        if body is not None:
            raise HttpError("invalid HTTP request: pass `body` or `json`, not both")
        body = _json.dumps(json, separators=(",", ":"))
        if not any(name.lower() == "content-type" for name, _ in pairs):
            pairs.append(("content-type", "application/json"))
    data = body.encode() if isinstance(body, str) else bytes(body or b"")
    if _handler is None:
        raise HttpError("HTTP needs the host: it is not available outside a component")
    return _send(method, url, pairs, data)


def _header_pairs(headers: Headers) -> List[Tuple[str, str]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    return [(str(name), str(value)) for name, value in items]


def _invalid(message: str) -> HttpError:
    return HttpError(f"invalid HTTP request: {message}")


def _target(url: str):
    """(scheme, authority, path with query) of `url`."""
    parts = urlsplit(url)
    if parts.scheme == "http":
        scheme = _types.Scheme_Http()
    elif parts.scheme == "https":
        scheme = _types.Scheme_Https()
    else:
        raise _invalid(f"unsupported scheme `{parts.scheme}` in {url!r} (http or https)")
    if not parts.netloc:
        raise _invalid(f"no host in {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, parts.netloc, path


def _method(method: str):
    name = method.upper()
    known = {
        "GET": _types.Method_Get, "HEAD": _types.Method_Head, "POST": _types.Method_Post, "PUT": _types.Method_Put,
        "DELETE": _types.Method_Delete, "PATCH": _types.Method_Patch, "OPTIONS": _types.Method_Options,
    }.get(name)
    return known() if known is not None else _types.Method_Other(name)


def _failure(code: Any) -> Exception:
    if isinstance(code, _types.ErrorCode_HttpRequestDenied):
        return HttpDenied("HTTP request denied: the destination is not on the tool's allowlist")
    name = type(code).__name__.replace("ErrorCode_", "")
    value = getattr(code, "value", None)
    return HttpError(f"HTTP request failed: {name}" + (f"({value!r})" if value is not None else ""))


def _send(method: str, url: str, headers: List[Tuple[str, str]], body: bytes) -> Response:
    t, Err = _types, _Err
    scheme, authority, path = _target(url)
    try:
        fields = t.Fields.from_list([(name, value.encode()) for name, value in headers])
    except Err as e:
        raise _invalid(f"headers: {type(e.value).__name__.replace('HeaderError_', '')}") from None
    request = t.OutgoingRequest(fields)
    for setter, value, what in (
        (request.set_method, _method(method), "method"),
        (request.set_scheme, scheme, "scheme"),
        (request.set_authority, authority, "authority"),
        (request.set_path_with_query, path, "path"),
    ):
        try:
            setter(value)
        except Err:
            raise _invalid(f"{what} in {url!r}") from None
    outgoing = request.body()
    try:
        future = _handler.handle(request, None)
    except Err as e:
        raise _failure(e.value) from None
    with outgoing.write() as stream:  # a child of the body: dropped before `finish`
        for start in range(0, len(body), _CHUNK):
            try:
                stream.blocking_write_and_flush(body[start:start + _CHUNK])
            except Err as e:
                raise HttpError(f"HTTP request failed sending the body: {e.value}") from None
    try:
        t.OutgoingBody.finish(outgoing, None)
    except Err as e:
        raise _failure(e.value) from None
    with future:
        with future.subscribe() as ready:
            ready.block()
        outcome = future.get()
    if outcome is None or isinstance(outcome, Err):
        raise HttpError("HTTP request failed: no response after the request completed")
    if isinstance(outcome.value, Err):
        raise _failure(outcome.value.value)
    with outcome.value.value as response:
        with response.headers() as fields:  # a child of the response, like the body
            headers = fields.entries()
        return Response(response.status(), headers, _read_body(response))


def _read_body(response) -> bytes:
    chunks = []
    with response.consume() as incoming:
        with incoming.stream() as stream:  # a child of the body: dropped first
            while True:
                try:
                    chunks.append(stream.blocking_read(_READ))
                except _Err as e:
                    if isinstance(e.value, _streams.StreamError_Closed):
                        break
                    code = _types.http_error_code(e.value.value)
                    if code is not None:
                        raise _failure(code) from None
                    raise HttpError("HTTP request failed reading the body") from None
    return b"".join(chunks)
