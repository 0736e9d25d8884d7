"""`speclearn compile`, `speclearn compiler` and `speclearn demo`, loaded lazily by proxy/cli.py."""
