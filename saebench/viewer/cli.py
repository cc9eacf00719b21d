"""``saebench view``: serve a viewer bundle as a local web page (``docs/viewer.md``).

    saebench view path/to/bundle                      # a folder written by write_viewer_bundle
    saebench view .saebench_cache/repro/patchsae-mini-seed0   # a run's work folder: serves its viewer/
    saebench view --demo                              # a planted synthetic world, nothing cached needed
    saebench view BUNDLE --port 8080 --no-browser     # fixed port, open the URL yourself

The page lists latents with their statistics; pick one to see its top images with patch heatmaps and its
class distribution, pick an image to see which latents fire where. Ctrl-C stops the server.
"""

from __future__ import annotations

import argparse
import tempfile
import webbrowser
from pathlib import Path

from saebench.viewer.bundle import MANIFEST, load_viewer_bundle
from saebench.viewer.demo import write_demo_bundle
from saebench.viewer.server import make_server


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``view`` verb."""
    parser = subparsers.add_parser(
        "view",
        help="browse an SAE's latents, top images and patch heatmaps in a local web page",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "bundle", nargs="?", help="a viewer bundle folder, or a run's work folder with one in viewer/"
    )
    parser.add_argument("--demo", action="store_true", help="serve a planted synthetic world instead")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: this machine only)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    parser.add_argument("--no-browser", action="store_true", help="print the URL without opening a browser")
    parser.set_defaults(func=run_view)


RUN_BUNDLE_FOLDER = "viewer"
"""Sub-folder in which a reproduction's work folder keeps its bundle (e.g. reproductions/patchsae/mini.py)."""


def bundle_folder(path: str | Path) -> Path:
    """``path`` itself, or its ``viewer/`` sub-folder when ``path`` is a run work folder holding a bundle."""
    path = Path(path)
    nested = path / RUN_BUNDLE_FOLDER
    if not (path / MANIFEST).exists() and (nested / MANIFEST).exists():
        return nested
    return path


def run_view(args: argparse.Namespace) -> int:
    """Serve ``args.bundle`` (or the demo world) until interrupted."""
    if args.demo == (args.bundle is not None):
        raise ValueError("give exactly one of a bundle folder or --demo (e.g. `saebench view --demo`)")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535 (0 picks a free port), got {args.port}")
    with tempfile.TemporaryDirectory(prefix="saebench-view-demo-") as scratch:
        folder = write_demo_bundle(Path(scratch) / "bundle") if args.demo else bundle_folder(args.bundle)
        bundle = load_viewer_bundle(folder)
        try:
            server = make_server(bundle, args.host, args.port)
        except OSError as err:
            raise ValueError(f"cannot listen on {args.host}:{args.port} ({err}); try --port 0") from err
        url = f"http://{args.host}:{server.server_port}/"
        print(f"saebench view: serving {folder} at {url} (Ctrl-C to stop)", flush=True)
        if not args.no_browser:
            webbrowser.open(url)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("saebench view: stopped", flush=True)
        finally:
            server.server_close()
    return 0
