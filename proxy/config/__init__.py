"""Configuration: YAML files in, immutable :class:`~proxy.config.model.Config` out."""
