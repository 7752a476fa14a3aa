"""tuxio node agent: an HTTP API over LXC on one host.

The agent is the only component that touches LXC. It converges unprivileged containers to a
desired spec, reading what LXC and the cgroup files report before each next step, and keeps
everything it must remember with the containers themselves, so a restarted agent loses nothing.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
