"""Shared fixtures of the viewer tests: a small planted world, its bundle, and a live server over it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from saebench.viewer import load_viewer_bundle, write_viewer_bundle
from saebench.viewer.demo import PlantedTokenWorld, planted_token_world
from saebench.viewer.server import make_server

TOP_N = 4


@pytest.fixture(scope="session")
def world() -> PlantedTokenWorld:
    return planted_token_world(n_images=24, seed=3)


@pytest.fixture(scope="session")
def bundle_dir(world, tmp_path_factory):
    return write_viewer_bundle(
        tmp_path_factory.mktemp("viewer") / "bundle",
        world.images,
        world.codes,
        world.layout,
        labels=world.labels,
        class_names=world.class_names,
        top_n=TOP_N,
        title="test world",
    )


@pytest.fixture(scope="session")
def base_url(bundle_dir) -> Iterator[str]:
    """URL of a server on a free port of 127.0.0.1, serving ``bundle_dir`` from a background thread."""
    server = make_server(load_viewer_bundle(bundle_dir), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
