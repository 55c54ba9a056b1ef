"""How every `python -m kerasface.<tool>` ends: expected errors as one line on stderr (exit 2),
Ctrl-C as exit 130, no traceback for either."""

from __future__ import annotations

import sys
from typing import Callable

EXPECTED = (KeyError, ValueError, FileNotFoundError, FileExistsError)


def run_command(body: Callable[[], int | None], errors: tuple[type[BaseException], ...] = EXPECTED) -> int:
    try:
        return body() or 0
    except errors as exc:
        # KeyError's str() adds quotes around the message; show the message itself
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
