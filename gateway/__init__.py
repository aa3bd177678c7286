"""tracking-gateway: a first-party marketing-attribution gateway (reverse proxy, store, admin API)."""

__version__ = "0.1.0"
