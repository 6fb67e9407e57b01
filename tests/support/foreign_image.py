"""An image of another architecture, without a registry or an emulator.

`docker load` takes an image in `docker save` form: a manifest, a config that states
the image's architecture, and layer tars. This writes one with a single tiny layer and
`architecture` set to what the test asks for, and loads it, so that the control
machine's engine holds, e.g., an arm64 image on an amd64 machine: what a user gets by
loading an image saved on an Apple silicon laptop.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile


def _tar(members: dict[str, bytes], modes: dict[str, int] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = (modes or {}).get(name, 0o644)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def load_one_layer_image(
    ref: str,
    arch: str,
    files: dict[str, bytes],
    cmd: list[str],
    labels: dict[str, str] | None = None,
    modes: dict[str, int] | None = None,
) -> None:
    """`docker load` an image tagged `ref` whose single layer holds `files` (path ->
    content, `modes` for other modes than 0644)."""
    layer = _tar(files, modes)
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": cmd, "Labels": labels or {}},
            "rootfs": {
                "type": "layers",
                "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"],
            },
        }
    ).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [ref], "Layers": ["layer.tar"]}])
    archive = _tar({"layer.tar": layer, config_name: config, "manifest.json": manifest.encode()})
    subprocess.run(["docker", "load", "-q"], input=archive, check=True, capture_output=True)


def load_foreign_image(ref: str, arch: str) -> None:
    load_one_layer_image(ref, arch, {"etc/foreign-arch": arch.encode()}, ["/bin/true"])
