"""The `juki` command line's parsers: every option's help names its default."""

from __future__ import annotations

import argparse
from typing import Any


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: …)" after each option's help, except where there is nothing to say (no
    default, a flag, an empty value) or the help text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, "", [], argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """The parser of `juki` and, through `add_subparsers`, of every subcommand (argparse makes subparsers
    of the parser's own class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelp)
        super().__init__(*args, **kwargs)
