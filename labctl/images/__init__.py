"""Every image the lab runs, and how each host gets it.

    spec_images    which images a spec needs, where, and their tags
    tags           tags that change with what an image is built from; the namespace
    errors         ImageError, and the sentences an image that cannot be had ends in
    engine         the local Docker engine's images: present, their IDs, pulls
    debian_base    the hosts' base image, built with debootstrap where no registry serves it
    on_control     images.delivery `control`: resolve every image here, then per-host archives
    archives       the per-host archives, cached and pruned
    bundles        `labctl bundle save` files: every image, with a manifest
    delivery       control or hosts: which, and the hosts' plan when they resolve their own
    consul_template  the consul-template binary baked into the LB image
    standins       the stand-ins for Consul and consul-template (`up --offline`, the tests)
"""
