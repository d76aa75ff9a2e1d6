"""Tool errors: raise one from `call` and the host gets the matching `tool-error` case.

Any other exception escaping `call` traps the instance, like a panic in a Rust tool: the host
discards the step's state writes and rebuilds the instance from its last snapshot.
"""


class ToolError(Exception):
    """Base of the errors a tool reports. Subclass one of the three below."""

    kind = "failed"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(ToolError):
    """The input was well-formed JSON but unusable (schema, range, semantics)."""

    kind = "invalid-input"


class Denied(ToolError):
    """A capability the tool needed was denied by the host."""

    kind = "denied"


class Failed(ToolError):
    """The tool ran and could not complete the request."""

    kind = "failed"


class StateError(Failed):
    """A state operation failed (quota, malformed key, store unavailable)."""


class StateDenied(Denied):
    """The state namespace is not granted, or only for reading."""


class ModelError(Failed):
    """A model call failed (budget, rate limit, timeout, provider, bad request)."""


class ModelDenied(Denied):
    """The model alias is not granted to this tool."""


class HttpDenied(Denied):
    """The host's policy does not allow this HTTP destination."""


class HttpError(Failed):
    """An allowed HTTP request failed (connection, TLS, timeout, protocol, bad URL)."""
