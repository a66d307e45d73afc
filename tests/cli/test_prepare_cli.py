import json
import subprocess
import sys

from unimp_cli.common import expand_multi


def test_expand_multi():
    assert expand_multi(["prepare", "--datasets", "beauty", "sports", "--out", "x"]) == [
        "prepare", "--datasets", "beauty", "--datasets", "sports", "--out", "x"]
    assert expand_multi(["--datasets", "a,b"]) == ["--datasets", "a", "--datasets", "b"]
    assert expand_multi(["tokenize-items", "--source", "text", "my,vectors.parquet"]) == [
        "tokenize-items", "--source", "text", "--source", "my,vectors.parquet"]
    assert expand_multi(["prepare", "--source", "files", "--interactions", "a.csv"]) == [
        "prepare", "--source", "files", "--interactions", "a.csv"]


def test_help_is_instant_and_lists_commands():
    code = "import sys, unimp_cli.app; print('torch' in sys.modules, 'polars' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    res = subprocess.run([sys.executable, "-m", "unimp_cli", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "prepare" in res.stdout and "filter-images" in res.stdout


def test_prepare_dry_run_config_and_override(cli, tmp_path):
    cfg = tmp_path / "spec.yaml"
    cfg.write_text("datasets: [sample]\nuser_core: 3\nimages:\n  concurrency: 4\n")
    res = cli("prepare", "--config", cfg, "--user-core", 6, "--dry-run")
    assert res.exit_code == 0, res.output
    spec = json.loads(res.output)
    assert spec["user_core"] == 6 and spec["images"]["concurrency"] == 4 and spec["source"] == "sample"
    toml = tmp_path / "spec.toml"
    toml.write_text('datasets = ["beauty", "sports"]\nprotocol = "leave-one-out"\n')
    spec = json.loads(cli("prepare", "--config", toml, "--dry-run").output)
    assert spec["datasets"] == ["beauty", "sports"] and spec["protocol"] == "leave-one-out"


def test_prepare_bad_config_is_one_line(cli, tmp_path):
    cfg = tmp_path / "spec.json"
    cfg.write_text('{"datasets": ["sample"], "user_cor": 3}')
    res = cli("prepare", "--config", cfg)
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "user_cor" in lines[0] and "spec.json" in lines[0]


def test_prepare_sample_and_filter_images(cli, tmp_path):
    out = tmp_path / "ds"
    res = cli("prepare", "--datasets", "sample", "--out", out, "--cache-dir", tmp_path / "c", "--sample-users", 60,
              "--sample-items", 30)
    assert res.exit_code == 0, res.output
    assert (out / "manifest.json").is_file() and "SYNTHETIC" in res.output
    res = cli("prepare", "--datasets", "sample", "--out", out, "--cache-dir", tmp_path / "c")
    assert res.exit_code == 1 and "--overwrite" in res.stderr
    res = cli("filter-images", "--data", out)
    assert res.exit_code == 0, res.output
    assert "interactions" in res.output and (out / "filter_images_spec.json").is_file()
    res = cli("filter-images", "--data", tmp_path)
    assert res.exit_code == 1 and "manifest.json" in res.stderr


def test_list_datasets_and_unknown_name(cli):
    res = cli("prepare", "--list-datasets")
    assert res.exit_code == 0 and "beauty" in res.output and "Beauty" in res.output
    res = cli("prepare", "--datasets", "beuaty", "--no-images")
    assert res.exit_code == 1
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "beuaty" in line and "beauty" in line and "sports" in line


def test_files_source_missing_column_names_it(cli, tmp_path):
    table = tmp_path / "log.csv"
    table.write_text("customer,sku\nu1,a\n")
    res = cli("prepare", "--source", "files", "--interactions", table, "--column", "user=customer",
              "--column", "item=sku", "--out", tmp_path / "o")
    assert res.exit_code == 1
    line = res.stderr.strip().splitlines()[-1]  # progress bars may precede it on stderr
    assert line.startswith("error: ") and "log.csv" in line and "timestamp" in line


def test_files_source_end_to_end(cli, tmp_path):
    rows = ["who,what,when,stars"] + [f"u{u},i{(u + k) % 12},{1000 + k},{1 + k % 5}" for u in range(30) for k in range(9)]
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    res = cli("prepare", "--source", "files", "--interactions", tmp_path / "log.csv", "--column", "user=who",
              "--column", "item=what", "--column", "timestamp=when", "--column", "rating=stars",
              "--out", tmp_path / "ds", "--cache-dir", tmp_path / "c", "--protocol", "leave-one-out")
    assert res.exit_code == 0, res.output + res.stderr
    from unimp_core.data.store import load_dataset

    ds = load_dataset(tmp_path / "ds")
    assert ds.users.height == 30 and ds.items.height == 12 and ds.interactions.height == 270
    assert ds.manifest["protocol"] == "leave-one-out" and ds.manifest["images"]["missing"] == 12


def test_files_source_with_images_dir_and_explanations_file(cli, tmp_path):
    """`prepare --images-dir` places the local pictures; `--explanations FILE` replaces the
    explanation targets by the file's text wherever (raw user, item) match, and nowhere else."""
    import polars as pl
    from PIL import Image

    from tests.data.images_util import jpeg
    from unimp_core.data.store import load_dataset

    rows = ["who,what,when,stars,summary"] + [f"u{u},i{(u + k) % 12},{1000 + k},{1 + k % 5},summary {u}-{k}"
                                              for u in range(30) for k in range(9)]
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    photos = tmp_path / "photos"
    photos.mkdir()
    colours = {i: (20 * i, 255 - 20 * i, 90) for i in range(0, 12, 2)}  # even items have a picture
    for i, colour in colours.items():
        (photos / f"pic{i}.jpg").write_bytes(jpeg(colour, size=(40, 40)))  # patterned: one flat colour is a placeholder
    items = ["what,title,image_path"] + [f"i{i},Item {i},{f'pic{i}.jpg' if i in colours else ''}" for i in range(12)]
    (tmp_path / "items.csv").write_text("\n".join(items) + "\n")
    explained = {("u3", "i5"): "the colour is lovely", ("u7", "i9"): "fits well", ("u0", "i0"): "great value"}
    lines = [json.dumps({"reviewerID": u, "asin": i, "explanation": text}) for (u, i), text in explained.items()]
    lines += [json.dumps({"reviewerID": "u3", "asin": "i5", "explanation": "a later duplicate, ignored"}),
              json.dumps({"reviewerID": "nobody", "asin": "i1", "explanation": "no such user"})]
    (tmp_path / "exp.jsonl").write_text("\n".join(lines) + "\n")

    res = cli("prepare", "--source", "files", "--interactions", tmp_path / "log.csv", "--items", tmp_path / "items.csv",
              "--column", "user=who", "--column", "item=what", "--column", "timestamp=when", "--column", "rating=stars",
              "--images-dir", photos, "--explanations", tmp_path / "exp.jsonl",
              "--out", tmp_path / "ds", "--cache-dir", tmp_path / "c", "--protocol", "leave-one-out")
    assert res.exit_code == 0, res.output + res.stderr
    ds = load_dataset(tmp_path / "ds")
    assert ds.manifest["explanation_source"] == "explanation file exp.jsonl"
    inter = ds.interactions.join(ds.items.select("item_id", "source_id"), on="item_id")
    got = {(k.split(":", 1)[1], s): e for k, s, e in inter.select("user_key", "source_id", "explanation").iter_rows()
           if e is not None}
    assert got == explained  # matched rows carry the file's text; no summary leaks in elsewhere
    assert inter.filter(pl.col("explanation").is_null()).height == inter.height - 3

    # the pictures: items with one have images/<item_id>.jpg with the same pixels, the others none
    assert ds.manifest["images"]["missing"] == 6
    for item_id, source_id, image in ds.items.select("item_id", "source_id", "image").iter_rows():
        i = int(source_id[1:])
        if i not in colours:
            assert image is None
            continue
        assert image == f"images/{item_id}.jpg"
        with Image.open(tmp_path / "ds" / image) as placed, Image.open(photos / f"pic{i}.jpg") as original:
            assert placed.size == (40, 40) and placed.tobytes() == original.tobytes()


def test_files_source_with_item_attributes(cli, tmp_path):
    """`--items` given a JSON object of item id -> attribute list (the S3-Rec form): the items table's
    `attributes` column, the manifest's figures and the summary line; a bad value under --strict is one
    line naming the file and the key."""
    from unimp_core.data.store import load_dataset

    rows = ["user,item,timestamp"] + [f"{u},{1 + (u + k) % 12},{k}" for u in range(30) for k in range(9)]
    (tmp_path / "seq.csv").write_text("\n".join(rows) + "\n")
    attrs = {str(i): [i % 4, 10 + i % 3] for i in range(1, 13)} | {"99": [1]}
    (tmp_path / "item2attributes.json").write_text(json.dumps(attrs))
    args = ["prepare", "--source", "files", "--interactions", tmp_path / "seq.csv", "--items",
            tmp_path / "item2attributes.json", "--protocol", "leave-one-out", "--no-images",
            "--cache-dir", tmp_path / "c"]
    res = cli(*args, "--out", tmp_path / "ds")
    assert res.exit_code == 0, res.output + res.stderr
    assert "items with attributes" in res.output and "12 (7 distinct, 2.0 per item)" in res.output
    ds = load_dataset(tmp_path / "ds")
    assert ds.manifest["counts"]["attributes"] == {"items_with_attributes": 12, "distinct_attributes": 7,
                                                   "mean_per_item": 2.0}
    assert ds.manifest["skipped"] == {"item2attributes.json: key matches no interacted item": 1}
    got = dict(ds.items.select("source_id", "attributes").iter_rows())
    assert got["5"] == ["1", "12"] and got["12"] == ["0", "10"]

    (tmp_path / "item2attributes.json").write_text(json.dumps(attrs | {"7": "[3, 4"}))
    res = cli(*args, "--out", tmp_path / "strict", "--strict")
    assert res.exit_code == 1
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "item2attributes.json: key '7': attributes:" in line


def test_ids_only_real_sequences_print_no_empty_promises(cli, tmp_path):
    """The real Beauty sequences (ids only) with --no-images: no bar without a total, no image step,
    one line naming the tasks left out, and no claim about explanations."""
    from tests.data.test_files import BEAUTY_SEQ, _sequences_to_table
    from unimp_core.data.store import load_dataset

    lines = [line for line in BEAUTY_SEQ.read_text().splitlines() if line.strip()]
    _sequences_to_table(lines, tmp_path / "beauty.csv")
    res = cli("prepare", "--source", "files", "--interactions", tmp_path / "beauty.csv", "--no-images",
              "--protocol", "leave-one-out", "--user-core", 5, "--item-core", 5,
              "--out", tmp_path / "ds", "--cache-dir", tmp_path / "c")
    assert res.exit_code == 0, res.output
    out = res.output
    assert "0/0" not in out and "image" not in out.replace("no item images", "") and "explanations from" not in out
    assert "reading beauty.csv" in out
    skipped = [line for line in out.splitlines() if "skipped tasks" in line]
    assert skipped == ["skipped tasks: search (no item categories to query); exp (no reviews); "
                       "img_sel, img_gen (no item images)"]
    assert set(load_dataset(tmp_path / "ds").instances) == {"rec"}
