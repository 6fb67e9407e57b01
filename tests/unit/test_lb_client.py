"""labctl.lb_client: how labctl asks the LB."""

from __future__ import annotations

import httpx

from labctl import lb_client


def test_a_sample_opens_a_connection_per_request_and_counts_by_instance():
    """nginx closes idle keep-alive connections at every reload: a sample sent on one
    connection would count that race as a failure of the LB (it failed test_40 once)."""
    asked = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("Connection"))
        instance = f"zhibo-{len(asked) % 2 + 1}"
        return httpx.Response(200, headers={"X-Instance": instance}) if len(asked) < 5 else (
            httpx.Response(502)
        )

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        seen = lb_client.sample(client, "192.168.56.4", "zhibo_service", 5)
    assert asked == ["close"] * 5
    assert seen == {"zhibo-1": 2, "zhibo-2": 2, "HTTP 502": 1}
