"""Where labctl writes, and how: every string as written.

Rich reads `[...]` in a string as markup, and labctl's sentences carry what a user wrote
(a service `[x]`, a spec file `lab[/x].yaml`, a target, a value) and what hosts answered.
So no console here reads markup: styles are given as spans of a Text, never inside the
string, and a name with brackets in it is shown as it is, never eaten or crashing.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

# Progress, sentences and warnings on stderr; sentences are never hard-wrapped: a
# terminal wraps them, and a log keeps them whole.
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
# Tables, on stdout.
out = Console(highlight=False, markup=False)


def labelled(label: str, style: str, message: str) -> Text:
    """`label` in `style`, then the message as written."""
    return Text.assemble((label, style), " ", message)


def styled(text: str, style: str) -> Text:
    return Text(text, style=style)
