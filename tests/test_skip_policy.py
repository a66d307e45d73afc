"""The one rule for optional system parts: skip where they are missing, fail under CI."""

import pytest

from tests.conftest import skip_unless_ci


def test_missing_part_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium"):
        skip_unless_ci("no chromium")


def test_missing_part_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set but no chromium"):
        skip_unless_ci("no chromium")
