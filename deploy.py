"""Route the lab's host groups to roles. Nothing else lives here.

pyinfra inventory.py deploy.py                              (what `labctl apply` runs)
pyinfra inventory.py deploy.py --data lab_teardown=true     (what `labctl down` runs
                                                             on existing machines)
"""

from pyinfra import host

from roles.consul import consul_agent
from roles.contract import AGENTS_ONLY, HOST_ONLY, STAGE, TEARDOWN
from roles.demo_service import demo_service
from roles.docker import install_docker
from roles.host_images import deliver_images
from roles.lb import load_balancer
from roles.machine import mark_machine
from roles.registrator import registrator, registrator_absent
from roles.teardown import remove_lab

lab = host.data.lab_host

if host.data.get(TEARDOWN):
    remove_lab()
else:
    mark_machine()
    install_docker()
    deliver_images()

    # A host box is taken here (--data lab_stage=host): the engine and images, nothing more.
    if host.data.get(STAGE) != HOST_ONLY:
        if lab.consul:
            consul_agent()

        # With ACLs, a lab's first `up` converges the agents alone (--data lab_stage=agents):
        # the roles below need the tokens labctl makes once the servers have a leader.
        if host.data.get(STAGE) != AGENTS_ONLY:
            if lab.consul:
                if lab.registrator:  # before the instances it registers
                    registrator()
                # On every agent host, also with no instances: it removes the ones the spec dropped.
                demo_service()
                if not lab.registrator:  # after the instances it registered are gone
                    registrator_absent()
            if lab.lb:
                load_balancer()
