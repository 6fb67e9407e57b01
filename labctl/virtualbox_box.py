"""The virtualbox road's host box, as the seed made its VMs: "install one machine
completely, then `vagrant package` it for the other two".

The first `up` of a lab converges its VMs up to their engine and images (the other
hosts' images loaded into the first VM too), `vagrant package`s the first VM (Vagrant
halts it, exports it and packs in the key it gave the machine) and `vagrant box add`s
the file under a name of the lab's, `labctl/<lab>-<checkout>-<key>`: Vagrant's boxes
are global per user, so the name carries the checkout's ID, as the lab's VM names do.
The box is added from a one-version catalog whose version is the time it was made
(`vagrant box list` shows it; `down` keeps the newest). Later `up`s record the box's name
in the lab's state, and the Vagrantfile makes every VM from it (`lab_box`).

The key is the docker road's (labctl/box.py key_of: the docker role's source and
settings, every image's ID) with the spec's pinned base box (name and version) in place
of the host template. All of Vagrant is driven through python-vagrant, with the lab's
own environment (labctl/vagrant.py client).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from labctl import box, vagrant, virtualbox
from labctl.connections import connection_data
from labctl.paths import host_container_name, lab_dir, read_state
from labctl.remote import openssh_command
from labctl.spec import LabSpec

Report = Callable[[str], None]

PREFIX = "labctl/"
PROVIDER = "virtualbox"
# A box's version: when it was made (UTC); numeric segments, as Vagrant orders them.
VERSION_FORMAT = "%Y%m%d.%H%M%S"
LOAD_TIMEOUT = 600


@dataclass(frozen=True)
class VagrantBox(box.KeyedBox):
    """A box on the virtualbox road: a Vagrant box in the lab's Vagrant home."""

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.lab}-{virtualbox.checkout_id()}-{self.short}"

    @property
    def image(self) -> str:
        """What the lab's VMs are made from (box.BoxPlan.from_box): the box's name."""
        return self.name


@dataclass(frozen=True)
class KeptVagrantBox:
    box: VagrantBox
    version: str
    in_use: bool

    @property
    def created(self) -> str:
        try:
            made = time.strptime(self.version, VERSION_FORMAT)
        except ValueError:
            return "?"
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", made)


def box_key(spec: LabSpec, state: dict) -> str:
    base = virtualbox.box_for(spec)
    made_from = {"base_box": [base.box, base.version] if base else None}
    return box.key_of(spec, state, made_from)


def plan(spec: LabSpec, provider: str, state: dict, use: bool) -> box.BoxPlan:
    """The box of a fresh `up` on the virtualbox road: found, to be made, or none."""
    if none := box.unplanned(provider, state, use):
        return none
    new = VagrantBox(spec.name, box_key(spec, state))
    if any(k.box.name == new.name for k in kept(spec)):  # listed boxes: their short key
        return box.BoxPlan(new, f"VMs made from Vagrant box {new.name}", found=True)
    return box.BoxPlan(
        new, f"none for this spec yet: Vagrant box {new.name} is kept after the engine install"
    )


def _vagrant_said(errors: Path, exc: Exception) -> str:
    """What Vagrant said on stderr (a paragraph), flattened, else the exception."""
    said = " ".join(errors.read_text().split()) if errors.exists() else ""
    return said[:300] or str(exc)


@contextlib.contextmanager
def _client(spec: LabSpec) -> Iterator:
    """The lab's python-vagrant client, its output in the lab's log; a failed call is a
    BoxError naming what Vagrant said."""
    log = lab_dir(spec) / "logs" / "box.log"
    errors = log.with_suffix(".err")
    log.parent.mkdir(parents=True, exist_ok=True)
    v = vagrant.client(spec, PROVIDER)
    with log.open("a") as out, errors.open("w") as err:
        v.out_cm = lambda: contextlib.nullcontext(out)
        v.err_cm = lambda: contextlib.nullcontext(err)
        try:
            yield v
        except subprocess.CalledProcessError as exc:
            err.flush()
            raise box.BoxError(f"{_vagrant_said(errors, exc)}; see {log}") from None
        except RuntimeError as exc:  # python-vagrant: no vagrant executable
            raise box.BoxError(str(exc)) from None


def kept(spec: LabSpec, vms_gone: bool = False) -> list[KeptVagrantBox]:
    """The lab's Vagrant boxes, newest first; in use: the one the lab's VMs were made
    from, unless they are gone (`vms_gone`: `down` destroyed them)."""
    own = re.compile(
        re.escape(f"{PREFIX}{spec.name}-{virtualbox.checkout_id()}-")
        + f"([0-9a-f]{{{box.KEY_DIGITS}}})"
    )
    with _client(spec) as v:
        listed = v.box_list()
    state = read_state(spec)
    in_use = state.get("box") if state.get("provider") == PROVIDER and not vms_gone else None
    found = [
        KeptVagrantBox(VagrantBox(spec.name, match[1]), b.version or "", b.name == in_use)
        for b in listed
        if b.provider == PROVIDER and (match := own.fullmatch(b.name))
    ]

    def newest(k: KeptVagrantBox) -> tuple[int, ...]:
        return tuple(int(p) for p in k.version.split(".") if p.isdigit())

    return sorted(found, key=newest, reverse=True)


def _load_other_hosts_images(spec: LabSpec, source: str, report: Report) -> None:
    """The images of the lab's other hosts, into the VM boxed: the box serves them all."""
    archives = read_state(spec).get("image_archives", {})
    others = [(h, a) for h, a in sorted(archives.items()) if h != source and a]
    if not others:
        return
    load = openssh_command(connection_data(spec, PROVIDER)[source], "docker load -q")
    for host, archive in others:
        report(f"box: loading {host}'s images into {source}")
        with open(archive, "rb") as data:
            done = subprocess.run(load, stdin=data, capture_output=True, timeout=LOAD_TIMEOUT)
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").split("\n")
            raise box.BoxError(f"loading {host}'s images into {source} failed: {said[0]}")


def make(spec: LabSpec, new: VagrantBox, report: Report) -> float:
    """`vagrant package` of the lab's first VM, converged up to its engine and images,
    and `vagrant box add` of it under the lab's name. The VM is left halted (the caller
    brings it up again); the box file goes once Vagrant has it. Returns the seconds it
    took; raises BoxError (nothing half-added left) when a step fails."""
    source = spec.hosts[0].name
    workdir = lab_dir(spec) / "box"
    box_file, catalog = workdir / f"{new.short}.box", workdir / f"{new.short}.json"
    started = time.monotonic()
    try:
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        _load_other_hosts_images(spec, source, report)
        report(f"box: vagrant package {source}")
        with _client(spec) as v:
            v.package(vm_name=host_container_name(spec, source), output=str(box_file))
        version = time.strftime(VERSION_FORMAT, time.gmtime())
        provider = {"name": PROVIDER, "url": box_file.as_uri()}
        catalog.write_text(json.dumps(
            {"name": new.name, "versions": [{"version": version, "providers": [provider]}]}
        ))  # fmt: skip
        report(f"box: vagrant box add {new.name}")
        with _client(spec) as v:
            v.box_add(new.name, str(catalog))
    except (box.BoxError, OSError, subprocess.SubprocessError) as exc:
        with contextlib.suppress(box.BoxError):
            _remove(spec, [new])
        raise box.BoxError(f"no box kept ({exc})") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return time.monotonic() - started


def _remove(spec: LabSpec, boxes: list[VagrantBox]) -> list[str]:
    """`vagrant box remove` of each of `boxes` that Vagrant has."""
    there = {k.box.name for k in kept(spec)}
    removed = []
    with _client(spec) as v:
        for gone in boxes:
            if gone.name in there:
                v.box_remove(gone.name, PROVIDER)
                removed.append(f"vagrant box {gone.name}")
    return removed


def keep(spec: LabSpec, new: VagrantBox, report: Report) -> str:
    """make(), then the lab's older boxes pruned; what `up` says of it. The first VM is
    left halted; raises BoxError when no box is kept."""
    seconds = make(spec, new, report)
    note = f"Vagrant box {new.name} kept ({seconds:.1f} s), the next `up` starts from it"
    try:
        prune(spec)
    except box.BoxError as exc:  # the lab does not need it: said, and `down` tries again
        note += f"; older boxes not removed ({exc})"
    return note


def prune(spec: LabSpec, keep: int = box.CACHE_BOUND, vms_gone: bool = False) -> list[str]:
    """The lab's Vagrant boxes beyond the newest `keep` (0: all), never one in use."""
    found = kept(spec, vms_gone)
    return _remove(spec, [k.box for k in found[keep:] if not k.in_use])


def remove(spec: LabSpec, keys: list[str]) -> list[str]:
    """The lab's Vagrant boxes named by `keys` (as `labctl box list` shows them). Checked
    first: one unknown key, or a box in use, and nothing is removed."""
    boxes = kept(spec)
    chosen = []
    for key in keys:
        matches = [k for k in boxes if k.box.short.startswith(key[: box.KEY_DIGITS])]
        if len(matches) != 1:
            what = "no box" if not matches else f"{len(matches)} boxes"
            known = ", ".join(k.box.short for k in boxes) or "none"
            raise box.BoxError(
                f"{what} of lab {spec.name} has key {key!r} (its boxes: {known}); "
                "name one as `labctl box list` shows it."
            )
        if matches[0].in_use:
            raise box.BoxError(
                f"box {matches[0].box.short} of lab {spec.name} is in use by the lab's VMs; "
                "run `labctl down` first."
            )
        chosen.append(matches[0].box)
    return _remove(spec, chosen)
