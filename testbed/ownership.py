"""The label on what the test suite and the bench make themselves (containers, volumes,
networks outside a lab), so that their clean-up finds it all and nothing of a person's."""

from __future__ import annotations

from labctl.virtualbox import checkout_id

# Docker's label on what the suite makes itself, valued `<lab>.<checkout id>`.
SUITE_LABEL = "io.labctl.test-suite"


def owner(name: str) -> str:
    """SUITE_LABEL's value on what the suite makes for lab `name` from this checkout."""
    return f"{name}.{checkout_id()}"
