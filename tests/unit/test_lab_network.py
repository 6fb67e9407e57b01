"""The docker road's lab network (lifecycle._lab_network), on this machine's engine: made
before `vagrant up` with the lab's label, under the name the Vagrantfile gives Vagrant,
and left as it is when it exists (a lab up before). The test's own lab and subnet."""

from __future__ import annotations

import contextlib

import docker
import pytest
from docker.errors import NotFound

from labctl import lifecycle
from labctl.paths import docker_network_name
from labctl.spec import parse_spec
from labctl.vagrant import vagrantfile_data
from roles.contract import LAB_LABEL

SPEC = parse_spec({"name": "labtestnet", "provider": "docker",
                   "network": {"subnet": "192.168.251.0/24"},
                   "hosts": [{"name": "node1", "address": "192.168.251.2", "consul": "server",
                              "lb": True, "demo": 1}]})[0]  # fmt: skip


@pytest.fixture
def network_name():
    name = docker_network_name(SPEC)
    client = docker.from_env()
    yield name
    with contextlib.suppress(NotFound):
        client.networks.get(name).remove()


def test_the_lab_network_is_made_labelled_and_named_as_the_vagrantfile_names_it(network_name):
    lifecycle._lab_network(SPEC)
    network = docker.from_env().networks.get(network_name)
    assert network.attrs["Labels"] == {LAB_LABEL: "labtestnet"}
    assert network.attrs["IPAM"]["Config"][0]["Subnet"] == "192.168.251.0/24"
    assert vagrantfile_data(SPEC)["docker"]["network"] == network_name
    lifecycle._lab_network(SPEC)  # there already: kept as it is
    assert docker.from_env().networks.get(network_name).id == network.id
