"""`unimp generate` on the command line: listing users, errors, tables, JSON and HTML."""

from __future__ import annotations

import json

import pytest

from tests.evaluation.trained import trained_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


def test_list_users(cli, run):
    res = cli("generate", "--run", run, "--list-users")
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert lines[0] == "user_id\tuser_key\tsplit\tlength" and lines[1].startswith("0\tsynthetic:")
    users = json.loads(cli("generate", "--run", run, "--list-users", "--json").stdout)
    assert len(users) == len(lines) - 1 and users[0]["user_id"] == 0


def test_unknown_user_says_how_to_list_users(cli, run):
    res = cli("generate", "--run", run, "--user", "nobody")
    assert res.exit_code == 1
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "nobody" in line and "--list-users" in line


def test_option_errors_are_one_line(cli, run):
    for args, word in ((["--task", "search", "--user", "1"], "--query"), (["--user", "1", "--history", "3,4"], "--history"),
                       (["--user", "1", "--item", "3"], "--item"), ([], "--user")):
        res = cli("generate", "--run", run, *args)
        assert res.exit_code == 1, args
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and word in lines[0], (args, lines)


def test_rec_table_json_and_html(cli, run, tmp_path):
    page = tmp_path / "out" / "page.html"
    res = cli("generate", "--run", run, "--user", "synthetic:u00003", "-k", "4", "--html", page)
    assert res.exit_code == 0, res.output
    assert "recent history" in res.output and "recommended next" in res.output and "SYNTHETIC" in res.output
    assert page.is_file() and "data:image/jpeg;base64," in page.read_text()
    res = cli("generate", "--run", run, "--user", "3", "-k", "4", "--json")
    result = json.loads(res.stdout)
    assert result["user"]["user_id"] == 3 and len(result["recommendations"]) == 4


def test_an_existing_file_is_not_replaced_without_force(cli, run, tmp_path):
    # issue 22, fault 2: --html replaced the user's own notes.txt with the page, exit 0
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    res = cli("generate", "--run", run, "--user", "5", "--html", notes)
    assert res.exit_code == 1 and notes.read_text() == "my notes"
    assert res.stderr.strip().splitlines()[-1] == f"error: --html {notes}: the file exists; add --force to replace it"
    assert cli("generate", "--run", run, "--user", "5", "--html", notes, "--force").exit_code == 0
    assert "<!doctype html>" in notes.read_text()


def test_a_file_that_appears_during_the_run_is_kept(tmp_path):
    from unimp_core.errors import UnimpError
    from unimp_core.generation import write_output

    page = tmp_path / "page.html"
    page.write_text("made meanwhile")  # after check_writable, before the write
    with pytest.raises(UnimpError, match="the file exists; add --force"):
        write_output(page, b"<html>", "--html", replace=False)
    assert page.read_text() == "made meanwhile" and [p.name for p in tmp_path.iterdir()] == ["page.html"]
    write_output(page, b"<html>", "--html", replace=True)
    assert page.read_text() == "<html>"


def test_other_tasks(cli, run):
    res = cli("generate", "--run", run, "--history", "1,2,3", "--task", "exp", "--item", "5", "--max-new-tokens", "8")
    assert res.exit_code == 0, res.output
    assert "rating:" in res.output and "explanation:" in res.output and "unseen" in res.output
    res = cli("generate", "--run", run, "--user", "2", "--task", "img_sel", "--candidates", "4,5,6", "--json")
    assert [c["item_id"] for c in json.loads(res.stdout)["candidates"]] == [4, 5, 6]
    res = cli("generate", "--run", run, "--user", "2", "--task", "search", "--query", "Mugs", "-k", "2")
    assert res.exit_code == 0 and "Mugs" in res.output
