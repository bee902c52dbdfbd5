"""Running the API under uvicorn: in the foreground (``marketdata api``) or in a background thread
(tests, benchmarks), with the settings that matter for push: no per-message deflate (it would
compress every frame once per client) and the fastest available loop and HTTP parser."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

__all__ = ["config", "run", "serving"]


def config(app: Any, host: str, port: int, log_level: str = "warning",
           access_log: bool = False) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, log_level=log_level,
                          access_log=access_log, ws_per_message_deflate=False,
                          lifespan="on", timeout_graceful_shutdown=3)


def run(app: Any, host: str, port: int, log_level: str = "info") -> None:
    """Serve until interrupted."""
    uvicorn.Server(config(app, host, port, log_level, access_log=False)).run()


@contextmanager
def serving(app: Any, host: str = "127.0.0.1", port: int = 0,
            timeout: float = 15.0) -> Iterator[str]:
    """Serve ``app`` in a daemon thread; yields its base URL once it accepts connections.

    ``port=0`` picks a free port (read back from the bound socket, so there is no race).
    """
    server = uvicorn.Server(config(app, host, port))  # off the main thread: no signal handlers
    thread = threading.Thread(target=server.run, name="md-api-uvicorn", daemon=True)
    thread.start()
    started = threading.Event()

    def poll() -> bool:
        return bool(server.started) or not thread.is_alive()

    while not started.wait(0.01):  # a condition with a deadline, not a fixed sleep
        if poll():
            started.set()
        timeout -= 0.01
        if timeout <= 0:
            server.should_exit = True
            raise RuntimeError("uvicorn did not start")
    if not server.started:
        raise RuntimeError("uvicorn exited during start-up (port taken?)")
    sock = server.servers[0].sockets[0]
    bound_host, bound_port = sock.getsockname()[:2]
    try:
        yield f"http://{bound_host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
