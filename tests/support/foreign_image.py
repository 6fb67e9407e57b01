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


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def load_foreign_image(ref: str, arch: str) -> None:
    layer = _tar({"etc/foreign-arch": arch.encode()})
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/true"]},
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
