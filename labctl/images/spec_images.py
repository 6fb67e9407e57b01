"""The images a spec needs, where, and their references: Consul's and registrator's
(pinned, or the stand-ins built from their sources), and the lab's own recipes in
templates/ (the demo service, the LB, keepalived beside several LBs), tagged by what they
are built from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from labctl.images.consul_template import consul_template_for_lb
from labctl.images.standins import STANDINS, is_standin
from labctl.images.tags import file_identity, image_namespace, recipe_tag
from labctl.spec import LabSpec
from roles.contract import CONSUL_ROLE, DEMO_SERVICE_ROLE, LB_ROLE, REGISTRATOR_ROLE, TEMPLATES


@dataclass(frozen=True)
class LabImage:
    """One image the lab runs: its reference, recipe (if any) and the hosts that need it."""

    # The role that runs it (roles.host_images.image_ref reads it by this key).
    key: str
    ref: str
    hosts: tuple[str, ...]
    recipe: Path | None = None
    build_args: tuple[tuple[str, str], ...] = ()
    # Files added to the recipe's build context: name -> function of the architecture
    # built for, returning a local path.
    context_files: tuple[tuple[str, Callable[[str], Path]], ...] = ()


def _consul_template(spec: LabSpec) -> Callable[[str], Path]:
    def binary(arch: str) -> Path:
        return consul_template_for_lb(spec, arch)

    return binary


def lab_images(spec: LabSpec) -> list[LabImage]:
    """The images the spec needs, and where."""
    base = spec.docker.base_image
    demo_recipe = TEMPLATES / "demo_service"
    lb_recipe = TEMPLATES / "lb"
    ct_version = spec.versions.consul_template
    ct_source = spec.images.consul_template_binary
    lb_args = (("NGINX_VERSION", spec.versions.nginx),)
    lb_tag = recipe_tag(lb_recipe, base, *lb_args[0], ct_version, file_identity(ct_source))
    namespace = image_namespace()
    images = [
        LabImage(
            CONSUL_ROLE,
            spec.consul_image,
            tuple(h.name for h in spec.hosts if h.consul != "none"),
            # The offline road's stand-in is built from its sources, like a recipe.
            recipe=STANDINS / "consul" if is_standin(spec.consul_image) else None,
        ),
        LabImage(
            REGISTRATOR_ROLE,
            spec.registrator_image,
            tuple(h.name for h in spec.registrator_hosts),
            recipe=STANDINS / "registrator"
            if is_standin(spec.registrator_image, "registrator")
            else None,
        ),
        LabImage(
            DEMO_SERVICE_ROLE,
            f"{namespace}/demo-service:{recipe_tag(demo_recipe, base)}",
            tuple(spec.instance_hosts()),
            recipe=demo_recipe,
        ),
        LabImage(
            LB_ROLE,
            f"{namespace}/lb:{lb_tag}",
            tuple(h.name for h in spec.lb_hosts),
            recipe=lb_recipe,
            build_args=lb_args,
            context_files=(("consul-template", _consul_template(spec)),),
        ),
        keepalived_image(spec),
    ]
    return [image for image in images if image.hosts]


def keepalived_image(spec: LabSpec) -> LabImage:
    """keepalived (Debian's), beside the LB on every LB host of a lab with more than one
    (docs/lb-pair.md); needed nowhere with a single LB."""
    recipe = TEMPLATES / "keepalived"
    base = spec.docker.base_image
    args = (("KEEPALIVED_VERSION", spec.versions.keepalived),)
    return LabImage(
        "keepalived",
        f"{image_namespace()}/keepalived:{recipe_tag(recipe, base, *args[0])}",
        tuple(h.name for h in spec.lb_hosts) if spec.lb_pair else (),
        recipe=recipe,
        build_args=args,
    )
