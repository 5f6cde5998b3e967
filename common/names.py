"""The one grammar for names that become keys: markets, policies, traders.

A name is a Redis hash tag (``fusion:{NAME}:states``), a path segment of the store
(``market-data/NAME/...``, ``models/NAME/...``) and a word in log lines, so it must be safe in all
three. Grammar: 1 to 128 characters from ``A-Z a-z 0-9 _ -``, starting with a letter or digit.
That excludes ``.``/``..``, ``/``, ``{}``, ``:``, whitespace and control characters, so a valid name
can never reach another market's keys or files, leave the store's prefix or forge a log line.

Every entry point (CLI flags, settings, stream discovery, job parameters, events) checks names with
:func:`check_name`; the store checks keys independently (``common.store``).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Literal

NameKind = Literal["market", "policy", "trader", "version", "service"]

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}"
_NAME_RE = re.compile(rf"^{NAME_PATTERN}$")
MAX_NAME_LEN = 128
GRAMMAR = f"1-{MAX_NAME_LEN} characters from A-Z a-z 0-9 _ -, starting with a letter or digit"


class InvalidName(ValueError):
    """A name outside the grammar; the message quotes it safely (``repr``) and says the rule."""

    def __init__(self, kind: str, name: object) -> None:
        shown = repr(name)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"invalid {kind} name {shown}: use {GRAMMAR}")
        self.kind = kind


def is_valid_name(name: object) -> bool:
    """True when ``name`` is a str that follows the grammar."""
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None


def check_name(name: object, kind: NameKind = "market") -> str:
    """``name`` unchanged when it follows the grammar; raises :class:`InvalidName` otherwise."""
    if not is_valid_name(name):
        raise InvalidName(kind, name)
    assert isinstance(name, str)
    return name


def safe_for_log(text: object, limit: int = 200) -> str:
    """``text`` as a single log-safe token: ``repr`` (escapes newlines and control characters), capped."""
    s = repr(text)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def name_arg(kind: NameKind) -> Callable[[str], str]:
    """An argparse ``type=`` for one name: the text unchanged, or a usage error (exit 2) stating the grammar."""

    def parse(text: str) -> str:
        try:
            return check_name(text, kind)
        except InvalidName as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = f"{kind} name"
    return parse


def name_list_arg(kind: NameKind) -> Callable[[str], str]:
    """An argparse ``type=`` for comma-separated names (blanks dropped, at least one): the text unchanged
    once every name follows the grammar; a usage error (exit 2) stating the grammar otherwise."""

    def parse(text: str) -> str:
        names = [n.strip() for n in text.split(",") if n.strip()]
        if not names:
            raise argparse.ArgumentTypeError(f"no {kind} name in {safe_for_log(text, 80)}: use {GRAMMAR}")
        for n in names:
            try:
                check_name(n, kind)
            except InvalidName as e:
                raise argparse.ArgumentTypeError(str(e)) from None
        return text

    parse.__name__ = f"{kind} names"
    return parse
