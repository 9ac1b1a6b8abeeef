"""Command lines that read `@FILE` as more arguments, so a fixed list of projects and runs
(the tuning runs, the held-out families) lives in one file, not in every command."""

from __future__ import annotations

import argparse
import shlex


class ArgumentFileParser(argparse.ArgumentParser):
    """argparse that expands `@FILE`: shell words, any number per line, `#` comments."""

    def __init__(self, **kw):
        super().__init__(fromfile_prefix_chars="@", **kw)

    def convert_arg_line_to_args(self, arg_line: str) -> list[str]:
        return shlex.split(arg_line, comments=True)
