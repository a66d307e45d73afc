"""`unimp serve` on the command line: help, the resolved spec, and a run that cannot be served."""

from __future__ import annotations

import json


def test_help_lists_the_options(cli):
    res = cli("serve", "--help")
    assert res.exit_code == 0
    for option in ("--run", "--host", "--port", "--checkpoint", "--max-batch", "--max-wait-ms", "--api-key",
                   "--max-pending", "--timeout-s", "--max-body-kb", "--read-timeout-s"):
        assert option in res.stdout, option
    assert "127.0.0.1" in res.stdout


def test_dry_run_prints_the_spec_without_the_key(cli, tmp_path):
    res = cli("serve", "--run", tmp_path, "--port", "9000", "--max-batch", "8", "--api-key", "topsecret-1",
              "--read-timeout-s", "2.5", "--dry-run")
    assert res.exit_code == 0, res.output
    spec = json.loads(res.stdout)
    assert spec["port"] == 9000 and spec["max_batch"] == 8 and spec["host"] == "127.0.0.1"
    assert spec["read_timeout_s"] == 2.5
    assert "topsecret" not in res.stdout and spec["api_key"] == "**********"


def test_bad_options_are_one_line(cli, tmp_path):
    for args, word in ((["--max-batch", "0"], "max_batch"), (["--checkpoint", "latest"], "checkpoint"),
                       (["--api-key", "short"], "api_key"), (["--read-timeout-s", "0"], "read_timeout_s")):
        res = cli("serve", "--run", tmp_path, *args)
        assert res.exit_code == 1, args
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and word in lines[0], (args, lines)


def test_a_short_api_key_is_counted_in_characters(cli, tmp_path):
    # issue 22, fault 8: it was "at least 8 items"
    res = cli("serve", "--run", tmp_path, "--api-key", "short", "--dry-run")
    assert res.exit_code == 1
    assert "api_key: Value error, an API key needs at least 8 characters (this one has 5)" in res.stderr
    assert "items" not in res.stderr and "short" not in res.stderr


def test_a_folder_that_is_no_run_fails_in_one_line(cli, tmp_path):
    res = cli("serve", "--run", tmp_path, "--port", "0")
    assert res.exit_code == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "cannot load the model" in last and str(tmp_path) in last
