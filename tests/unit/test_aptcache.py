"""The hosts' apt cache (labctl.aptcache, spec `apt.cache`): which proxy the hosts get,
and that it reaches only the lab's own apt runs, as `http_proxy` in their environment."""

from __future__ import annotations

import pytest

from labctl import aptcache
from labctl.host_data import role_settings
from labctl.spec import parse_spec
from roles.docker import apt_env
from tests.unit.test_spec import only_problem, seed


def spec_with(cache: str):
    return parse_spec(seed(apt={"cache": cache}))[0]


@pytest.mark.parametrize("cache", ["https://10.0.0.1:3142", "10.0.0.1:3142", "http://a b:1"])
def test_a_cache_that_is_no_http_proxy_is_refused_with_the_fix(cache):
    problem = only_problem(seed(apt={"cache": cache}))
    assert problem == (
        f"lab.yaml: apt.cache = '{cache}' is not auto, none or an apt proxy's URL; write e.g. "
        "http://10.0.0.1:3142."
    )


def test_none_means_no_proxy_and_a_url_is_used_as_given(monkeypatch):
    def no_start(*args):
        raise AssertionError("apt-cacher-ng started")

    monkeypatch.setattr(aptcache, "_start", no_start)
    assert aptcache.ensure(spec_with("none"), "docker", print) is None
    assert aptcache.ensure(spec_with("http://10.0.0.1:3142/"), "ssh", print) == (
        "http://10.0.0.1:3142"
    )


def test_auto_on_the_ssh_road_is_no_proxy():
    """Existing machines may not reach this one: nothing to listen on."""
    assert aptcache.listen_address(spec_with("auto"), "ssh") is None
    assert aptcache.ensure(spec_with("auto"), "ssh", print) is None


def test_auto_uses_an_apt_cacher_ng_that_already_answers(monkeypatch):
    monkeypatch.setattr(aptcache, "bridge_gateway", lambda: "172.17.0.1")
    monkeypatch.setattr(aptcache, "answers", lambda address: address == "172.17.0.1")
    monkeypatch.setattr(aptcache, "_start", lambda addresses: pytest.fail("started another"))
    assert aptcache.ensure(spec_with("auto"), "docker", print) == "http://172.17.0.1:3142"


def test_auto_is_the_default():
    assert parse_spec(seed())[0].apt.cache == "auto"


def test_auto_for_virtualbox_listens_on_the_host_only_gateway():
    assert aptcache.listen_address(spec_with("auto"), "virtualbox") == "192.168.56.1"


def test_the_proxy_reaches_the_hosts_apt_runs_only_through_their_environment():
    spec = spec_with("auto")
    data = role_settings(spec, {"apt_proxy": "http://172.17.0.1:3142"})
    assert apt_env(data_of(data)) == {"http_proxy": "http://172.17.0.1:3142"}
    assert apt_env(data_of(role_settings(spec, {}))) == {}


def data_of(values: dict):
    """Host data as a role reads it (pyinfra's HostData: attribute and .get access)."""
    return type("HostData", (), {"get": lambda self, key, default=None: values.get(key, default)})()


def test_the_cache_stops_with_the_last_lab_of_the_checkout(monkeypatch):
    stopped: list[bool] = []
    monkeypatch.setattr(aptcache, "_stop_ours", lambda wait=True: stopped.append(wait) or True)
    monkeypatch.setattr(aptcache, "labs_with_state", lambda: ["labtest"])
    assert aptcache.stop_after_the_last_lab() is None and not stopped  # another lab is up
    monkeypatch.setattr(aptcache, "labs_with_state", lambda: [])
    # Signalled, not waited for: it takes 1.5 s to exit, and nothing needs it gone.
    assert "apt-cacher-ng" in aptcache.stop_after_the_last_lab() and stopped == [False]
