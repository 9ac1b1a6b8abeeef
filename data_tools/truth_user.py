"""Whose picks are the ground truth: copick names picks files USER_SESSION_PARTICLE.json,
and session "0" is a tool's. `--truth-user USER[:SESSION]` picks a person's set."""

from __future__ import annotations

import re

import numpy as np

from data_tools.particles import DataError

GT_USER, GT_SESSION = "curation", "0"
# copick's own convention (CopickPicks.from_tool): session "0" is a tool's output, any other
# session a person's. infer writes its picks as session 0, so they are never read as truth.
TOOL_SESSION = "0"

def parse_truth_user(spec: str | None, flag: str = "--truth-user"
                     ) -> tuple[str | None, str | None]:
    """"USER" or "USER:SESSION" (copick's picks file names: USER_SESSION_PARTICLE.json) ->
    (user, session or None); None or "" -> (None, None). `flag` names it in the error."""
    if not spec:
        return None, None
    user, _, session = spec.partition(":")
    check_picks_name(user, "user", f"{flag} {spec!r}")
    if session:
        check_picks_name(session, "session", f"{flag} {spec!r}")
    return user, session or None


def check_picks_name(name: str, what: str, where: str) -> str:
    """A picks user or session id as copick's file names can hold it: an underscore would
    split USER_SESSION_PARTICLE.json in the wrong place, and the picks would read as another
    user's or another particle's. `where` names the flag or call in the error."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9.\-]+", name):
        raise DataError(f"{where}: the {what} must be letters, digits, '.' or '-', got "
                        f"{name!r} (copick names picks USER_SESSION_PARTICLE.json)")
    return name


def scoring_truth(truth: dict[str, np.ndarray], unknown: list[str]
                  ) -> dict[str, np.ndarray]:
    """CopickProject.training_truth's picks less the particles a background voxel may also
    be: what scoring reads (CopickProject.read_truth)."""
    return {k: v for k, v in truth.items() if k not in unknown}


def add_truth_user_argument(ap) -> None:
    """--truth-user, for every command that reads ground-truth picks."""
    ap.add_argument("--truth-user", metavar="USER[:SESSION]",
                    help="whose picks are the ground truth (default: the 'curation' user's, "
                         "else those people made, each particle one user's; never a "
                         "tool's, session 0)")
