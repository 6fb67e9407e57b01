"""Host boxes: a lab host baked once, as the seed bakes its VMs ("install one machine
completely, then `vagrant package` it for the other two").

On the docker road a box is two things on this machine's engine, both labelled with
the lab (BOX_OF) and the box's key (BOX_KEY):
- an image, `<namespace>/box-<lab>:<key>`: the host container as the first converge of
  a host left it (the engine installed and configured by the docker role), committed
  with the engine stopped, SSH host keys out and the box's own login key in;
- a volume, `<lab>-box-<key>`: in `engine/`, a copy of that host's /var/lib/docker,
  every image the lab's hosts run loaded in it. The nested engine's data is a volume
  (overlay2 cannot sit on the container's own overlay), which `docker commit` leaves
  out; and it cannot go into an image layer either: its overlay2 whiteouts and opaque
  directories would be taken for the outer layer's own and lost.

Each host made from the box keeps its engine data in the box's volume too, in
`hosts/<host>/`, which its own volume names (a bind volume of Docker's local driver):
one file system, so that the contents of image layers, which the engine never changes,
are hard links to the box's, and only the rest (the engine's databases, a few MB) is
copied. Linux refuses hard links between two mounts, and each volume is one. `down`
removes the hosts' data; the box's own stays.

The key hashes what the box holds: the host template and its base image, the docker
role's settings (packages, daemon options) and the ID of every image the lab runs. A
changed spec or version has another key, so another box: a host is never made from a
stale one. `down` keeps a lab's boxes as a cache (the newest CACHE_BOUND, never one a
container uses); `down --purge` and `labctl box remove` remove them.

The box's login key is an Ed25519 key pair labctl makes with the box: the public half
in the image's authorized_keys, the private half in CACHE/box-keys (0600), gone with
the box. Vagrant logs in to every host made from the box with it and inserts no key of
its own, as with a box `vagrant package` made, which carries its key (seconds per host).

On the virtualbox road a box is a Vagrant box: labctl/virtualbox_box.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import docker
from docker.errors import DockerException, NotFound

from labctl import system
from labctl.host_data import role_settings
from labctl.images.tags import image_namespace
from labctl.paths import CACHE, host_container_name, host_volume_name, read_state
from labctl.spec import PROJECT_ROOT, LabSpec
from roles.contract import LAB_LABEL

Report = Callable[[str], None]

# Labels on a box's image and volume: the lab it belongs to, and its full key.
BOX_OF = "io.labctl.box-of"
BOX_KEY = "io.labctl.box"
# On the image: the engine's packages and versions, as installed in it.
BOX_ENGINE = "io.labctl.box.engine"
# Boxes `down` keeps per lab; older ones go (never one a container runs from).
CACHE_BOUND = 2
# How many of the key's hex digits name a box; what a user may type for one.
KEY_DIGITS = 16
KEY_RE = re.compile(r"[0-9a-f]{4,64}")
HOST_TEMPLATE = PROJECT_ROOT / "templates" / "host"
DOCKER_ROLE = PROJECT_ROOT / "roles" / "docker.py"
# The docker role's settings that say nothing about what is installed.
NOT_IN_BOX = {"docker_apt_proxy"}
ENGINE_PACKAGES = ("docker.io", "containerd", "runc")
# The private halves of the boxes' login keys, one file per box.
BOX_KEYS = CACHE / "box-keys"
# In a box's volume: the boxed host's engine data, and that of each host made from it.
ENGINE = "engine"
HOSTS = "hosts"
# What a box's volume holds, and how (its key changes with it): data at the root was 1.
LAYOUT = f"{ENGINE}/ and {HOSTS}/<host>/, image layers linked"


class BoxError(Exception):
    """A box could not be made, used or removed; the message says what and what to do."""


@dataclass(frozen=True)
class KeyedBox:
    """A box of either road as labctl names it: its lab and its key (its first
    KEY_DIGITS shown, and typed by a user)."""

    lab: str
    key: str

    @property
    def short(self) -> str:
        return self.key[:KEY_DIGITS]


@dataclass(frozen=True)
class Box(KeyedBox):
    """A box on the docker road: an image and a volume of this machine's engine."""

    @property
    def image(self) -> str:
        return f"{image_namespace()}/box-{self.lab}:{self.short}"

    @property
    def volume(self) -> str:
        return f"{self.lab}-box-{self.short}"

    @property
    def labels(self) -> dict[str, str]:
        return {BOX_OF: self.lab, BOX_KEY: self.key}

    @property
    def login_key(self) -> Path:
        """The private key Vagrant logs in to the hosts made from this box with."""
        return BOX_KEYS / f"{self.lab}-{self.short}"


@dataclass(frozen=True)
class BoxPlan:
    """What `up` does about a box: make its hosts from `box` (`found`), or make it;
    `note` says which, or why there is none."""

    box: Box | None
    note: str
    found: bool = False

    @property
    def from_box(self) -> str | None:
        return self.box.image if self.box and self.found else None

    @property
    def to_make(self) -> bool:
        return self.box is not None and not self.found


def no_box_reason(provider: str, state: dict) -> str | None:
    """Why this lab keeps no box, or None when it does."""
    if provider == "ssh":
        return "the ssh road's machines exist already: no box"
    if provider not in ("docker", "virtualbox"):
        return f"the {provider} road keeps no box"
    if state.get("delivery") != "control":
        return "the hosts resolve their images themselves, so no box holds them"
    return None


def box_key(spec: LabSpec, state: dict, client: docker.DockerClient) -> str:
    """The hash of everything a box holds (see the module's docstring)."""
    template = hashlib.sha256()
    for path in sorted(p for p in HOST_TEMPLATE.rglob("*") if p.is_file()):
        template.update(path.relative_to(HOST_TEMPLATE).as_posix().encode() + b"\0")
        template.update(path.read_bytes())
    made_from = {
        "template": template.hexdigest(),
        "base_image": client.images.get(spec.docker.base_image).id,
        "layout": LAYOUT,
    }
    return key_of(spec, state, made_from)


def key_of(spec: LabSpec, state: dict, made_from: dict) -> str:
    """The hash of a box of a host made from `made_from` (each road says what that is)
    with the engine and images the docker role put in it."""
    # The docker role as a whole (its packages, defaults and daemon options are in its
    # source: labctl reads it as a file, it imports only the roles' contract), and the
    # settings labctl gives it.
    engine = {k: v for k, v in role_settings(spec, state).items() if k not in NOT_IN_BOX}
    held = made_from | {
        "docker_role": hashlib.sha256(DOCKER_ROLE.read_bytes()).hexdigest(),
        "engine": engine,
        "images": sorted((i["ref"], i["id"]) for i in state.get("images", {}).values()),
    }
    return hashlib.sha256(json.dumps(held, sort_keys=True).encode()).hexdigest()


def exists(client: docker.DockerClient, box: Box) -> bool:
    """The box's image and volume are here, and they are this box's; so is its key."""
    try:
        image = client.images.get(box.image)
        volume = client.volumes.get(box.volume)
    except NotFound:
        return False
    owned = (image.labels.get(BOX_KEY), (volume.attrs.get("Labels") or {}).get(BOX_KEY))
    return owned == (box.key, box.key) and box.login_key.is_file()


def unplanned(provider: str, state: dict, use: bool) -> BoxPlan | None:
    """The plan of an `up` that neither makes nor uses a box (and why); None otherwise."""
    if not use:
        return BoxPlan(None, "not used (--no-box): everything installed from scratch")
    if reason := no_box_reason(provider, state):
        return BoxPlan(None, reason)
    return None


def plan(spec: LabSpec, provider: str, state: dict, use: bool) -> BoxPlan:
    """The box of a fresh `up`: found, to be made, or none (and why)."""
    if none := unplanned(provider, state, use):
        return none
    client = system.ensure_engine()
    box = Box(spec.name, box_key(spec, state, client))
    if exists(client, box):
        return BoxPlan(box, f"hosts made from {box.image}", found=True)
    return BoxPlan(box, f"none for this spec yet: {box.image} is kept after the engine install")


# A host's engine data made from the box's, in the box's volume (mounted at /box): the
# contents of image layers (overlay2/<cache-id>/diff, for every layer of the engine's
# layer database) hard-linked, since the engine never writes them; all else copied,
# containers' layers too. The hosts named in "$@", in parallel; a host's data left by an
# interrupted run is made again.
HOSTS_DATA = r"""set -e
cd /box/engine
for id in image/overlay2/layerdb/sha256/*/cache-id; do
  if [ -e "$id" ]; then echo "./overlay2/$(cat "$id")/diff"; fi
done > /tmp/layers
pids=
for host in "$@"; do
  (
    set -e
    to=/box/hosts/$host
    rm -rf "$to" && mkdir -p "$to"
    tar --xattrs --xattrs-include='*' --exclude-from=/tmp/layers -cf - . |
      tar --xattrs --xattrs-include='*' -xpf - -C "$to"
    while read -r layer; do cp -al "$layer" "$to/$layer"; done < /tmp/layers
  ) &
  pids="$pids $!"
done
for p in $pids; do wait "$p"; done
"""


def fill_volumes(spec: LabSpec, box: Box) -> float:
    """Each host's /var/lib/docker volume, made from the box's engine data (HOSTS_DATA)
    before its host is made; hosts whose volume exists already (a host up before) keep
    theirs. Returns the seconds it took."""
    client = system.ensure_engine()
    started = time.monotonic()
    targets = {}
    for host in spec.hosts:
        name = host_volume_name(spec, host.name)
        try:
            client.volumes.get(name)
        except NotFound:
            targets[host.name] = name
    if not targets:
        return 0.0
    mounts = {box.volume: {"bind": "/box", "mode": "rw"}}
    command = ["sh", "-c", HOSTS_DATA, "sh", *targets]
    _run_helper(client, box.image, command, mounts, spec.name, "copying the box's engine data")
    made = []
    try:
        data = client.volumes.get(box.volume).attrs["Mountpoint"]
        for host, name in targets.items():
            made.append(client.volumes.create(
                name=name, driver="local", labels={LAB_LABEL: spec.name},
                driver_opts={"type": "none", "o": "bind", "device": f"{data}/{HOSTS}/{host}"},
            ))  # fmt: skip
    except DockerException as exc:
        for volume in made:  # a host made from the template must not find the box's data
            volume.remove(force=True)
        raise BoxError(f"the hosts' volumes could not be made ({exc})") from None
    return time.monotonic() - started


# Every host's data at once, then the emptied directories: unlinking a host's some 12,000
# entries is the work, and it runs on every core (6 hosts: 1.3 s one after the other,
# 0.7 s at once, on 2 cores).
CLEAR_HOSTS = r"""set -e
pids=
for hosts in "$@"; do
  for host in "$hosts"/*; do
    if [ -e "$host" ]; then rm -rf "$host" & pids="$pids $!"; fi
  done
done
for p in $pids; do wait "$p"; done
rm -rf "$@"
"""


def clear_hosts(client: docker.DockerClient, lab: str) -> None:
    """The engine data of the lab's hosts, gone from every box of the lab that no
    container runs from (`down`, once the hosts are)."""
    idle = [found.box for found in kept(client, lab) if not found.in_use]
    if idle:
        mounts = {b.volume: {"bind": f"/box{n}", "mode": "rw"} for n, b in enumerate(idle)}
        hosts_data = [f"/box{n}/{HOSTS}" for n in range(len(idle))]
        _run_helper(client, idle[0].image, ["sh", "-c", CLEAR_HOSTS, "sh", *hosts_data], mounts,
                    lab, "removing the hosts' engine data from the box")  # fmt: skip


def _run_helper(client, image: str, command: list[str], mounts: dict, lab: str, what: str) -> None:
    """A throwaway container running `command`; labelled with the lab, so that a `down`
    after an interrupted run finds it. With CAP_SYS_ADMIN: overlay2's opaque directories
    are marked with trusted.* extended attributes, which cp and tar drop without a word
    when they may not set them. Raises BoxError naming `what` failed and why."""
    try:
        client.containers.run(
            image, command, volumes=mounts, remove=True, labels={LAB_LABEL: lab},
            entrypoint=[], network_mode="none", cap_add=["SYS_ADMIN"],
        )  # fmt: skip
    except DockerException as exc:
        raise BoxError(f"{what} failed ({exc})") from None


# Run in the boxed host before its commit, and after (RESTORE) whatever happened. Its
# engine stops (its data must not change while it is copied); its SSH host keys wait in
# /run (a tmpfs, never committed) so that each host made from the box makes its own; and
# the box's login key (on stdin) stands in for the key Vagrant gave this machine.
PREPARE = """set -e
systemctl stop docker.socket docker.service
mkdir -p /run/lab-box
mv /etc/ssh/ssh_host_* /run/lab-box/
cp -p /home/vagrant/.ssh/authorized_keys /run/lab-box/authorized_keys
cat > /home/vagrant/.ssh/authorized_keys
"""
RESTORE = """set -e
if [ -d /run/lab-box ]; then
  for f in /run/lab-box/ssh_host_*; do [ -e "$f" ] && mv "$f" /etc/ssh/; done
  [ -e /run/lab-box/authorized_keys ] && cp -p /run/lab-box/authorized_keys /home/vagrant/.ssh/
  rm -rf /run/lab-box
fi
systemctl start docker.service
"""


def _exec(container: str, script: str, stdin: bytes | BinaryIO = b"") -> str:
    """`script` run as root in the host container (`stdin`: bytes, or a file to stream)."""
    feed = {"input": stdin} if isinstance(stdin, bytes) else {"stdin": stdin}
    result = subprocess.run(
        ["docker", "exec", "-i", container, "sh", "-c", script],
        capture_output=True, timeout=300, **feed,
    )  # fmt: skip
    if result.returncode != 0:
        said = result.stderr.decode(errors="replace").strip().splitlines() or ["no output"]
        raise BoxError(f"in {container}: {said[-1]}")
    return result.stdout.decode(errors="replace")


def make(spec: LabSpec, box: Box, report: Report) -> float:
    """Box the lab's first host, its engine converged and its images loaded: the images
    of the other hosts loaded in it first, so that the box serves every host. Returns
    the seconds it took."""
    client = system.ensure_engine()
    state = read_state(spec)
    source = spec.hosts[0].name
    container = host_container_name(spec, source)
    started = time.monotonic()
    for host, archive in sorted(state.get("image_archives", {}).items()):
        if host != source and archive:
            report(f"box: loading {host}'s images into {source}")
            with open(archive, "rb") as data:
                _exec(container, "docker load -q", data)
    versions = _exec(
        container, "dpkg-query -W -f '${Package}=${Version} ' " + " ".join(ENGINE_PACKAGES)
    ).strip()
    report(f"box: committing {source} as {box.image}")
    try:
        _remove(client, box)  # what is left of this box (exists() said no): made anew
        _exec(container, PREPARE, _new_login_key(box))
        labels = box.labels | {BOX_ENGINE: versions}
        client.containers.get(container).commit(
            repository=box.image.rsplit(":", 1)[0], tag=box.short,
            changes=[f"LABEL {k}={json.dumps(v)}" for k, v in labels.items()],
        )  # fmt: skip
        client.volumes.create(name=box.volume, labels=box.labels)
        mounts = {
            host_volume_name(spec, source): {"bind": "/from", "mode": "ro"},
            box.volume: {"bind": "/to", "mode": "rw"},
        }
        copy = ["sh", "-c", f"mkdir /to/{ENGINE} && cp -a --reflink=auto /from/. /to/{ENGINE}/"]
        _run_helper(client, box.image, copy, mounts, spec.name, "copying the engine data")
    except (BoxError, DockerException, OSError) as exc:
        _remove(client, box)
        raise BoxError(f"no box kept ({exc})") from None
    finally:
        _exec(container, RESTORE)
    return time.monotonic() - started


def keep(spec: LabSpec, new: Box, report: Report) -> str:
    """make(), then the lab's older boxes pruned; what `up` says of it. Raises BoxError
    when no box is kept."""
    seconds = make(spec, new, report)
    prune(spec.name)
    return f"{new.image} kept ({seconds:.1f} s), the next `up` starts from it"


def _new_login_key(box: Box) -> bytes:
    """A new key pair for `box`: the private half written to its login_key file (0600,
    in a 0700 directory), the public half returned as an authorized_keys line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )  # fmt: skip
    box.login_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(box.login_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public + f" labctl box {box.lab} {box.short}\n".encode()


@dataclass(frozen=True)
class KeptBox:
    box: Box
    created: str
    engine: str
    image_bytes: int
    data_bytes: int | None
    in_use: bool


def kept(client: docker.DockerClient, lab: str, sizes: bool = False) -> list[KeptBox]:
    """The lab's boxes on this engine, newest first (`sizes`: the volumes' too, which
    costs the engine a walk through them)."""
    volume_sizes: dict[str, int] = {}
    if sizes:
        for volume in client.df().get("Volumes") or []:
            volume_sizes[volume["Name"]] = (volume.get("UsageData") or {}).get("Size", -1)
    boxes = []
    for image in client.images.list(filters={"label": f"{BOX_OF}={lab}"}):
        labels = image.labels
        box = Box(lab, labels.get(BOX_KEY, ""))
        users = client.containers.list(all=True, filters={"ancestor": image.id})
        boxes.append(KeptBox(
            box, image.attrs.get("Created", ""), labels.get(BOX_ENGINE, ""),
            image.attrs.get("Size", 0), volume_sizes.get(box.volume), bool(users),
        ))  # fmt: skip
    return sorted(boxes, key=lambda b: b.created, reverse=True)


def _remove(client: docker.DockerClient, box: Box) -> list[str]:
    removed = []
    if box.login_key.exists():
        box.login_key.unlink()
        removed.append(f"box key {box.login_key}")
    for kind, get in (("image", client.images.get), ("volume", client.volumes.get)):
        name = box.image if kind == "image" else box.volume
        try:
            thing = get(name)
        except NotFound:
            continue
        if kind == "image":
            client.images.remove(thing.id, force=True)
        else:
            thing.remove(force=True)
        removed.append(f"box {kind} {name}")
    return removed


def prune(lab: str, keep: int = CACHE_BOUND) -> list[str]:
    """The lab's boxes beyond the newest `keep` (0: all), none a container runs from;
    and the lab's login keys of boxes that are gone."""
    client = system.engine()
    if client is None:
        return []
    removed, still = [], set()
    for position, found in enumerate(kept(client, lab)):
        if position >= keep and not found.in_use:
            removed += _remove(client, found.box)
        else:
            still.add(found.box.login_key)
    # A key whose box went another way (`docker rmi`, a labctl from before box keys).
    own = re.compile(rf"{re.escape(lab)}-[0-9a-f]{{{KEY_DIGITS}}}")
    for key in sorted(BOX_KEYS.glob("*")):
        if own.fullmatch(key.name) and key not in still:
            key.unlink()
            removed.append(f"box key {key}")
    return removed


def key_problem(key: str) -> str | None:
    """Why `key` cannot name a box (None when it can), before any engine is asked."""
    if KEY_RE.fullmatch(key):
        return None
    return (
        f"{key!r} is not a box key; give 4 to 64 of its lowercase hex digits, as "
        "`labctl box list` shows them."
    )


def remove(lab: str, keys: list[str]) -> list[str]:
    """The lab's boxes named by `keys` (a key's first digits, as `labctl box list` shows
    them). Checked first: one unknown key and nothing is removed."""
    client = system.ensure_engine()
    boxes = kept(client, lab)
    chosen = []
    for key in keys:
        matches = [b for b in boxes if key and b.box.key.startswith(key)]
        if len(matches) != 1:
            what = "no box" if not matches else f"{len(matches)} boxes"
            known = ", ".join(b.box.short for b in boxes) or "none"
            raise BoxError(
                f"{what} of lab {lab} has key {key!r} (its boxes: {known}); "
                "name one as `labctl box list` shows it."
            )
        if matches[0].in_use:
            raise BoxError(
                f"box {matches[0].box.short} of lab {lab} is in use by the lab's hosts; "
                "run `labctl down` first."
            )
        chosen.append(matches[0].box)
    return [name for box in chosen for name in _remove(client, box)]
