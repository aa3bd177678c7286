"""The pipeline's addons: small host-neutral stages, one concern each, configured from TOML.

Nothing here imports aiohttp or mitmproxy (the mitmproxy adapter excepted):
addons see only ``gateway.pipeline.Exchange``.
"""
