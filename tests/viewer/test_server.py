"""The viewer's HTTP API over a real socket (server on a free port of 127.0.0.1, see conftest.py)."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from saebench.viewer.demo import BACKGROUND_LATENT, DEAD_LATENT, N_LATENTS


def get(base_url: str, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(base_url + path, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def get_json(base_url: str, path: str) -> dict:
    status, content_type, body = get(base_url, path)
    assert status == 200 and content_type == "application/json", (status, body)
    return json.loads(body)


def test_summary_describes_the_bundle(base_url, world):
    summary = get_json(base_url, "/api/summary")
    assert summary["n_images"] == 24 and summary["n_latents"] == N_LATENTS == 9
    assert summary["n_alive"] == 8  # 6 concepts, "any object", background; DEAD_LATENT never fires
    assert summary["layout"] == {"n_cls": 1, "n_registers": 0, "grid": [4, 4]}
    assert summary["image_shape"] == [32, 32, 3] and summary["class_names"] == list(world.class_names)
    assert summary["title"] == "test world" and summary["top_n"] == 4


def test_latent_table_sorts_pages_and_hides_dead_latents(base_url, world):
    image_mean = world.codes.mean(axis=1)  # (n, h)
    frequency = (image_mean > 0).mean(axis=0)
    rows = get_json(base_url, "/api/latents?sort=frequency&order=desc&limit=100")["rows"]
    assert [r["latent"] for r in rows] == sorted(range(DEAD_LATENT), key=lambda s: (-frequency[s], s))
    np.testing.assert_allclose([r["frequency"] for r in rows], frequency[[r["latent"] for r in rows]])
    page = get_json(base_url, "/api/latents?sort=index&order=asc&alive=0&offset=7&limit=5")
    assert page["total"] == 9 and [r["latent"] for r in page["rows"]] == [BACKGROUND_LATENT, DEAD_LATENT]
    dead = page["rows"][1]
    assert dead["frequency"] == 0 and dead["mean_activation"] is None  # NaN travels as null
    ascending = get_json(base_url, "/api/latents?sort=mean_activation&order=asc&alive=0")["rows"]
    assert ascending[-1]["latent"] == DEAD_LATENT  # NaN sorts last in either order


def test_latent_detail_has_stats_classes_and_top_image_heatmaps(base_url, world):
    latent = int(world.labels[0])
    data = get_json(base_url, f"/api/latent/{latent}")
    image_mean = world.codes[:, :, latent].mean(axis=1)
    expected_top = sorted(np.flatnonzero(image_mean > 0), key=lambda i: (-image_mean[i], i))[:4]
    assert [t["image"] for t in data["top_images"]] == expected_top
    for top in data["top_images"]:
        np.testing.assert_array_equal(top["tokens"], world.codes[top["image"], :, latent])
        assert top["label_name"] == world.class_names[world.labels[top["image"]]]
        assert top["value"] == pytest.approx(image_mean[top["image"]], abs=1e-6)  # float32 mean
    above = (world.codes[:, :, latent] > 0.2).sum(axis=1)
    expected_counts = [int(above[world.labels == c].sum()) for c in range(6)]
    assert [c["count"] for c in data["class_counts"]] == expected_counts
    assert [c["name"] for c in data["class_counts"]] == list(world.class_names)


def test_image_detail_lists_token_codes_and_ranked_latents(base_url, world):
    data = get_json(base_url, "/api/image/5")
    codes = world.codes[5]
    assert data["label"] == int(world.labels[5]) and len(data["tokens"]) == 17
    for token, pairs in enumerate(data["tokens"]):
        assert [s for s, _ in pairs] == list(np.flatnonzero(codes[token]))
        np.testing.assert_array_equal([v for _, v in pairs], codes[token][codes[token] != 0])
    means = codes.mean(axis=0)
    ranked = sorted(np.flatnonzero(means > 0), key=lambda s: (-means[s], s))
    assert [r["latent"] for r in data["latents"]] == ranked
    np.testing.assert_allclose([r["max_activation"] for r in data["latents"]], codes.max(axis=0)[ranked])
    assert len(get_json(base_url, "/api/image/5?limit=1")["latents"]) == 1


def test_static_page_and_images_are_served(base_url, world):
    status, content_type, body = get(base_url, "/")
    assert status == 200 and content_type == "text/html" and b"/static/viewer.js" in body
    assert get(base_url, "/static/viewer.js")[:2] == (200, "text/javascript")
    assert get(base_url, "/static/viewer.css")[:2] == (200, "text/css")
    status, content_type, body = get(base_url, "/images/3.png")
    assert status == 200 and content_type == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))), world.images[3])


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/api/latent/9", 404, "valid latents are 0..8"),
        ("/api/latent/-1", 404, "no latent"),
        ("/api/image/24", 404, "valid images are 0..23"),
        ("/images/99.png", 404, "no image"),
        ("/api/latents?sort=color", 400, "sort must be one of"),
        ("/api/latents?limit=lots", 400, "not an integer"),
        ("/api/latents?limit=0", 400, "outside 1..10000"),
        ("/static/../bundle.py", 404, "no static file"),
        ("/static/%2E%2E%2Fserver.py", 404, "no static file"),
        ("/nowhere", 404, "no route"),
    ],
)
def test_bad_requests_get_json_errors(base_url, path, status, message):
    got_status, content_type, body = get(base_url, path)
    assert got_status == status and content_type == "application/json"
    assert message in json.loads(body)["error"]
