"""Shared test setup: compiled networks go to a per-session cache, never the user's ~/.cache."""
import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    # Session-wide (not per test) so a network compiled by one test is reused by the next.
    old = os.environ.get("NETC_CACHE")
    os.environ["NETC_CACHE"] = str(tmp_path_factory.mktemp("netc-cache"))
    yield
    if old is None:
        os.environ.pop("NETC_CACHE", None)
    else:
        os.environ["NETC_CACHE"] = old
