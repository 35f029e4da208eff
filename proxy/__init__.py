"""resilience-proxy: a sidecar that keeps an application's third-party API calls alive."""

__version__ = "0.1.0"
IMAGE = f"ghcr.io/resilience-proxy/resilience-proxy:{__version__}"
"""The image this release ships as: what ``inject`` and the injector put in a pod unless told otherwise."""
