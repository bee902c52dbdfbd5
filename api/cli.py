"""``marketdata api``: the REST/WebSocket API and the dashboard (flags override MD_API_HOST,
MD_API_PORT and MD_REDIS_URL)."""

from __future__ import annotations

import argparse
import os
from typing import Any

__all__ = ["cmd_api", "port", "register"]


def port(text: str) -> int:
    """An argparse type: a TCP port number (a port above 65535 was silently taken modulo 65536)."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535; the flag or "
                                         "MD_API_PORT)")
    return n


def cmd_api(args: argparse.Namespace) -> int:
    from api.app import create_app
    from api.server import run
    from dataflows.config import CommonConfig, from_env

    redis_url = args.redis_url or from_env(CommonConfig).redis_url
    host = args.host or os.environ.get("MD_API_HOST") or "127.0.0.1"
    print(f"marketdata api on http://{host}:{args.port}/ (Redis {redis_url}); "
          f"dashboard: http://{host}:{args.port}/?ex=binance&sym=ETH-USDT", flush=True)
    run(create_app(redis_url), host, args.port, log_level=str(args.log_level or "info").lower())
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "api", help="serve the REST API, WebSocket push and the dashboard",
        description="Serve /v1/* (REST), /v1/stream (WebSocket push), /metrics, /healthz and the "
        "dashboard at / over the Redis the flows write.")
    p.add_argument("--host", help="bind address (MD_API_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=port, default=os.environ.get("MD_API_PORT") or "8000",
                   help="port (MD_API_PORT, default 8000)")
    p.add_argument("--redis-url", dest="redis_url", help="Redis (MD_REDIS_URL)")
    p.set_defaults(func=cmd_api)
