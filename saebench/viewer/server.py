"""The viewer's HTTP server: a JSON API over a loaded bundle plus the static page, on ``http.server``.

Routes (all ``GET``; JSON unless noted; NaN statistics are sent as ``null``):

- ``/`` and ``/static/<file>``: the page (``saebench/viewer/static/``).
- ``/images/<i>.png``: image ``i`` of the bundle (PNG).
- ``/api/summary``: title, counts, token layout, image shape, class names, ``top_n``, ``tau``, and the
  names of the sortable statistics.
- ``/api/latents?sort=<stat>&order=desc|asc&offset=0&limit=100&alive=1``: one page of the latent table
  (index and statistics); ``alive=1`` drops latents that never fire; NaN sorts last.
- ``/api/latent/<s>``: the latent's statistics, its class counts and its top images, each with its label and
  the latent's code at every token (``tokens``, length ``T``) for the heatmap.
- ``/api/image/<i>?limit=50``: the image's label, the non-zero codes of each token (``tokens``: ``T`` lists
  of ``[latent, value]``) and its latents ranked by image-level activation (mean over tokens).

Errors are JSON ``{"error": ...}`` with status 400 (bad query) or 404 (no such latent, image or file).
"""

from __future__ import annotations

import json
import math
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from saebench.viewer.bundle import STAT_NAMES, ViewerBundle

STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
SORT_KEYS = ("index", *STAT_NAMES)


class RequestError(Exception):
    """A request the API cannot answer; ``status`` is the HTTP status to send."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _number(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def _int_param(query: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name, [str(default)])[-1]
    try:
        value = int(raw)
    except ValueError:
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"query parameter {name}={raw!r} is not an integer"
        ) from None
    if not low <= value <= high:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"query parameter {name}={value} is outside {low}..{high}")
    return value


class ViewerAPI:
    """Answers the ``/api`` routes from a :class:`ViewerBundle`; every method returns a JSON-ready dict."""

    def __init__(self, bundle: ViewerBundle) -> None:
        self.bundle = bundle
        self.stats = {name: np.asarray(bundle.arrays[f"latent_{name}.npy"]) for name in STAT_NAMES}
        self.labels = np.asarray(bundle.arrays["labels.npy"])

    def _label_name(self, label: int) -> str | None:
        return self.bundle.class_names[label] if label >= 0 else None

    def checked_index(self, raw: str, count: int, what: str) -> int:
        """``raw`` (a URL segment) as an index in ``0..count-1``, else a 404 naming the valid range."""
        if not raw.isdigit() or int(raw) >= count:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no {what} {raw!r}; valid {what}s are 0..{count - 1}")
        return int(raw)

    def summary(self) -> dict[str, Any]:
        manifest = self.bundle.manifest
        return {
            "title": manifest["title"],
            "n_images": self.bundle.n_images,
            "n_latents": self.bundle.n_latents,
            "n_alive": int((self.stats["frequency"] > 0).sum()),
            "layout": manifest["layout"],
            "image_shape": manifest["image_shape"],
            "class_names": self.bundle.class_names,
            "top_n": manifest["top_n"],
            "tau": manifest["tau"],
            "sort_keys": list(SORT_KEYS),
        }

    def latent_row(self, latent: int) -> dict[str, Any]:
        return {"latent": latent, **{name: _number(self.stats[name][latent]) for name in STAT_NAMES}}

    def latents(self, query: dict[str, list[str]]) -> dict[str, Any]:
        sort = query.get("sort", ["frequency"])[-1]
        order = query.get("order", ["desc"])[-1]
        if sort not in SORT_KEYS or order not in ("asc", "desc"):
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"sort must be one of {', '.join(SORT_KEYS)} and order asc|desc"
            )
        offset = _int_param(query, "offset", 0, 0, self.bundle.n_latents)
        limit = _int_param(query, "limit", 100, 1, 10_000)
        alive = _int_param(query, "alive", 1, 0, 1)
        index = np.arange(self.bundle.n_latents)
        if alive:
            index = index[self.stats["frequency"] > 0]
        if sort != "index":
            values = self.stats[sort][index]
            key = np.where(np.isnan(values), np.inf, values if order == "asc" else -values)
            index = index[np.lexsort((index, key))]  # by key, ties by latent index, NaN last
        elif order == "desc":
            index = index[::-1]
        rows = [self.latent_row(int(s)) for s in index[offset : offset + limit]]
        return {"total": int(len(index)), "offset": offset, "rows": rows}

    def latent(self, raw: str) -> dict[str, Any]:
        latent = self.checked_index(raw, self.bundle.n_latents, "latent")
        counts = self.bundle.arrays["latent_class_counts.npy"][latent]
        top_images = self.bundle.arrays["latent_top_images.npy"][latent]
        top_values = self.bundle.arrays["latent_top_values.npy"][latent]
        top = [
            {
                "image": int(image),
                "value": float(value),
                "label": int(self.labels[image]),
                "label_name": self._label_name(int(self.labels[image])),
                "tokens": self.bundle.latent_over_tokens(int(image), latent).tolist(),
            }
            for image, value in zip(top_images, top_values, strict=True)
            if image >= 0
        ]
        classes = [
            {"label": c, "name": name, "count": int(counts[c])}
            for c, name in enumerate(self.bundle.class_names)
        ]
        return {**self.latent_row(latent), "class_counts": classes, "top_images": top}

    def image(self, raw: str, query: dict[str, list[str]]) -> dict[str, Any]:
        image = self.checked_index(raw, self.bundle.n_images, "image")
        limit = _int_param(query, "limit", 50, 1, 10_000)
        token_codes = self.bundle.token_codes(image)
        n_tokens = len(token_codes)
        totals: dict[int, float] = {}
        peaks: dict[int, float] = {}
        for latents, values in token_codes:
            for latent, value in zip(latents.tolist(), values.tolist(), strict=True):
                totals[latent] = totals.get(latent, 0.0) + value
                peaks[latent] = max(peaks.get(latent, value), value)
        ranked = sorted(totals, key=lambda s: (-totals[s], s))[:limit]
        label = int(self.labels[image])
        return {
            "image": image,
            "label": label,
            "label_name": self._label_name(label),
            "tokens": [
                [[int(s), float(v)] for s, v in zip(latents, values, strict=True)]
                for latents, values in token_codes
            ],
            "latents": [
                {"latent": s, "mean_activation": totals[s] / n_tokens, "max_activation": peaks[s]}
                for s in ranked
            ],
        }


_IMAGE_ROUTE = re.compile(r"^/images/(\d+)\.png$")
_LATENT_ROUTE = re.compile(r"^/api/latent/([^/]+)$")
_IMAGE_API_ROUTE = re.compile(r"^/api/image/([^/]+)$")


def _make_handler(api: ViewerAPI) -> type[BaseHTTPRequestHandler]:
    class ViewerHandler(BaseHTTPRequestHandler):
        server_version = "saebench-viewer"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            """Stay quiet: the terminal shows only the URL."""

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _send_json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
            self._send(status, json.dumps(payload, allow_nan=False).encode(), "application/json")

        def _file(self, path: Path, content_type: str) -> None:
            self._send(HTTPStatus.OK, path.read_bytes(), content_type)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            parts = urlsplit(self.path)
            route, query = parts.path, parse_qs(parts.query)
            try:
                self._route(route, query)
            except RequestError as err:
                self._send_json(err.status, {"error": str(err)})

        def _route(self, route: str, query: dict[str, list[str]]) -> None:
            if route == "/favicon.ico":
                return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            if route in ("/", "/index.html"):
                return self._file(STATIC_DIR / "index.html", STATIC_TYPES[".html"])
            if route.startswith("/static/"):
                name = route.removeprefix("/static/")
                path = STATIC_DIR / name
                if "/" in name or path.suffix not in STATIC_TYPES or not path.is_file():
                    raise RequestError(HTTPStatus.NOT_FOUND, f"no static file {name!r}")
                return self._file(path, STATIC_TYPES[path.suffix])
            if match := _IMAGE_ROUTE.match(route):
                index = api.checked_index(match.group(1), api.bundle.n_images, "image")
                return self._file(api.bundle.image_path(index), "image/png")
            if route == "/api/summary":
                return self._send_json(HTTPStatus.OK, api.summary())
            if route == "/api/latents":
                return self._send_json(HTTPStatus.OK, api.latents(query))
            if match := _LATENT_ROUTE.match(route):
                return self._send_json(HTTPStatus.OK, api.latent(match.group(1)))
            if match := _IMAGE_API_ROUTE.match(route):
                return self._send_json(HTTPStatus.OK, api.image(match.group(1), query))
            raise RequestError(HTTPStatus.NOT_FOUND, f"no route {route!r}; see saebench/viewer/server.py")

    return ViewerHandler


def make_server(bundle: ViewerBundle, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server for ``bundle`` bound to ``host:port`` (``port=0``: a free port; read ``server.server_port``).

    Call ``serve_forever()`` on it (in a thread for tests) and ``shutdown()`` + ``server_close()`` to stop.
    """
    server = ThreadingHTTPServer((host, port), _make_handler(ViewerAPI(bundle)))
    server.daemon_threads = True
    return server
