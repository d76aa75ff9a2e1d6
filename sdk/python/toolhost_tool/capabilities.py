"""What a tool asks the host to grant (`describe`'s `capabilities`)."""

from dataclasses import dataclass, field
from enum import Enum
from typing import List, Tuple


class Access(Enum):
    READ = "read"
    READ_WRITE = "read-write"


@dataclass(frozen=True)
class Capabilities:
    """Requested state namespaces, model aliases, directories, network hosts and env vars.

    The host's policy decides what is granted; anything not granted comes back as a `Denied`.
    """

    state: Tuple[Tuple[str, Access], ...] = ()
    models: Tuple[str, ...] = ()
    filesystem: Tuple[Tuple[str, Access], ...] = ()
    network: Tuple[str, ...] = ()
    env: Tuple[str, ...] = ()

    @staticmethod
    def of(
        state: "dict[str, Access] | None" = None,
        models: "List[str] | None" = None,
        filesystem: "dict[str, Access] | None" = None,
        network: "List[str] | None" = None,
        env: "List[str] | None" = None,
    ) -> "Capabilities":
        return Capabilities(
            state=tuple((state or {}).items()),
            models=tuple(models or ()),
            filesystem=tuple((filesystem or {}).items()),
            network=tuple(network or ()),
            env=tuple(env or ()),
        )
