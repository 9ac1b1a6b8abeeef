"""Command lines that read `@FILE` as more arguments, so a fixed list of projects and runs
(the tuning runs, the held-out families) lives in one file, not in every command."""

from __future__ import annotations

import argparse
import re
import shlex

# `# sets: NAME ...` in an argument file: the sets of configs/datasets.yaml that make the
# runs it reads (tests/test_argument_files.py holds every shipped file to its line).
SETS_LINE = re.compile(r"\s*#\s*sets:(.*)")


class ArgumentFileParser(argparse.ArgumentParser):
    """argparse that expands `@FILE`: shell words, any number per line, `#` comments. The
    namespace's `dataset_sets` lists the sets the files' `# sets:` lines name, in the order
    read (datasets.require_projects names them where a project or run is not made)."""

    def __init__(self, **kw):
        super().__init__(fromfile_prefix_chars="@", **kw)
        self._sets: list[str] = []

    def convert_arg_line_to_args(self, arg_line: str) -> list[str]:
        declared = SETS_LINE.match(arg_line)
        if declared:
            self._sets += [s for s in declared.group(1).split() if s not in self._sets]
        return shlex.split(arg_line, comments=True)

    def parse_known_args(self, args=None, namespace=None):
        self._sets = []
        namespace, extras = super().parse_known_args(args, namespace)
        namespace.dataset_sets = list(self._sets)
        return namespace, extras
