"""Rules shared by several tuxio components, written once: the wire format of the streams
(Kubernetes remote-command), labels, quantities, time, keyed locks.

Nothing here does I/O or knows a component: the agent, the operator, the gateway, the web
frontend and the clients all import from here, and this package imports none of them.
"""

__all__: list[str] = []
