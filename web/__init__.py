"""tuxio-web: tux.io reborn, a page that opens into a Linux shell for every visitor."""

__all__: list[str] = []
