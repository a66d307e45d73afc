import hashlib
import os
import time

import pytest

from tests.httpserver import Reply
from unimp_core.data import fetch as fetch_module
from unimp_core.data.fetch import FetchJob, fetch_files
from unimp_core.errors import UnimpError
from unimp_core.progress import Progress

BODY = os.urandom(3_000_000)  # several read chunks, so partial transfers are real
SHA = hashlib.sha256(BODY).hexdigest()


def fetch(jobs, cache, mirror=None, **kw):
    kw.setdefault("timeout", 5.0)
    kw.setdefault("backoff", 0.0)
    return fetch_files(jobs, cache, mirror, Progress(), **kw)


def test_download_records_and_reuse_without_request(server, tmp_path):
    server.add("/base/sub/data.json.gz", BODY)
    job = FetchJob(server.url + "/base/", "sub/data.json.gz")
    [got] = fetch([job], tmp_path)
    assert got.path == tmp_path / "data.json.gz"
    assert got.path.read_bytes() == BODY
    assert got.record() == {"file": "data.json.gz", "url": job.url, "bytes": len(BODY), "sha256": SHA}
    assert not (tmp_path / "data.json.gz.part").exists()
    requests = len(server.log)
    [again] = fetch([job], tmp_path)
    assert len(server.log) == requests  # a complete file is reused with no request
    assert again.sha256 == SHA


def test_resume_from_part_uses_range_and_is_byte_identical(server, tmp_path):
    server.add("/f.gz", BODY)
    (tmp_path / "f.gz.part").write_bytes(BODY[:1_234_567])
    [got] = fetch([FetchJob(server.url, "f.gz")], tmp_path)
    assert server.log == [("/f.gz", "bytes=1234567-")]
    assert got.path.read_bytes() == BODY
    assert got.sha256 == SHA  # the hash covers the kept prefix too


def test_dropped_connection_resumes(server, tmp_path):
    server.add("/f.gz", Reply(BODY, truncate_to=1_000_000))
    [got] = fetch([FetchJob(server.url, "f.gz")], tmp_path, retries=2)
    assert got.path.read_bytes() == BODY
    assert server.log[0] == ("/f.gz", None)
    assert server.log[-1][1] is not None and server.log[-1][1].startswith("bytes=")


def test_whole_part_is_finished_without_downloading_again(server, tmp_path):
    server.add("/f.gz", BODY)  # 416 with Content-Range: bytes */LENGTH, as RFC 9110 servers answer
    (tmp_path / "f.gz.part").write_bytes(BODY)  # complete, but interrupted before the rename
    [got] = fetch([FetchJob(server.url, "f.gz")], tmp_path, retries=2)
    assert server.log == [("/f.gz", f"bytes={len(BODY)}-")]  # one request, no body transferred
    assert got.path.read_bytes() == BODY and got.sha256 == SHA
    assert not (tmp_path / "f.gz.part").exists()


def test_part_longer_than_the_file_starts_over(server, tmp_path):
    server.add("/f.gz", BODY)
    (tmp_path / "f.gz.part").write_bytes(BODY + b"stray tail")  # 416 names a smaller length
    [got] = fetch([FetchJob(server.url, "f.gz")], tmp_path, retries=2)
    assert server.log == [("/f.gz", f"bytes={len(BODY) + 10}-"), ("/f.gz", None)]
    assert got.path.read_bytes() == BODY and got.sha256 == SHA


def test_whole_part_refused_with_a_bare_416_starts_over(server, tmp_path):
    server.add("/f.gz", Reply(BODY, range_416_header=False))  # no length: the part cannot be trusted
    (tmp_path / "f.gz.part").write_bytes(BODY)
    [got] = fetch([FetchJob(server.url, "f.gz")], tmp_path, retries=2)
    assert got.path.read_bytes() == BODY
    assert server.log == [("/f.gz", f"bytes={len(BODY)}-"), ("/f.gz", None)]


def test_server_answering_the_wrong_range_starts_over(server, tmp_path):
    server.add("/f.gz", Reply(BODY, ranges="wrong"))  # 206 from byte 0 although asked for 1234567-
    (tmp_path / "f.gz.part").write_bytes(BODY[:1_234_567])
    [got] = fetch([FetchJob(server.url, "f.gz")], tmp_path, retries=2)
    assert server.log == [("/f.gz", "bytes=1234567-"), ("/f.gz", None)]
    assert got.path.read_bytes() == BODY and got.sha256 == SHA


def test_server_ignoring_range_replaces_the_part(server, tmp_path):
    server.add("/f.gz", Reply(BODY, ranges="ignore"))  # a plain 200 with the whole file
    (tmp_path / "f.gz.part").write_bytes(os.urandom(1_234_567))  # not a prefix of BODY: must not survive
    [got] = fetch([FetchJob(server.url, "f.gz")], tmp_path, retries=2)
    assert server.log == [("/f.gz", "bytes=1234567-")]
    assert got.path.read_bytes() == BODY and got.sha256 == SHA


def test_dropped_connection_on_a_server_without_ranges_restarts_whole(server, tmp_path):
    server.add("/f.gz", Reply(BODY, truncate_to=1_000_000, ranges="ignore"))
    [got] = fetch([FetchJob(server.url, "f.gz")], tmp_path, retries=2)
    assert len(server.log) == 2 and server.log[1][1] == "bytes=1000000-"
    assert got.path.read_bytes() == BODY and got.sha256 == SHA


def test_404_is_one_line_error_naming_url_and_mirror(server, tmp_path):
    job = FetchJob(server.url + "/", "missing.json.gz")
    with pytest.raises(UnimpError) as err:
        fetch([job], tmp_path, retries=3)
    msg = str(err.value)
    assert "\n" not in msg and job.url in msg and "--mirror" in msg
    assert len(server.log) == 1  # 404 is not retried


def test_500_is_retried_then_succeeds(server, tmp_path):
    server.add("/f.gz", Reply(BODY, fail_first=2))
    [got] = fetch([FetchJob(server.url, "f.gz")], tmp_path, retries=3)
    assert got.path.read_bytes() == BODY
    assert len(server.log) == 3


def test_500_gives_up_after_retries(server, tmp_path):
    server.add("/f.gz", Reply(BODY, fail_first=10))
    with pytest.raises(UnimpError, match=r"HTTP 500.*gave up after 1 retries"):
        fetch([FetchJob(server.url, "f.gz")], tmp_path, retries=1)
    assert len(server.log) == 2


def test_stalled_server_times_out(server, tmp_path):
    server.add("/f.gz", Reply(stall=True))
    t0 = time.monotonic()
    with pytest.raises(UnimpError, match="timed out") as err:
        fetch([FetchJob(server.url, "f.gz")], tmp_path, timeout=0.3, retries=1)
    assert time.monotonic() - t0 < 5
    assert "\n" not in str(err.value)
    assert not (tmp_path / "f.gz").exists()


def test_mirror_url_keeps_layout_or_is_flat(server, tmp_path):
    official = FetchJob("http://official.invalid/data/", "reviews/a.json.gz")  # never contacted
    server.add("/mirror/reviews/a.json.gz", BODY)
    [got] = fetch([official], tmp_path / "c1", mirror=server.url + "/mirror")
    assert got.url == server.url + "/mirror/reviews/a.json.gz" and got.path.read_bytes() == BODY
    server.add("/flat/a.json.gz", BODY)
    [got] = fetch([official], tmp_path / "c2", mirror=server.url + "/flat/")
    assert got.url == server.url + "/flat/a.json.gz" and got.sha256 == SHA
    assert ("/flat/reviews/a.json.gz", None) in server.log  # the official layout is tried first
    [cached] = fetch([official], tmp_path / "c2")  # reused later without a mirror: keeps its origin
    assert cached.url == server.url + "/flat/a.json.gz"


def test_mirror_folder_is_used_in_place_and_hash_cached(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "sub").mkdir(parents=True)
    (mirror / "sub" / "a.gz").write_bytes(BODY)
    (mirror / "b.gz").write_bytes(b"flat file")
    jobs = [FetchJob("http://official.invalid/", "sub/a.gz"), FetchJob("http://official.invalid/", "x/b.gz")]
    cache = tmp_path / "cache"
    got = fetch(jobs, cache, mirror=str(mirror))
    assert [g.path for g in got] == [(mirror / "sub" / "a.gz").resolve(), (mirror / "b.gz").resolve()]
    assert got[0].sha256 == SHA and got[1].bytes == 9
    assert not (cache / "a.gz").exists()  # not copied

    calls = []
    monkeypatch.setattr(fetch_module, "sha256_file", lambda p: calls.append(p) or "x")
    fetch(jobs, cache, mirror=str(mirror))
    assert calls == []  # unchanged size and mtime: the cached hash is used
    (mirror / "b.gz").write_bytes(b"changed, longer")
    again = fetch(jobs, cache, mirror=str(mirror))
    assert len(calls) == 1 and again[1].sha256 == "x"


def test_mirror_folder_missing_file_or_folder(tmp_path):
    job = FetchJob("http://official.invalid/", "sub/a.gz")
    with pytest.raises(UnimpError, match=r"no sub/a.gz"):
        fetch([job], tmp_path / "c", mirror=str(tmp_path))
    with pytest.raises(UnimpError, match=r"not a folder or http\(s\) URL"):
        fetch([job], tmp_path / "c", mirror=str(tmp_path / "absent"))
    (tmp_path / "a.gz").write_bytes(b"x")
    [got] = fetch([job], tmp_path / "c", mirror=f"file://{tmp_path}")
    assert got.path == (tmp_path / "a.gz").resolve()
