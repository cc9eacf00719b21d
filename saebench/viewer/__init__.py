"""A local web viewer for SAE latents over image tokens: ``saebench view <bundle>`` (``docs/viewer.md``)."""

from __future__ import annotations

from saebench.viewer.bundle import ViewerBundle, ViewerBundleError, load_viewer_bundle, write_viewer_bundle

__all__ = ["ViewerBundle", "ViewerBundleError", "load_viewer_bundle", "write_viewer_bundle"]
