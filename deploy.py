"""Route the lab's host groups to roles. Nothing else lives here.

pyinfra inventory.py deploy.py
"""

from roles.docker import install_docker

install_docker()
