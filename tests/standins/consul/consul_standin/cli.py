"""The `consul` command line: agent, validate, members, operator raft list-peers, ...

HTTP client commands take -http-addr (else CONSUL_HTTP_ADDR, else
127.0.0.1:8500) and -token / -token-file (else CONSUL_HTTP_TOKEN /
CONSUL_HTTP_TOKEN_FILE); a token file's content wins over a token, as
Consul's api.NewClient does. API errors go to stderr with exit code 1.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from .cli_agent import cmd_agent
from .config import build_runtime_config, load_paths
from .flags import FlagError, parse_go_flags
from .membership import STATUS_NAMES
from .util import REVISION, VERSION, ConfigError, go_url_error, interface_ipv4

API_FLAGS = {
    "http-addr": "str",
    "token": "str",
    "token-file": "str",
    "ca-file": "str",
    "ca-path": "str",
    "client-cert": "str",
    "client-key": "str",
    "tls-server-name": "str",
    "datacenter": "str",
    "stale": "bool",
    "namespace": "str",
    "partition": "str",
}

COMMANDS = {
    "agent": "Runs a Consul agent",
    "catalog": "Interact with the catalog",
    "info": "Provides debugging information for operators.",
    "join": "Tell Consul agent to join cluster",
    "keygen": "Generates a new encryption key",
    "leave": "Gracefully leaves the Consul cluster and shuts down",
    "members": "Lists the members of a Consul cluster",
    "operator": "Provides cluster-level tools for Consul operators",
    "validate": "Validate config files/directories",
    "version": "Prints the Consul version",
}

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def usage() -> str:
    lines = ["Usage: consul [--version] [--help] <command> [<args>]", "", "Available commands are:"]
    width = max(len(c) for c in COMMANDS)
    for name, text in COMMANDS.items():
        lines.append(f"    {name.ljust(width)}    {text}")
    lines.append("")
    lines.append("(This is a test-only Consul stand-in; only the commands above exist.)")
    return "\n".join(lines)


class ApiClientError(Exception):
    pass


class ApiClient:
    """The few parts of Consul's api package the commands need."""

    def __init__(self, opts: dict) -> None:
        addr = opts.get("http-addr") or os.environ.get("CONSUL_HTTP_ADDR") or "127.0.0.1:8500"
        if "://" not in addr:
            ssl_on = os.environ.get("CONSUL_HTTP_SSL", "").lower() in ("1", "true")
            addr = ("https://" if ssl_on else "http://") + addr
        self.base = addr.rstrip("/")
        self.token = opts.get("token") or os.environ.get("CONSUL_HTTP_TOKEN", "")
        token_file = opts.get("token-file") or os.environ.get("CONSUL_HTTP_TOKEN_FILE", "")
        if token_file:
            try:
                with open(token_file, encoding="utf-8") as f:
                    content = f.read().strip()
            except OSError as e:
                raise ApiClientError(
                    f"Error loading token file: open {token_file}: {(e.strerror or str(e)).lower()}"
                ) from None
            self.token = content or self.token

    def call(self, method: str, path: str, query: dict | None = None) -> Any:
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"X-Consul-Token": self.token} if self.token else {}
        req = urllib.request.Request(
            url, method=method, data=b"" if method == "PUT" else None, headers=headers
        )
        try:
            with _OPENER.open(req, timeout=30) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            raise ApiClientError(f"Unexpected response code: {e.code} ({text})") from None
        except (urllib.error.URLError, OSError) as e:
            raise ApiClientError(go_url_error(method, url, e)) from None
        try:
            return json.loads(body) if body else None
        except ValueError:
            return body.decode("utf-8", "replace")


def columnize(rows: list[list[str]]) -> str:
    """Format rows like ryanuber/columnize with a two-space glue."""
    widths = [0] * max(len(r) for r in rows)
    for r in rows:
        for i, cell in enumerate(r[:-1]):
            widths[i] = max(widths[i], len(cell))
    out = []
    for r in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(r[:-1])] + [r[-1]]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def parse_cli(
    args: list[str], spec: dict[str, str], help_text: str
) -> tuple[dict[str, Any], list[str]] | int:
    try:
        flags, rest = parse_go_flags(args, spec)
    except FlagError as e:
        if str(e) == "help":
            print(help_text)
            return 0
        print(str(e), file=sys.stderr)
        print(help_text, file=sys.stderr)
        return 1
    values: dict[str, Any] = {}
    for name, value in flags:
        if spec[name] == "list":
            values.setdefault(name, []).append(value)
        else:
            values[name] = value
    return values, rest


def api_command(
    args: list[str], spec: dict[str, str], help_text: str
) -> tuple[dict[str, Any], list[str], ApiClient] | int:
    """Flags and an API client for an HTTP command, or its exit code."""
    parsed = parse_cli(args, spec, help_text)
    if isinstance(parsed, int):
        return parsed
    opts, rest = parsed
    try:
        return opts, rest, ApiClient(opts)
    except ApiClientError as e:
        print(f"Error connecting to Consul agent: {e}", file=sys.stderr)
        return 1


def cmd_version(args: list[str]) -> int:
    parsed = parse_cli(args, {"format": "str"}, "Usage: consul version [options]")
    if isinstance(parsed, int):
        return parsed
    opts, _ = parsed
    if opts.get("format") == "json":
        print(
            json.dumps(
                {
                    "Version": VERSION,
                    "Revision": REVISION,
                    "Prerelease": "",
                    "RPC": {"Default": 2, "Min": 2, "Max": 3},
                },
                indent=2,
            )
        )
        return 0
    print(f"Consul v{VERSION}")
    print(f"Revision {REVISION}")
    print(
        "Protocol 2 spoken by default, understands 2 to 3 (agent will automatically use "
        "protocol >2 when speaking to compatible agents)"
    )
    return 0


def cmd_validate(args: list[str]) -> int:
    parsed = parse_cli(
        args,
        {"quiet": "bool", "config-format": "str"},
        "Usage: consul validate [options] FILE_OR_DIRECTORY...",
    )
    if isinstance(parsed, int):
        return parsed
    opts, paths = parsed
    if not paths:
        print("Must specify at least one config file or directory", file=sys.stderr)
        return 1
    try:
        rc = build_runtime_config(load_paths(paths), dev=False, require_data_dir=False)
    except ConfigError as e:
        print(f"Config validation failed: {e}", file=sys.stderr)
        return 1
    if not opts.get("quiet"):
        for warning in rc.warnings:
            print(warning, file=sys.stderr)
        print("Configuration is valid!")
    return 0


def cmd_keygen(args: list[str]) -> int:
    """A new gossip key: 32 random bytes, base64 (command/keygen)."""
    parsed = parse_cli(args, {}, "Usage: consul keygen")
    if isinstance(parsed, int):
        return parsed
    print(base64.b64encode(secrets.token_bytes(32)).decode())
    return 0


def cmd_members(args: list[str]) -> int:
    spec = dict(API_FLAGS, detailed="bool", status="str", wan="bool", segment="str", filter="str")
    parsed = api_command(args, spec, "Usage: consul members [options]")
    if isinstance(parsed, int):
        return parsed
    opts, _, client = parsed
    try:
        pattern = re.compile(opts.get("status", ".*"))
    except re.error as e:
        print(f"Failed to compile status regexp: {e}", file=sys.stderr)
        return 1
    query = {"wan": "1"} if opts.get("wan") else {"segment": "_all"}
    try:
        members = client.call("GET", "/v1/agent/members", query)
    except ApiClientError as e:
        print(f"Error retrieving members: {e}", file=sys.stderr)
        return 1
    rows = []
    for m in members or []:
        status = STATUS_NAMES.get(m.get("Status"), "unknown")
        if pattern.search(status):
            rows.append((m, status))
    if not rows:
        return 2
    if opts.get("detailed"):
        table = [["Node", "Address", "Status", "Tags"]]
        for m, status in sorted(rows, key=lambda r: r[0]["Name"]):
            tags = ",".join(f"{k}={v}" for k, v in sorted(m.get("Tags", {}).items()))
            table.append([m["Name"], f"{m['Addr']}:{m['Port']}", status, tags])
        print(columnize(table))
        return 0
    entries = []
    for m, status in rows:
        tags = m.get("Tags", {})
        server = tags.get("role") == "consul"
        segment = "<all>" if server else (tags.get("segment") or "<default>")
        entries.append(
            (
                "default",
                segment,
                m["Name"],
                [
                    m["Name"],
                    f"{m['Addr']}:{m['Port']}",
                    status,
                    "server" if server else "client",
                    tags.get("build", "").split(":")[0],
                    tags.get("vsn", "2"),
                    tags.get("dc", ""),
                    "default",
                    segment,
                ],
            )
        )
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    table = [
        ["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition", "Segment"]
    ]
    table.extend(e[3] for e in entries)
    print(columnize(table))
    return 0


def cmd_operator(args: list[str]) -> int:
    if len(args) < 2 or args[0] != "raft" or args[1] != "list-peers":
        print(
            "Usage: consul operator raft list-peers [options]\n\n"
            "(the Consul stand-in implements only 'operator raft list-peers')",
            file=sys.stderr,
        )
        return 1
    parsed = api_command(args[2:], API_FLAGS, "Usage: consul operator raft list-peers [options]")
    if isinstance(parsed, int):
        return parsed
    opts, _, client = parsed
    try:
        conf = client.call(
            "GET", "/v1/operator/raft/configuration", {"stale": ""} if opts.get("stale") else None
        )
    except ApiClientError as e:
        print(f"Error getting peers: Failed to retrieve raft configuration: {e}", file=sys.stderr)
        return 1
    table = [["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]]
    for s in conf.get("Servers", []):
        table.append(
            [
                s["Node"],
                s["ID"],
                s["Address"],
                "leader" if s.get("Leader") else "follower",
                str(bool(s.get("Voter"))).lower(),
                s.get("ProtocolVersion", "3"),
            ]
        )
    print(columnize(table))
    return 0


def cmd_leave(args: list[str]) -> int:
    parsed = api_command(args, API_FLAGS, "Usage: consul leave [options]")
    if isinstance(parsed, int):
        return parsed
    _, rest, client = parsed
    if rest:
        print(f"Error! Extra arguments: {rest}", file=sys.stderr)
        return 1
    try:
        client.call("PUT", "/v1/agent/leave")
    except ApiClientError as e:
        print(f"Error leaving: {e}", file=sys.stderr)
        return 1
    print("Graceful leave complete")
    return 0


def cmd_join(args: list[str]) -> int:
    parsed = api_command(
        args, dict(API_FLAGS, wan="bool"), "Usage: consul join [options] address ..."
    )
    if isinstance(parsed, int):
        return parsed
    _, addrs, client = parsed
    if not addrs:
        print("At least one address to join must be specified.", file=sys.stderr)
        return 1
    joined = 0
    for addr in addrs:
        try:
            client.call("PUT", "/v1/agent/join/" + urllib.parse.quote(addr, safe=":[]"))
            joined += 1
        except ApiClientError as e:
            print(f"Error joining address '{addr}': {e}", file=sys.stderr)
    if not joined:
        print("Failed to join any nodes.", file=sys.stderr)
        return 1
    print(f"Successfully joined cluster by contacting {joined} nodes.")
    return 0


def cmd_catalog(args: list[str]) -> int:
    if not args or args[0] not in ("services", "nodes", "datacenters"):
        print("Usage: consul catalog <services|nodes|datacenters> [options]", file=sys.stderr)
        return 1
    parsed = api_command(
        args[1:], dict(API_FLAGS, tags="bool", detailed="bool"), f"Usage: consul catalog {args[0]}"
    )
    if isinstance(parsed, int):
        return parsed
    opts, _, client = parsed
    try:
        if args[0] == "datacenters":
            print("\n".join(client.call("GET", "/v1/catalog/datacenters")))
        elif args[0] == "services":
            services = client.call("GET", "/v1/catalog/services")
            if opts.get("tags"):
                print(
                    columnize(
                        [[name, ",".join(sorted(tags))] for name, tags in sorted(services.items())]
                    )
                )
            else:
                print("\n".join(sorted(services)))
        else:
            table = [["Node", "ID", "Address", "DC"]]
            for n in client.call("GET", "/v1/catalog/nodes"):
                table.append([n["Node"], n["ID"][:8], n["Address"], n["Datacenter"]])
            print(columnize(table))
    except ApiClientError as e:
        print(f"Error listing {args[0]}: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_info(args: list[str]) -> int:
    parsed = api_command(args, API_FLAGS, "Usage: consul info [options]")
    if isinstance(parsed, int):
        return parsed
    _, _, client = parsed
    try:
        self_info = client.call("GET", "/v1/agent/self")
    except ApiClientError as e:
        print(f"Error querying agent: {e}", file=sys.stderr)
        return 1
    for section in sorted(self_info.get("Stats", {})):
        print(f"{section}:")
        for key, value in sorted(self_info["Stats"][section].items()):
            print(f"\t{key} = {value}")
    return 0


def cmd_standin_iface_addr(args: list[str]) -> int:
    """Hidden helper for docker-entrypoint.sh: print an interface's IPv4."""
    ip = interface_ipv4(args[0]) if len(args) == 1 else None
    if not ip:
        return 1
    print(ip)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return 127
    if argv[0] in ("-v", "--version", "-version"):
        return cmd_version([])
    if argv[0] in ("-h", "--help", "-help", "help"):
        print(usage(), file=sys.stderr)
        return 0
    handlers: dict[str, Callable[[list[str]], int]] = {
        "agent": cmd_agent,
        "version": cmd_version,
        "validate": cmd_validate,
        "keygen": cmd_keygen,
        "members": cmd_members,
        "operator": cmd_operator,
        "leave": cmd_leave,
        "join": cmd_join,
        "catalog": cmd_catalog,
        "info": cmd_info,
        "standin-iface-addr": cmd_standin_iface_addr,
    }
    handler = handlers.get(argv[0])
    if handler is None:
        print(usage(), file=sys.stderr)
        return 127
    return handler(argv[1:])
