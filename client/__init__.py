"""tuxio clients: the Python SDK and the `kubectl tuxio` plugin."""

__all__: list[str] = []
