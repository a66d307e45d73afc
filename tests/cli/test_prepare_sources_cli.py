"""`unimp prepare` with the Amazon Reviews 2023 and RecBole atomic-file sources."""

import json
from pathlib import Path

from tests.data.amazon_files import shop_2023
from tests.data.contract import assert_dataset_contract

ML100K = Path(__file__).resolve().parents[1] / "assets" / "recbole" / "ml-100k"


def test_prepare_amazon_2023_from_a_local_server(cli, server, tmp_path):
    for rel, body in shop_2023(users=9, items=6).items():
        server.add(f"/amazon_2023/raw/{rel}", body)
    res = cli("prepare", "--datasets", "beauty", "--amazon-version", "2023", "--mirror", server.url + "/amazon_2023/raw",
              "--no-images", "--user-core", 5, "--item-core", 5, "--out", tmp_path / "ds", "--cache-dir", tmp_path / "c")
    assert res.exit_code == 0, res.output + res.stderr
    ds = assert_dataset_contract(tmp_path / "ds", user_core=5, item_core=5)
    assert ds.manifest["source"] == "amazon2023" and ds.manifest["datasets"] == ["beauty"]
    assert ds.manifest["sources"][1]["url"] == server.url + "/amazon_2023/raw/meta_categories/meta_All_Beauty.jsonl.gz"
    assert "9 / 6 / 54" in res.output


def test_amazon_version_names_the_release(cli):
    res = cli("prepare", "--amazon-version", "2023", "--datasets", "beauty", "--dry-run")
    assert res.exit_code == 0 and json.loads(res.output)["source"] == "amazon2023"
    res = cli("prepare", "--amazon-version", "2023", "--list-datasets")
    assert res.exit_code == 0 and "All_Beauty" in res.output and "Baby_Products" in res.output
    res = cli("prepare", "--amazon-version", "2023", "--source", "amazon2014", "--datasets", "beauty")
    assert res.exit_code != 0 and "--source amazon2014 names another source" in res.output + res.stderr
    res = cli("prepare", "--amazon-version", "2020", "--datasets", "beauty")
    assert res.exit_code != 0 and "one of 2014, 2018, 2023" in res.output + res.stderr
    res = cli("prepare", "--amazon-version", "2023", "--datasets", "video", "--no-images")
    assert res.exit_code == 1 and "unknown amazon2023 dataset 'video'" in res.stderr.strip().splitlines()[-1]


def test_prepare_recbole_atomic_files(cli, tmp_path):
    res = cli("prepare", "--source", "recbole", "--input", ML100K, "--protocol", "leave-one-out", "--no-images",
              "--out", tmp_path / "ds", "--cache-dir", tmp_path / "c")
    assert res.exit_code == 0, res.output + res.stderr
    ds = assert_dataset_contract(tmp_path / "ds", user_core=8, item_core=5)
    assert ds.manifest["source"] == "recbole" and ds.manifest["datasets"] == ["ml-100k"]
    assert ds.users.height == 100


def test_recbole_column_mapping_and_its_errors(cli, tmp_path):
    res = cli("prepare", "--source", "recbole", "--input", ML100K, "--column", "category=release_year", "--dry-run")
    spec = json.loads(res.output)
    assert spec["recbole"]["columns"] == {"category": "release_year"} and spec["files"] is None
    assert spec["datasets"] == ["ml-100k"]
    res = cli("prepare", "--source", "recbole", "--input", ML100K, "--column", "category=release_year",
              "--no-images", "--out", tmp_path / "ds", "--cache-dir", tmp_path / "c")
    assert res.exit_code == 0, res.output + res.stderr
    from unimp_core.data.store import load_dataset

    items = load_dataset(tmp_path / "ds").items
    assert set(items["category"].drop_nulls()) <= {str(y) for y in range(1920, 1999)}
    res = cli("prepare", "--source", "recbole", "--input", ML100K, "--column", "rating=stars",
              "--out", tmp_path / "o", "--cache-dir", tmp_path / "c")
    line = res.stderr.strip().splitlines()[-1]
    assert res.exit_code == 1 and "ml-100k.inter" in line and "'stars'" in line and "rating:float" in line
    res = cli("prepare", "--source", "recbole", "--out", tmp_path / "o")
    assert res.exit_code == 1 and "--input" in res.stderr
