"""OpenI2V: a self-hosted image-to-video service with a WaveSpeed v3-compatible API."""

__version__ = "0.1.0"
