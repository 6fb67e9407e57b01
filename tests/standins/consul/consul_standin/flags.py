"""Command-line flags parsed the way Go's `flag` package does."""

from __future__ import annotations

from typing import Any

from .util import go_bool


class FlagError(Exception):
    pass


def parse_go_flags(
    args: list[str], spec: dict[str, str]
) -> tuple[list[tuple[str, Any]], list[str]]:
    """Parse -f, --f, -f=v and -f v (non-bool), stopping at the first positional.

    `spec` maps flag name -> kind ("bool", "str", "int", "list"). Returns the
    flags in command-line order and the remaining positional arguments.
    """
    out: list[tuple[str, Any]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if len(arg) < 2 or arg[0] != "-":
            break
        body = arg[2:] if arg.startswith("--") else arg[1:]
        if not body or body[0] in "-=":
            raise FlagError(f"bad flag syntax: {arg}")
        value: str | None = None
        if "=" in body:
            body, value = body.split("=", 1)
        if body in ("h", "help"):
            raise FlagError("help")
        kind = spec.get(body)
        if kind is None:
            raise FlagError(f"flag provided but not defined: -{body}")
        if kind == "bool":
            if value is None:
                parsed: Any = True
            else:
                try:
                    parsed = go_bool(value)
                except ValueError:
                    raise FlagError(
                        f'invalid boolean value "{value}" for -{body}: parse error'
                    ) from None
        else:
            if value is None:
                i += 1
                if i >= len(args):
                    raise FlagError(f"flag needs an argument: -{body}")
                value = args[i]
            parsed = value
            if kind == "int":
                try:
                    parsed = int(value, 0)
                except ValueError:
                    raise FlagError(
                        f'invalid value "{value}" for flag -{body}: parse error'
                    ) from None
        out.append((body, parsed))
        i += 1
    return out, args[i:]
