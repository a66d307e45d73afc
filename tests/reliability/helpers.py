"""What every hostile-input test checks: one `error:` line, exit code 1, and nothing touched."""

from __future__ import annotations

import os
from pathlib import Path


def snapshot(root: Path) -> dict[str, object]:
    """Every entry under `root` (hidden ones included) with its bytes, link target or 'dir'."""
    out: dict[str, object] = {}
    for p in sorted(Path(root).rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = p.read_bytes()
    return out


def one_line_error(res, *needles: str) -> str:
    """Assert a CliRunner result is exit code 1, no traceback, and ends in one `error: ...` line naming
    `needles`; returns that line."""
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    # Progress bars (stderr) may come first; the error is the one last line.
    lines = res.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), res.stderr
    assert sum(line.startswith("error:") for line in lines) == 1, res.stderr
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]
