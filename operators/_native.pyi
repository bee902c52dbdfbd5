"""Types of the compiled trade scanner (operators/_native.c)."""

from typing import Any

def decode_trades(
    values: list[bytes], prefix: bytes, memo: Any
) -> tuple[list[Any], ...] | None: ...
