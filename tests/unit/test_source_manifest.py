"""Source manifests (medsegflow.datasets.sources): a line per raw file, rewritten only when a
source really changes, files hashed again only when their size or time changed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medsegflow.datasets import sources
from medsegflow.datasets.sources import SOURCES, update_manifest


def _entry(root: Path, **params) -> dict:
    return {"adapter": "nifti_folder", "params": {"root": str(root), "modality": "CT", **params}}


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    root = tmp_path / "raw"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "imagesTr" / "a_0000.nii.gz").write_bytes(b"image a")
    (root / "labelsTr" / "a.nii.gz").write_bytes(b"label a")
    (root / ".hidden").write_bytes(b"skipped")
    return root


def _manifest(workdir: Path, name: str = "d") -> tuple[str, int]:
    path = workdir / SOURCES.format(dataset=name)
    return path.read_text(encoding="utf-8"), path.stat().st_mtime_ns


def test_manifest_changes_only_with_the_sources(raw, tmp_path, monkeypatch):
    hashed = []
    real_hash = sources._hash
    monkeypatch.setattr(sources, "_hash", lambda p: hashed.append(p.name) or real_hash(p))
    work = tmp_path / "work"
    assert update_manifest("d", _entry(raw), workdir=work) == "results/sources/d.tsv"
    text, mtime = _manifest(work)
    assert text.splitlines()[1:] == [
        "path\tsize\tsha256",
        "imagesTr/a_0000.nii.gz\t7\t" + sources.hashlib.sha256(b"image a").hexdigest(),
        "labelsTr/a.nii.gz\t7\t" + sources.hashlib.sha256(b"label a").hexdigest(),
    ]
    assert sorted(hashed) == ["a.nii.gz", "a_0000.nii.gz"]
    # nothing changed: nothing hashed, nothing written
    hashed.clear()
    update_manifest("d", _entry(raw), workdir=work)
    assert hashed == [] and _manifest(work) == (text, mtime)
    # a touch: hashed again, same content, manifest untouched
    label = raw / "labelsTr" / "a.nii.gz"
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))
    update_manifest("d", _entry(raw), workdir=work)
    assert hashed == ["a.nii.gz"] and _manifest(work) == (text, mtime)
    # an edit of the same size: a new line
    label.write_bytes(b"label b")
    update_manifest("d", _entry(raw), workdir=work)
    new_text, _ = _manifest(work)
    assert new_text != text and sources.hashlib.sha256(b"label b").hexdigest() in new_text


def test_added_removed_and_broken_files_are_lines(raw, tmp_path):
    work = tmp_path / "work"
    update_manifest("d", _entry(raw), workdir=work)
    first, _ = _manifest(work)
    (raw / "imagesTr" / "b_0000.nii.gz").symlink_to("missing.nii.gz")
    (raw / "imagesTr" / "c_0000.nii.gz").symlink_to("c_0000.nii.gz")
    update_manifest("d", _entry(raw), workdir=work)
    text, _ = _manifest(work)
    assert "imagesTr/b_0000.nii.gz\t-1\tdangling" in text.splitlines()
    assert "imagesTr/c_0000.nii.gz\t-1\tloop" in text.splitlines()
    (raw / "imagesTr" / "b_0000.nii.gz").unlink()
    (raw / "imagesTr" / "c_0000.nii.gz").unlink()
    update_manifest("d", _entry(raw), workdir=work)
    assert _manifest(work)[0] == first
    (raw / "labelsTr" / "a.nii.gz").unlink()
    update_manifest("d", _entry(raw), workdir=work)
    assert "labelsTr/a.nii.gz" not in _manifest(work)[0]


def test_generated_datasets_have_no_manifest_and_other_datasets_are_apart(raw, tmp_path):
    work = tmp_path / "work"
    assert (
        update_manifest("p", {"adapter": "phantom", "params": {"kind": "us"}}, workdir=work) == ""
    )
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.nii.gz").write_bytes(b"x")
    update_manifest("d", _entry(raw), workdir=work)
    update_manifest("o", _entry(other), workdir=work)
    before = _manifest(work, "d")
    (other / "x.nii.gz").write_bytes(b"y")
    update_manifest("d", _entry(raw), workdir=work)
    update_manifest("o", _entry(other), workdir=work)
    assert _manifest(work, "d") == before


def test_a_parameter_naming_a_file_outside_the_root_is_tracked(raw, tmp_path):
    split_file = tmp_path / "splits.json"
    split_file.write_text("{}", encoding="utf-8")
    work = tmp_path / "work"
    update_manifest("d", _entry(raw, split_lists=str(split_file)), workdir=work)
    assert f"{split_file}\t2\t" in _manifest(work)[0]


def test_a_dry_run_does_not_hash_a_dataset_seen_for_the_first_time(raw, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    datasets = {"d": _entry(raw)}
    assert sources.update_manifests(datasets, first_scan=False) == {}
    assert not (tmp_path / "results").exists()
    assert sources.update_manifests(datasets) == {"d": "results/sources/d.tsv"}
    (raw / "labelsTr" / "a.nii.gz").write_bytes(b"label c")
    assert sources.update_manifests(datasets, first_scan=False) == {"d": "results/sources/d.tsv"}
    assert sources.hashlib.sha256(b"label c").hexdigest() in _manifest(tmp_path)[0]
    # a cluster job names the manifest the main process wrote, and writes nothing
    (raw / "labelsTr" / "a.nii.gz").write_bytes(b"label d")
    before = _manifest(tmp_path)
    assert sources.update_manifests(datasets, write=False) == {"d": "results/sources/d.tsv"}
    assert _manifest(tmp_path) == before
