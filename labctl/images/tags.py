"""Tags of the images built from the lab's recipes: they change whenever what an image
is built from does, so an image is never taken for another; and the namespace they live
in (`lab/lb:<hash>`), which checkouts sharing an engine can keep apart."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

IMAGE_NAMESPACE_ENV = "LAB_IMAGE_NAMESPACE"


def image_namespace() -> str:
    return os.environ.get(IMAGE_NAMESPACE_ENV) or "lab"


def recipe_tag(recipe: Path, *identity: str) -> str:
    """A tag that changes whenever the recipe's files or anything else it is built from do."""
    digest = hashlib.sha256(json.dumps(identity).encode())
    # Bytecode caches are not sources: a recipe that ran locally keeps its tag.
    sources = (p for p in recipe.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in sorted(sources):
        digest.update(path.relative_to(recipe).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def file_identity(path: Path | None) -> str:
    if path is None:
        return "release"
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return f"missing:{path}"
