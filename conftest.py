"""Repository-wide pytest setup: the saebench reproduction plugin (``--tier``, one case per claim)."""

pytest_plugins = ["saebench.repro.pytest_plugin"]
