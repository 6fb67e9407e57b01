"""Test-only stand-in for the HashiCorp Consul binary. This is NOT HashiCorp Consul.

A standard-library-only Python program with the part of `consul`'s command
line and HTTP API v1 the lab uses, split by concern as Consul's own tree is:

    cli.py, cli_agent.py      command line (agent/command)
    config.py                 config files and flags (agent/config)
    definitions.py            service and check definitions (agent/structs)
    http_server.py, http_api.py, http_agent.py, http_acl.py   HTTP API (agent/*_endpoint.go)
    agent.py                  one agent: wiring, joins, RPC routing (agent/agent.go)
    local_state.py            the agent's services and checks (agent/local)
    checks.py                 check runners (agent/checks)
    anti_entropy.py           syncing the catalog (agent/ae, agent/local)
    membership.py             memberlist + Serf failure detection
    transport.py              agent-to-agent messages, gossip key
    leadership.py             Raft
    server.py, rpc_endpoints.py   server duties and RPCs (agent/consul)
    state_store.py            catalog tables and indexes (agent/consul/state)
    acl.py, acl_store.py, tokens.py   ACLs (acl/, agent/consul/acl*.go, agent/token)

See README.md next to this package for what is implemented and how it differs.
"""
