"""tuxio gateway: the one front door into sandboxes.

An aggregated API server for Kubernetes identities (sandboxes/exec, /terminal, /files, /token)
and a public WebSocket endpoint for visitors holding a short-lived token bound to one Sandbox.
Stateless: it maps a Sandbox to its host and container from a watch and forwards each stream to
that host's agent.
"""

__all__: list[str] = []
