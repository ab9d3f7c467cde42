"""Shared test setup: compiled networks go to a per-session cache, never the user's ~/.cache;
the small slice of the shipped digits that the training tests use."""
import os

import numpy as np
import pytest

from netc import data


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


@pytest.fixture(scope="module")
def digits():
    """300 training and 200 test images from the shipped subset."""
    d = data.load("mnist-10k")
    return data.Dataset("digits", d.train.subset(np.arange(300)), d.test.subset(np.arange(200)),
                        d.classes)
