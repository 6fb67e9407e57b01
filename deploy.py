"""Route the lab's host groups to roles. Nothing else lives here.

pyinfra inventory.py deploy.py                              (what `labctl apply` runs)
pyinfra inventory.py deploy.py --data lab_teardown=true     (what `labctl down` runs
                                                             on existing machines)
"""

from pyinfra import host

from roles.consul import consul_agent
from roles.demo_service import demo_service
from roles.docker import install_docker
from roles.images import deliver_images
from roles.lb import load_balancer
from roles.machine import mark_machine
from roles.teardown import remove_lab

if host.data.get("lab_teardown"):
    remove_lab()
else:
    mark_machine()
    install_docker()
    deliver_images()

    if host.data.consul_role != "none":
        consul_agent()

    # With ACLs, a lab's first `up` converges the agents alone (--data lab_stage=agents):
    # the roles below need the tokens labctl makes once the servers have a leader.
    if host.data.lab_stage != "agents":
        if host.data.consul_role != "none":
            # On every agent host, also with no instances: it removes the ones the spec dropped.
            demo_service()
        if host.data.lb:
            load_balancer()
