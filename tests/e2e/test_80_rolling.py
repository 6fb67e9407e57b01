"""Rolling changes: an apply that must replace every demo instance and every Consul agent
does it one at a time (drained, replaced, passing and back in the LB before the next;
each server back in the raft peer set before the next), with no failed GET for a
fresh-connection client nor for a keep-alive one."""

from __future__ import annotations

import json

from labctl.lifecycle import converge_lab
from labctl.paths import with_state
from tests.e2e.probes import lb_sample, request_loop

ALL = {"zhibo-1", "zhibo-2", "zhibo-3"}
# pyinfra host data that every demo instance's and every agent's container is made
# from (roles/demo_service.py, roles/consul.py): changing them replaces all of them.
CHANGED = (
    "--data", "demo_environment=" + json.dumps({"LAB_ROLLED": "1"}),
    "--data", "consul_log_level=DEBUG",
)  # fmt: skip


def replaced_on(result, operation: str) -> set[str]:
    return {h for name, hosts in result.changed if operation in name for h in hosts}


def test_a_rolling_apply_under_load_loses_nothing(lab):
    spec, _, _ = lab
    spec = with_state(spec)
    with request_loop() as fresh, request_loop(keepalive=True) as kept:
        rolled = converge_lab(spec, lambda line: None, extra_args=CHANGED)
        back = converge_lab(spec, lambda line: None)
    print(f"rolling apply and back: fresh {dict(fresh.outcomes)}, keep-alive "
          f"{dict(kept.outcomes)} ({kept.retried} RFC 9112 retries)")  # fmt: skip
    for result in (rolled, back):
        assert replaced_on(result, "Run and register") == {"node1", "node2", "node3"}
        assert replaced_on(result, "Consul") >= {"node1", "node2", "node3"}
    assert fresh.failures == {} and kept.failures == {}, (fresh.outcomes, kept.outcomes)
    assert fresh.answered > 100 and kept.answered > 100
    assert set(lb_sample(30)) == ALL
