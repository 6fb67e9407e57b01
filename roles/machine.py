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

from roles.operations import HOST_STATE_DIR

# One line: the name of the lab this machine holds.
LAB_MARK = f"{HOST_STATE_DIR}/lab"


@deploy("Mark the machine")
def mark_machine() -> None:
    files.put(
        name=f"Mark the machine as lab {host.data.lab_name}'s",
        src=StringIO(f"{host.data.lab_name}\n"),
        dest=LAB_MARK,
        mode="644",
    )
