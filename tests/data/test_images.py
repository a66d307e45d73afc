import time

from tests.data.images_util import gif_1x1, jpeg, png_bomb
from tests.httpserver import Reply
from unimp_core.data import images
from unimp_core.progress import Progress
from unimp_core.specs.data import ImageDownloadSpec


def _spec(**kw):
    return ImageDownloadSpec(**{"timeout": 2.0, "retries": 2, "backoff": 0.01, **kw})


def test_download_success_failures_by_reason_and_cache(server, tmp_path):
    ok = server.add("/ok.jpg", jpeg())
    missing = server.url + "/nope.jpg"
    flaky = server.add("/flaky.jpg", Reply(jpeg(), fail_first=2))
    broken = server.add("/down.jpg", Reply(b"", status=503))
    notimg = server.add("/html.jpg", b"<html>captcha</html>")
    big = server.add("/big.jpg", jpeg(size=(256, 256)))
    res = images.download_images([ok, missing, flaky, broken, notimg, big, ok, "ftp://x/y.jpg"], tmp_path,
                                 _spec(max_bytes=2000), Progress())
    assert res[ok] is None and res[flaky] is None
    assert res[missing] == "http 404"
    assert res[broken] == "http 503"
    assert res[notimg] == "not an image"
    assert res[big] == "too large"
    assert res["ftp://x/y.jpg"] == "invalid url"
    assert images.cache_path(tmp_path, ok).read_bytes() == jpeg()
    # 404 is not retried; 503 is retried `retries` times
    assert sum(1 for p, _ in server.log if p == "/nope.jpg") == 1
    assert sum(1 for p, _ in server.log if p == "/down.jpg") == 3
    # nothing but complete images in the cache, no temporary files left behind
    cached = [p for p in (tmp_path / "images").rglob("*") if p.is_file()]
    assert len(cached) == 2
    # a rerun skips what is cached: no new request for the good ones
    n = len(server.log)
    res2 = images.download_images([ok, flaky], tmp_path, _spec(), Progress())
    assert res2 == {ok: None, flaky: None} and len(server.log) == n


def test_stalled_server_and_truncated_body(server, tmp_path):
    stall = server.add("/stall.jpg", Reply(stall=True))
    cut = server.add("/cut.jpg", Reply(jpeg(size=(64, 64)), truncate_to=100))
    t = time.time()
    res = images.download_images([stall, cut], tmp_path, _spec(timeout=0.5, retries=1), Progress())
    assert res[stall] == "timeout"
    assert res[cut] is None  # truncated once, then retried successfully
    assert time.time() - t < 10


def test_bomb_and_truncated_are_refused(server, tmp_path):
    bomb = server.add("/bomb.png", png_bomb())
    res = images.download_images([bomb], tmp_path, _spec(), Progress())
    assert res[bomb] == "decompression bomb"


def test_materialize_local_and_urls(server, tmp_path):
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg())
    url = server.add("/a.jpg", jpeg((0, 0, 255)))
    jobs = [(0, None, str(good)), (1, url, None), (2, None, None), (3, None, str(tmp_path / "gone.jpg")),
            (4, server.url + "/404.jpg", None)]
    root = tmp_path / "ds"
    placed, counts = images.materialize(jobs, root, tmp_path / "cache", _spec(), Progress())
    assert placed == {0: "images/0.jpg", 1: "images/1.jpg"}
    assert (root / "images/1.jpg").read_bytes() == jpeg((0, 0, 255))
    assert counts["ok"] == 2 and counts["missing"] == 1
    assert counts["failed"] == {"http 404": 1, "missing file": 1}
    # --no-images: nothing downloaded, local files still placed
    placed, counts = images.materialize(jobs, tmp_path / "ds2", tmp_path / "cache2", _spec(enabled=False), Progress())
    assert set(placed) == {0}


def test_identify_local_files(tmp_path):
    for name, data, want in [("a.jpg", jpeg(), None), ("g.gif", gif_1x1(), None),
                             ("t.jpg", b"\xff\xd8garbage", "not an image")]:
        p = tmp_path / name
        p.write_bytes(data)
        assert images.identify(p) == want
