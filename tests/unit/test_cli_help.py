"""`juki --help` and every subcommand's help describe every option, with its default (issue 14)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from jukitools.cli import _parser


def _parsers(parser: argparse.ArgumentParser, path: str = "juki") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_of_every_command_has_a_description() -> None:
    missing = [f"{path} {action.dest}" for path, parser in _parsers(_parser()) for action in parser._actions
               if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction) and not action.help]
    assert not missing, f"options without help: {missing}"


def test_every_subcommand_has_a_description() -> None:
    missing = [f"{path} {choice.dest}" for path, parser in _parsers(_parser()) for action in parser._actions
               if isinstance(action, argparse._SubParsersAction) for choice in action._choices_actions
               if not choice.help]
    assert not missing, f"subcommands without help: {missing}"


def test_every_default_is_shown_in_the_help() -> None:
    hidden = []
    for path, parser in _parsers(_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            shown = formatter._get_help_string(action) or ""  # type: ignore[attr-defined]
            if action.option_strings and action.default not in (None, False, "", [], argparse.SUPPRESS) \
                    and not isinstance(action, argparse._HelpAction) and "default" not in shown:
                hidden.append(f"{path} {action.option_strings[0]}")
    assert not hidden, f"defaults not shown: {hidden}"
