"""Where an artefact comes from: the project's git commit, recorded in weights sidecars and exported models."""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=1)
def project_commit() -> str | None:
    """The checkout's commit hash, with ``-dirty`` when tracked files differ from it; None outside a git checkout."""
    def git(*arguments: str) -> str | None:
        try:
            result = subprocess.run(["git", "-C", str(REPO_ROOT), *arguments], capture_output=True, text=True,
                                    timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
