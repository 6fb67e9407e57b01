"""The unit suite keeps out of a person's lab: it neither reads nor writes the real `.lab/`
of this checkout (their hosts' records, Consul tokens, gossip key) nor labctl's cache
(tests/unit/conftest.py points both into each test's own folders)."""

from __future__ import annotations

from labctl import paths, security
from labctl.images import archives
from labctl.spec import DEFAULT_SPEC, load_spec
from tests.unit.conftest import REAL_CACHE, REAL_LABS, cache_paths


def test_the_default_labs_state_is_a_folder_of_the_tests_own():
    spec, _ = load_spec(DEFAULT_SPEC)
    assert not paths.lab_dir(spec).is_relative_to(REAL_LABS)
    key = security.gossip_key(spec, create=True)  # what `up` writes first
    assert key and (paths.lab_dir(spec) / "secrets").is_dir()
    assert not paths.lab_dir(spec).is_relative_to(REAL_LABS)


def test_no_labctl_path_leads_into_the_real_cache():
    assert cache_paths() == []
    assert not archives.ARCHIVES.is_relative_to(REAL_CACHE)
