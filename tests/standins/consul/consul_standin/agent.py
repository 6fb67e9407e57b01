"""One Consul agent (client or server): membership, local state, anti-entropy, RPC routing."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import socket
import threading
import time
import uuid

from .acl import Authorizer
from .anti_entropy import StateSyncer
from .config import RuntimeConfig
from .http_api import HttpApi
from .http_server import Server
from .local_state import REAP_INTERVAL, LocalState
from .membership import STATUS_ALIVE, Member, Memberlist
from .rpc_endpoints import rpc_timeout
from .server import ConsulServer
from .tokens import TokenResolver, TokenStore
from .transport import Keyring, Transport, TransportError
from .util import (
    NO_LEADER,
    NO_SERVERS,
    REVISION,
    VERSION,
    ApiError,
    Logger,
    RPCError,
    multierror,
    random_stagger,
)


class Agent:
    def __init__(self, rc: RuntimeConfig, log: Logger) -> None:
        self.rc = rc
        self.log = log
        self.name = rc.node_name
        self.stop_event = threading.Event()
        self.leaving = False
        self.exit_code = 0
        self.persistent = bool(rc.data_dir) and not rc.dev
        self.node_id = self._load_node_id()
        role = "server" if rc.server else "client"
        keyring = Keyring.load(
            rc.encrypt, rc.data_dir if self.persistent else "", not rc.disable_keyring_file, log
        )
        self.transport = Transport(
            (rc.bind_addr, rc.serf_lan_port),
            keyring,
            rc.encrypt_verify_incoming,
            rc.encrypt_verify_outgoing,
            log,
            f"agent.{role}.memberlist.lan",
        )
        self.tokens = TokenStore(rc, rc.data_dir if self.persistent else "", log)
        self.memberlist = Memberlist(
            self.local_member(), rc.gossip, self.transport, log, role, self._member_event
        )
        self.local = LocalState(
            self.name,
            rc.data_dir if self.persistent else "",
            rc.check_update_interval,
            rc.enable_script_checks,
            log,
            self._trigger_sync,
        )
        self.syncer = StateSyncer(self)
        self.server = ConsulServer(self) if rc.server else None
        self.acl = TokenResolver(self)
        self.http_servers: list[Server] = []
        self._rpc_server: str = ""

    # -- identity --------------------------------------------------------------------
    def _load_node_id(self) -> str:
        if self.rc.node_id:
            return self.rc.node_id
        path = os.path.join(self.rc.data_dir, "node-id") if self.persistent else ""
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                existing = f.read().strip()
            if existing:
                return existing
        node_id = str(uuid.uuid4())
        if path:
            with open(path, "w", encoding="utf-8") as f:
                f.write(node_id)
        return node_id

    def local_member(self) -> Member:
        rc = self.rc
        tags = {
            "acls": "1" if rc.acl.enabled else "0",
            "build": f"{VERSION}:{REVISION}",
            "dc": rc.datacenter,
            "ft_fs": "1",
            "ft_si": "1",
            "id": self.node_id,
            "role": "consul" if rc.server else "node",
            "segment": "",
            "vsn": "2",
            "vsn_max": "3",
            "vsn_min": "2",
            "wan_join_port": str(rc.serf_wan_port),
        }
        if rc.server:
            tags.update({"port": str(rc.server_port), "raft_vsn": "3", "use_tls": "0"})
            if rc.bootstrap_expect:
                tags["expect"] = str(rc.bootstrap_expect)
            if rc.bootstrap:
                tags["bootstrap"] = "1"
        return Member(self.name, rc.advertise_addr, rc.serf_lan_port, tags, STATUS_ALIVE)

    def tagged_addresses(self) -> dict:
        a = self.rc.advertise_addr
        return {"lan": a, "lan_ipv4": a, "wan": a, "wan_ipv4": a}

    def node_meta(self) -> dict:
        return dict({"consul-network-segment": ""}, **self.rc.node_meta)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        rc = self.rc
        self.transport.start()
        # As agent.Start does: services and checks are loaded before the HTTP servers
        # listen, so no client ever sees a service without its restored checks.
        self.local.restore(self.rc.services, self.rc.checks)
        if rc.http_port > 0:
            api = HttpApi(self)
            for addr in rc.client_addrs:
                self.http_servers.append(Server((addr, rc.http_port), api.dispatch))
        for srv in self.http_servers:
            threading.Thread(
                target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
            ).start()
        self.memberlist.start()
        if self.server:
            self.server.start()
        self.syncer.start()
        threading.Thread(target=self._reaper, name="reaper", daemon=True).start()

    def shutdown(self) -> None:
        self.stop_event.set()
        with self.local.lock:
            for cs in self.local.checks.values():
                self.local._stop(cs)
        self.memberlist.shutdown()
        if self.server:
            self.server.shutdown()
        for srv in self.http_servers:
            with contextlib.suppress(OSError):
                srv.shutdown()
                srv.server_close()
        self.transport.stop()

    def leave(self) -> None:
        """Graceful leave: tell the pool we left; a server then drains RPC traffic."""
        self.log.info("agent", "Gracefully shutting down agent...")
        self.leaving = True
        self.memberlist.leave()
        if self.server:
            self.log.info(
                "agent.server",
                "Waiting to drain RPC traffic",
                drain_time=f"{self.rc.leave_drain_time:g}s",
            )
            time.sleep(self.rc.leave_drain_time)
        self.log.info("agent", "Graceful leave complete")

    def _reaper(self) -> None:
        """agent.go reapServices: every check_reap_interval."""
        while not self.stop_event.wait(REAP_INTERVAL):
            for sid, cid in self.local.reap():
                try:
                    self.local.remove_service(sid)
                except (ApiError, OSError) as e:
                    self.log.error(
                        "agent",
                        "unable to deregister service after check has been critical for too long",
                        service=sid,
                        error=str(e),
                    )
                    continue
                self.log.info(
                    "agent",
                    "Check for service has been critical for too long; deregistered service",
                    service=sid,
                    check=cid,
                )

    def _trigger_sync(self) -> None:
        self.syncer.sync_changes.set()

    def _member_event(self, kind: str, member: Member) -> None:
        if self.server:
            self.server.member_event(kind, member)
        if kind == "join" and member.tags.get("role") == "consul":
            self.syncer.sync_full.set()  # ServerUp: agent.go sync.SyncFull.Trigger

    # -- joining -----------------------------------------------------------------------
    def _resolve(self, addr: str) -> list[tuple[str, int]]:
        addr = addr.strip()
        if addr.startswith("provider="):
            self.log.error(
                "agent", "cloud auto-join is not supported by the Consul stand-in", address=addr
            )
            return []
        host, port = addr, self.rc.serf_lan_port
        m = re.fullmatch(r"\[(.+)\](?::(\d+))?", addr)
        if m:
            host, port = m.group(1), int(m.group(2) or port)
        elif addr.count(":") == 1:
            host, p = addr.split(":")
            port = int(p)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return []
        out: list[tuple[str, int]] = []
        for info in infos:
            target = (str(info[4][0]), port)
            if target not in out:
                out.append(target)
        return out

    def join(self, addrs: list[str]) -> tuple[int, list[str]]:
        targets = [t for a in addrs for t in self._resolve(a)]
        self.log.info("agent", "(LAN) joining", lan_addresses=f"[{' '.join(addrs)}]")
        joined, errors = self.memberlist.join(targets)
        if joined:
            self.log.info("agent", "(LAN) joined", number_of_nodes=joined)
        else:
            detail = multierror(errors) if errors else "No members could be joined"
            # hclog quotes a value like strconv.Quote does.
            self.log.warn(
                "agent", "(LAN) couldn't join", number_of_nodes=0, error=json.dumps(detail)
            )
        return joined, errors

    def start_join(self) -> bool:
        """-join / start_join: one attempt at start; failing it fails the agent (command/agent)."""
        if not self.rc.start_join:
            return True
        self.log.info("agent", "Joining cluster...", cluster="LAN")
        joined, _ = self.join(self.rc.start_join)
        if not joined:
            return False
        self.log.info("agent", "Join completed. Initial agents synced with", agent_count=joined)
        return True

    def retry_join(self) -> None:
        addrs = list(self.rc.retry_join)
        if not addrs:
            return
        self.log.info("agent", "Joining cluster...", cluster="LAN")
        attempt = 0
        while not self.stop_event.is_set():
            attempt += 1
            joined, _ = self.join(addrs)
            if joined:
                self.log.info(
                    "agent",
                    "Join cluster completed. Synced with initial agents",
                    cluster="LAN",
                    num_agents=joined,
                )
                return
            if self.rc.retry_max and attempt >= self.rc.retry_max:
                self.log.error("agent", "Could not join cluster: retry_max reached", cluster="LAN")
                self.exit_code = 1
                self.stop_event.set()
                return
            self.log.warn(
                "agent",
                "Join cluster failed, will retry",
                cluster="LAN",
                retry_interval=f"{self.rc.retry_interval:g}s",
                error='"No members could be joined"',
            )
            self.stop_event.wait(self.rc.retry_interval)

    # -- RPC ---------------------------------------------------------------------------
    def known_servers(self) -> list[Member]:
        return [
            m
            for m in self.memberlist.member_list()
            if m.tags.get("role") == "consul"
            and m.status == STATUS_ALIVE
            and m.tags.get("dc") == self.rc.datacenter
        ]

    def rpc(self, method: str, args: dict) -> dict:
        """Run a server RPC: here on a server, else through one server (client.go RPC)."""
        args = dict(args, Datacenter=self.rc.datacenter)
        if self.server:
            return self.server.handle_rpc(method, args)
        first = time.monotonic()
        while True:
            servers = self.known_servers()
            if not servers:
                raise RPCError(NO_SERVERS)
            server = next((s for s in servers if s.name == self._rpc_server), None)
            if server is None:
                server = random.choice(servers)
                self._rpc_server = server.name
            try:
                answer = self.transport.send(
                    server.addr,
                    server.port,
                    "stream/rpc",
                    {"method": method, "args": args},
                    rpc_timeout(args),
                )
            except TransportError as e:
                self._rpc_server = ""  # manager.NotifyFailedServer: try another next time
                self.log.error(
                    "agent.client",
                    "RPC failed to server",
                    method=method,
                    server=f"{server.addr}:{server.tags.get('port', '8300')}",
                    error=f'"{e}"',
                )
                if str(e) == "EOF" and time.monotonic() - first < self.rc.rpc_hold_timeout:
                    continue
                raise RPCError(
                    e.rpc_text(f"{server.addr}:{server.tags.get('port', '8300')}")
                ) from None
            if "Error" not in answer:
                return answer
            err = f"rpc error making call: {answer['Error']}"
            if NO_LEADER in err and time.monotonic() - first < self.rc.rpc_hold_timeout:
                time.sleep(random_stagger(self.rc.rpc_hold_timeout / 16))
                continue
            raise RPCError(err)

    def resolve(self, token: str) -> Authorizer:
        """The authorizer for a request's token (the default token when it has none)."""
        return self.acl.resolve(token)

    def accessor_id(self, token: str) -> str:
        return self.acl.accessor_id(token)
