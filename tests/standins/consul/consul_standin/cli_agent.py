"""`consul agent`: configuration, banner, start, joins, signals and shutdown (command/agent)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from .agent import Agent
from .config import RuntimeConfig, agent_config_from_args
from .flags import FlagError
from .util import VERSION, ConfigError, Logger


def _print_banner(rc: RuntimeConfig, node_id: str, gossip: bool) -> None:
    lines = [
        "==> Starting Consul agent...",
        f"           Version: '{VERSION}'",
        f"           Node ID: '{node_id}'",
        f"         Node name: '{rc.node_name}'",
        f"        Datacenter: '{rc.datacenter}' (Segment: '{'<all>' if rc.server else ''}')",
        f"            Server: {str(rc.server).lower()} (Bootstrap: {str(rc.bootstrap).lower()})",
        f"       Client Addr: [{' '.join(rc.client_addrs)}] (HTTP: {rc.http_port}, HTTPS: -1, "
        f"gRPC: {rc.grpc_port}, DNS: {rc.dns_port})",
        f"      Cluster Addr: {rc.advertise_addr} "
        f"(LAN: {rc.serf_lan_port}, WAN: {rc.serf_wan_port})",
        f"           Encrypt: Gossip: {str(gossip).lower()}, TLS-Outgoing: false, "
        "TLS-Incoming: false, Auto-Encrypt-TLS: false",
        "",
        "==> NOTE: this is a test-only Consul stand-in, not HashiCorp Consul",
        "==> Log data will now stream in as it occurs:",
        "",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def cmd_agent(args: list[str]) -> int:
    try:
        rc = agent_config_from_args(args)
    except FlagError as e:
        if str(e) == "help":
            print(
                "Usage: consul agent [options]\n\n"
                "  Starts the Consul agent and runs until an interrupt is received."
            )
            return 0
        print(f"==> {e}", file=sys.stderr)
        return 1
    except ConfigError as e:
        msg = str(e)
        if "invalid config key" in msg or msg.startswith("failed to parse"):
            msg = f"Config validation failed: {msg}"
        print(f"==> {msg}", file=sys.stderr)
        return 1
    log = Logger(rc.log_level)
    if rc.data_dir and not rc.dev:
        try:
            os.makedirs(rc.data_dir, exist_ok=True)
        except OSError as e:
            print(f"==> Error creating data_dir {rc.data_dir!r}: {e.strerror}", file=sys.stderr)
            return 1
    for warning in rc.warnings:
        print(f"==> {warning}")
    try:
        agent = Agent(rc, log)
    except ValueError as e:  # the gossip keyring
        print(f"==> Error starting agent: Failed to configure keyring: {e}", file=sys.stderr)
        return 1
    signals: list[int] = []

    def _on_signal(signum: int, _frame: Any) -> None:
        signals.append(signum)
        if len(signals) > 1:
            os._exit(1)
        agent.stop_event.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(
        signal.SIGHUP,
        lambda *_: log.info("agent", "Caught signal: hangup (reload is a no-op in the stand-in)"),
    )
    _print_banner(rc, agent.node_id, agent.transport.encrypted)
    try:
        agent.start()
    except OSError as e:
        print(f"==> Error starting agent: {e.strerror or e}", file=sys.stderr)
        agent.shutdown()
        return 1
    if rc.pid_file:
        try:
            with open(rc.pid_file, "w", encoding="utf-8") as f:
                f.write(str(os.getpid()))
        except OSError:
            pass
    log.info(
        "agent",
        "Started HTTP server",
        address=",".join(f"{a}:{rc.http_port}" for a in rc.client_addrs),
        network="tcp",
    )
    log.info("agent", "started state syncer")
    log.info("agent", "Consul agent running!")
    if not agent.start_join():
        agent.shutdown()
        sys.stdout.flush()
        os._exit(1)
    threading.Thread(target=agent.retry_join, name="retry-join", daemon=True).start()
    while not agent.stop_event.wait(0.5):
        pass
    code = agent.exit_code
    if signals:
        sig = signals[0]
        log.info(
            "agent", f"Caught signal: {'terminated' if sig == signal.SIGTERM else 'interrupt'}"
        )
        graceful = (
            rc.leave_on_terminate if sig == signal.SIGTERM else not rc.skip_leave_on_interrupt
        )
        if graceful:
            agent.leave()
            code = 0
        else:
            code = 1
    log.info("agent", "Requesting shutdown")
    agent.shutdown()
    log.info("agent", "shutdown complete")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
