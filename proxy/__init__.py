"""resilience-proxy: a sidecar that keeps an application's third-party API calls alive."""

__version__ = "0.1.0"
