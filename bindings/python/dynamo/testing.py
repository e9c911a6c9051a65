"""A pytest fixture for other projects' tests: a real local cluster of node processes.

Use it from a test module or `conftest.py`::

    from dynamo.testing import local_cluster  # noqa: F401  (registers the fixture)

    def test_cart(local_cluster):
        with local_cluster.client() as c:
            c.put("default", "cart:1", "book")

The fixture starts a three-node cluster (RocksDB, N=3, R=W=2) once per test module in a
temporary directory and stops every node afterwards. `make_local_cluster` builds one
with other settings for your own fixtures.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from .cluster import LocalCluster


def make_local_cluster(**options: Any) -> LocalCluster:
    """A started `LocalCluster` (options as for `LocalCluster`); stop it yourself."""
    return LocalCluster(**options).start()


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A running three-node local cluster with the store "default"; stopped after the
    module's tests."""
    cluster = LocalCluster(3, tmp_path_factory.mktemp("dynamo-cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
