"""Role `machine`: mark a host as this lab's, first of all.

On existing machines one lab at a time: the containers' names (consul, lb, zhibo-*),
/etc/lab and the record of images are the machine's, not a lab's. The mark lets
`labctl up` (of another lab) and `labctl down` (teardown removes the mark with the
rest) refuse a machine that holds another lab, instead of taking its pieces.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files

from roles.contract import LAB_MARK, LabHost


@deploy("Mark the machine")
def mark_machine() -> None:
    lab: LabHost = host.data.lab_host
    files.put(
        name=f"Mark the machine as lab {lab.lab_name}'s",
        src=StringIO(f"{lab.lab_name}\n"),
        dest=LAB_MARK,
        mode="644",
    )
