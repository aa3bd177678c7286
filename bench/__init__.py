"""Benchmarks: the gateway against a bare aiohttp reverse proxy, in the same run, as ratios."""
