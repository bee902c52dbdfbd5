"""Types of the compiled trade scanner (operators/_native.c)."""

from typing import Any

def decode_trades(
    values: list[bytes], prefix: bytes, memo: Any
) -> tuple[list[Any], ...] | None: ...
def book_levels(
    px_memo: Any, qty_memo: Any, raw: Any
) -> list[tuple[int, str, int, str]] | None: ...
