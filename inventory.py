"""pyinfra inventory: the lab spec's hosts, grouped by role.

    pyinfra inventory.py deploy.py            # what `labctl apply` runs
    LAB_SPEC=examples/ha.yaml pyinfra inventory.py deploy.py

Hosts, addresses and roles come from the lab spec ($LAB_SPEC or lab.yaml);
connection details from `vagrant ssh-config` (virtualbox/docker providers) or
from the spec itself (ssh provider). Each group below is a list of
(name, data) pairs; roles read the data flags, never host names.
"""

from labctl.host_data import inventory_groups

_groups = inventory_groups()  # labctl's converge uses the same groups, in its own process

lab = _groups["lab"]
consul_servers = _groups["consul_servers"]
consul_clients = _groups["consul_clients"]
lb = _groups["lb"]
demo = _groups["demo"]
