"""Bad input through the whole workflow: one line naming the file or key, no traceback on the
console, nothing silently dropped or accepted, stale results never kept (docs/bad_input.md).

One small workspace is shared by the module: a 3D dataset (a real CT crop from
``../shared/data``) and a generated ultrasound one, scored once with a classical method. Every
bad dataset is then added beside them, and each case asserts the exact line its job or the
config check prints, the exit status, the job log (the same line, then the traceback), and
that the good datasets' results are untouched.
"""

from __future__ import annotations

import copy
import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

pytestmark = pytest.mark.slow  # the shared workspace takes a minute to score

PROFILE_NOTICE = "Using workflow specific profile"
GOOD_TARGETS = ["results/metrics/spleen/otsu_box.csv", "results/metrics/phantom_us/otsu_box.csv"]
GOOD_FILES = [
    "results/data/spleen/cases.tsv",
    "results/data/phantom_us/cases.tsv",
    *GOOD_TARGETS,
]
BASE_CONFIG = {
    "seed": 1,
    "datasets": {
        "phantom_us": {"adapter": "phantom", "params": {"kind": "us", "n_cases": 4}},
        "spleen": {
            "adapter": "nifti_folder",
            "params": {"root": "raw/spleen", "modality": "CT", "split_all": "test"},
        },
    },
    "prompts": {"box": {"source": "gt", "type": "box"}},
    "methods": {"otsu_box": {"family": "classical", "algorithm": "otsu", "prompts": "box"}},
}


def console_lines(result: subprocess.CompletedProcess) -> list[str]:
    """stderr's lines without Snakemake's note on the profile it found beside the Snakefile."""
    return [ln for ln in result.stderr.splitlines() if not ln.startswith(PROFILE_NOTICE)]


def first_line(result: subprocess.CompletedProcess) -> str:
    lines = console_lines(result)
    return lines[0] if lines else ""


def snapshot(workdir: Path) -> dict[str, tuple[int, bytes]]:
    """Modification time and content of the good datasets' results."""
    return {
        name: ((workdir / name).stat().st_mtime_ns, (workdir / name).read_bytes())
        for name in GOOD_FILES
    }


def write_nifti(
    path: Path, array: np.ndarray, spacing=(1.0, 1.0, 2.0), origin=None, direction=None
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [sitk.GetImageFromArray(a) for a in (array if array.ndim == 4 else [array])]
    for frame in frames:
        frame.SetSpacing(spacing)
        if origin is not None:
            frame.SetOrigin(origin)
        if direction is not None:
            frame.SetDirection(direction)
    sitk.WriteImage(sitk.JoinSeries(frames) if array.ndim == 4 else frames[0], str(path))
    return path


def set_pixdim(path: Path, axis: int, value: float) -> None:
    """Write ``value`` into the NIfTI-1 header's ``pixdim[axis]`` (a .nii.gz file)."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[76 + 4 * axis : 80 + 4 * axis] = np.float32(value).tobytes()
    path.write_bytes(gzip.compress(bytes(raw)))


def ramp(shape=(3, 4, 5)) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)


def label(shape=(3, 4, 5), value: int = 1) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    out[1, 1:3, 1:4] = value
    return out


def nnunet_dataset(root: Path) -> tuple[Path, Path]:
    """A good case ``ok`` and the (image, label) paths of the bad case ``bad``."""
    write_nifti(root / "imagesTr" / "ok_0000.nii.gz", ramp())
    write_nifti(root / "labelsTr" / "ok.nii.gz", label())
    return root / "imagesTr" / "bad_0000.nii.gz", root / "labelsTr" / "bad.nii.gz"


# --- the shared workspace -------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, shared_data, snakemake):
    """The two good datasets scored once; ``(workdir, snapshot of their results)``."""
    workdir = tmp_path_factory.mktemp("bad_input")
    spleen = workdir / "raw" / "spleen"
    (spleen / "imagesTr").mkdir(parents=True)
    (spleen / "labelsTr").mkdir(parents=True)
    source = shared_data / "msd_spleen_crop"
    shutil.copy(source / "sub-spleen2_ct.nii.gz", spleen / "imagesTr" / "s1_0000.nii.gz")
    shutil.copy(source / "sub-spleen2_ct_seg-manual.nii.gz", spleen / "labelsTr" / "s1.nii.gz")
    snakemake(GOOD_TARGETS, cwd=workdir, config=BASE_CONFIG, check=True)
    return workdir, snapshot(workdir)


def assert_good_results_intact(workspace) -> None:
    workdir, before = workspace
    assert snapshot(workdir) == before


def with_datasets(**datasets) -> dict:
    config = copy.deepcopy(BASE_CONFIG)
    config["datasets"].update(datasets)
    return config


# --- config errors: found while the Snakefile is parsed, before any job ---------------------


def _config_case(name: str) -> tuple[dict | str, str]:
    """(config, or the text of a config file; the exact line expected)."""
    config = copy.deepcopy(BASE_CONFIG)
    methods, prompts = config["methods"], config["prompts"]
    if name == "unknown_key":
        config["bogus"] = 3
        return config, (
            "invalid config: bogus: unknown key; allowed: ablations, clip_models, datasets, "
            "debug, figures, methods, metrics, preprocess, prompts, robustness, sam_models, "
            "scale, seed, tables, weights"
        )
    if name == "wrong_type":
        config["seed"] = "one"
        return config, "invalid config: seed: 'one' is not of type 'integer'"
    if name == "negative_jitter":
        prompts["box"]["jitter"] = -5
        return config, "invalid config: prompts.box.jitter: -5 is less than the minimum of 0"
    if name == "negative_seed":
        config["seed"] = -1
        return config, "invalid config: seed: -1 is less than the minimum of 0"
    if name == "unknown_family":
        methods["otsu_box"]["family"] = "classic"
        from medsegflow.families.registry import FAMILIES

        return config, (
            f"invalid config: methods.otsu_box.family: 'classic' is not one of {sorted(FAMILIES)}"
        )
    if name == "undefined_prompt_set":
        methods["otsu_box"]["prompts"] = "boxes"
        return config, "methods.otsu_box.prompts: unknown prompt set 'boxes'; known: box"
    if name == "missing_weights":
        config["weights"] = {"sam_vit_b": "weights/sam_vit_b_01ec64.pth"}
        config["sam_models"] = {"sam_vit_b": {"arch": "vit_b", "weights": "sam_vit_b"}}
        methods["sam_box"] = {"family": "sam", "model": "sam_vit_b", "prompts": "box"}
        return config, "missing weight files (download them or change weights: in the config):"
    if name == "duplicate_key":
        text = yaml.safe_dump(config, sort_keys=False)
        text = text.replace("    type: box\n", "    type: box\n    jitter: 5\n    jitter: 10\n")
        return text, "duplicate key 'prompts.box.jitter'"
    if name == "not_yaml":  # Snakemake reads the file before the Snakefile runs: its words
        return "seed: [1\n", "WorkflowError:"
    raise AssertionError(name)


CONFIG_CASES = [
    "unknown_key",
    "wrong_type",
    "negative_jitter",
    "negative_seed",
    "unknown_family",
    "undefined_prompt_set",
    "missing_weights",
    "duplicate_key",
    "not_yaml",
]


@pytest.mark.parametrize("name", CONFIG_CASES)
def test_config_error_is_one_line_before_any_job(name, workspace, snakemake):
    workdir, _ = workspace
    config, expected = _config_case(name)
    path = workdir / "config_bad.yaml"
    if isinstance(config, str):
        path.write_text(config, encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    (workdir / "config.yaml").unlink(missing_ok=True)
    path.rename(workdir / "config.yaml")
    result = snakemake(GOOD_TARGETS, cwd=workdir, config="config.yaml")
    assert result.returncode == 1, result.stderr
    if name == "duplicate_key":
        line = first_line(result)
        assert line.startswith(f"{workdir / 'config.yaml'}, line ") and expected in line, line
        assert line.endswith("; give each key once")
    else:
        assert first_line(result) == expected, result.stderr
    if name == "missing_weights":
        assert console_lines(result)[1].startswith(
            "weights.sam_vit_b: file not found at weights/sam_vit_b_01ec64.pth"
        ), result.stderr
    elif name == "not_yaml":
        assert console_lines(result)[1].startswith("Config file is not valid JSON or YAML")
    else:
        assert len(console_lines(result)) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "Building DAG" not in result.stdout + result.stderr  # stopped before planning
    assert_good_results_intact(workspace)


# --- bad datasets: each job stops with one line naming the file --------------------------


def _png_dataset(workdir: Path, name: str) -> tuple[dict, str]:
    """A 2D dataset (png_folder) with a good case ``a`` and a bad case ``b``."""
    from PIL import Image

    root = Path("raw") / name
    entry = {"adapter": "png_folder", "params": {"root": str(root), "modality": "US"}}
    entry["params"]["split_all"] = "test"
    (workdir / root / "images").mkdir(parents=True)
    (workdir / root / "masks").mkdir(parents=True)
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5)
    mask = np.zeros((4, 5), np.uint8)
    mask[1:3, 1:4] = 255
    Image.fromarray(grey).save(workdir / root / "images/a.png")
    Image.fromarray(mask).save(workdir / root / "masks/a.png")
    image, mask_file = f"{root}/images/b.png", f"{root}/masks/b.png"
    if name == "png_dangling_link":
        (workdir / image).symlink_to("/nowhere/b.png")
        Image.fromarray(mask).save(workdir / mask_file)
        return (
            entry,
            f"{image}: broken symbolic link (points to /nowhere/b.png, which does not exist)",
        )
    if name == "png_mask_colour":
        Image.fromarray(grey).save(workdir / image)
        colour = np.zeros((4, 5, 3), np.uint8)
        colour[1, 1:3] = (10, 245, 0)  # antialiased green: the lesion
        Image.fromarray(colour).save(workdir / root / "masks/a.png")
        colour[2, 1:4] = (0, 0, 255)  # blue: no listed colour
        Image.fromarray(colour).save(workdir / mask_file)
        entry["params"].update(mask_mode="colors", colors={"lesion": [[0, 255, 0]]})
        return entry, (
            f"{mask_file}: colour (0, 0, 255) on 3 pixels matches no colour of params.colors "
            "(lesion [0, 255, 0]; background [0, 0, 0]) within 40"
        )
    if name == "png_mask_size":
        Image.fromarray(grey).save(workdir / image)
        Image.fromarray(np.zeros((4, 6), np.uint8)).save(workdir / mask_file)
        return entry, (
            f"{mask_file}: mask size 6x4 differs from image {image} size 5x4 (width x height)"
        )
    raise AssertionError(name)


def _bad_dataset(workdir: Path, name: str) -> tuple[dict, str]:
    """Build dataset ``name`` under ``workdir/raw/name``: (its config entry, expected line)."""
    if name.startswith("png_") and name != "png_as_nifti":
        return _png_dataset(workdir, name)
    root = Path("raw") / name
    entry = {"adapter": "nifti_folder", "params": {"root": str(root), "modality": "CT"}}
    entry["params"]["split_all"] = "test"
    if name == "missing_root":
        entry["params"]["root"] = "raw/nowhere"
        return (
            entry,
            "raw/nowhere: dataset folder not found (params.root, images 'imagesTr/*.nii.gz')",
        )
    if name == "unknown_adapter":
        entry["adapter"] = "nifti"
        return entry, (
            f"datasets.{name}.adapter: unknown adapter 'nifti'; known adapters: busi, "
            "covid_qu_ex, figshare_brain, flare22, isic2016, kvasir_seg, lung_ct, medsam_npz, "
            "msd, nifti_folder, phantom, png_folder, synapse, synapse_transunet"
        )
    image, lab = nnunet_dataset(workdir / root)
    img, lab_name = f"{root}/imagesTr/bad_0000.nii.gz", f"{root}/labelsTr/bad.nii.gz"
    if name != "missing_label":
        write_nifti(lab, label())
    if name == "truncated":
        write_nifti(image, ramp((20, 30, 40)))
        write_nifti(lab, label((20, 30, 40)))
        raw = gzip.decompress(image.read_bytes())
        image.write_bytes(gzip.compress(raw[: len(raw) // 2]))
        return entry, f"{img}: cannot read image (corrupt or truncated file) holds"
    if name == "png_as_nifti":
        from PIL import Image

        Image.fromarray(np.arange(20, dtype=np.uint8).reshape(4, 5)).save(image, format="PNG")
        return entry, f"{img}: not a NIfTI file (it holds a PNG image)"
    if name == "zero_byte":
        image.write_bytes(b"")
        return entry, f"{img}: cannot read image (corrupt or truncated file)"
    if name in ("zero_spacing", "negative_spacing"):
        write_nifti(image, ramp())
        set_pixdim(image, *((3, 0.0) if name == "zero_spacing" else (1, -1.0)))
        shown = "1, 1, 0" if name == "zero_spacing" else "-1, 1, 2"
        return entry, (
            f"{img}: voxel spacing ({shown}) in the NIfTI header (pixdim) is zero, negative or "
            "not a number; fix the header (every distance metric depends on it)"
        )
    if name == "constant":
        write_nifti(image, np.full((3, 4, 5), 7, np.float32))
        return entry, (
            f"{img}: constant image (every voxel is 7.0); set allow_constant_images: true in "
            "the dataset's config to score it all the same"
        )
    if name == "dangling_link":
        image.symlink_to("gone_0000.nii.gz")
        return (
            entry,
            f"{img}: broken symbolic link (points to gone_0000.nii.gz, which does not exist)",
        )
    if name == "link_loop":
        image.symlink_to("bad_0000.nii.gz")
        return (
            entry,
            f"{img}: symbolic link loop (points to bad_0000.nii.gz); the file cannot be read",
        )
    if name == "missing_label":
        write_nifti(image, ramp())
        return entry, f"{img}: label file not found, expected {lab_name}"
    write_nifti(image, ramp())
    if name == "shape_mismatch":
        write_nifti(lab, label((3, 4, 6)))
        return entry, (
            f"{lab_name}: label shape (z,y,x)=(3, 4, 6) differs from image {img} shape (3, 4, 5)"
        )
    if name == "spacing_mismatch":
        write_nifti(lab, label(), spacing=(1.0, 1.0, 3.0))
        return entry, f"{lab_name}: label geometry (spacing (1, 1, 3), origin"
    if name == "origin_mismatch":
        write_nifti(lab, label(), origin=(5.0, 0.0, 0.0))
        return entry, f"{lab_name}: label geometry (spacing (1, 1, 2), origin (5, 0, 0)"
    if name == "direction_mismatch":
        write_nifti(lab, label(), direction=(-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))
        return entry, (
            f"{lab_name}: label geometry (spacing (1, 1, 2), origin (0, 0, 0), direction "
            "(-1, 0, 0, 0, -1, 0, 0, 0, 1)) differs from image"
        )
    if name == "duplicate_id":
        write_nifti(workdir / root / "imagesTr" / "ok.nii.gz", ramp())
        shutil.rmtree(workdir / root / "labelsTr")
        write_nifti(lab.parent / "ok.nii.gz", label())
        image.unlink(missing_ok=True)
        return entry, (
            f"{root}/imagesTr/ok_0000.nii.gz: duplicate case id 'ok', also the id of "
            f"{root}/imagesTr/ok.nii.gz"
        )
    if name == "inf_image":
        bad = ramp()
        bad[2, 3, 4] = np.inf
        write_nifti(image, bad)
        return entry, f"{img}: image has 1 NaN or infinite intensities"
    if name == "unknown_label_value":
        write_nifti(lab, label(value=3))
        return entry, (
            f"{lab_name}: label values [3] are not in the label map "
            "{'background': 0, 'foreground': 1}"
        )
    if name == "float_label":
        write_nifti(lab, label().astype(np.float32) * 0.5)
        return entry, f"{lab_name}: label has non-integer values"
    if name == "nan_image":
        bad = ramp()
        bad[0, 0, :2] = np.nan
        write_nifti(image, bad)
        return entry, f"{img}: image has 2 NaN or infinite intensities"
    if name == "image_4d":
        write_nifti(image, np.stack([ramp(), ramp()]))
        return entry, f"{img}: image is 4D with size (5, 4, 3, 2), expected 2D or 3D"
    if name == "unknown_param":
        entry["params"]["label_suffix"] = ".nii"
        return entry, (
            f"datasets.{name}.params.label_suffix: unknown parameter for adapter 'nifti_folder'"
        )
    raise AssertionError(name)


JOB_CASES = [
    "truncated",
    "png_as_nifti",
    "zero_byte",
    "zero_spacing",
    "negative_spacing",
    "constant",
    "dangling_link",
    "link_loop",
    "missing_label",
    "shape_mismatch",
    "spacing_mismatch",
    "origin_mismatch",
    "direction_mismatch",
    "duplicate_id",
    "inf_image",
    "png_dangling_link",
    "png_mask_colour",
    "png_mask_size",
    "unknown_label_value",
    "float_label",
    "nan_image",
    "image_4d",
    "missing_root",
    "unknown_adapter",
    "unknown_param",
]
PREFIX_ONLY = {
    "truncated",
    "zero_byte",
    "spacing_mismatch",
    "origin_mismatch",
    "direction_mismatch",
    "unknown_param",
}
"""Cases whose expected text is the start of the line (the rest holds reader details)."""


@pytest.fixture(scope="module")
def bad_run(workspace, snakemake):
    """Every bad dataset beside the good ones, and a dataset with a constant image allowed;
    one run with --keep-going: (result, expected lines)."""
    workdir, _ = workspace
    datasets, expected = {}, {}
    for name in JOB_CASES:
        datasets[name], expected[name] = _bad_dataset(workdir, name)
    allowed, _ = _bad_dataset(workdir, "constant")
    shutil.rmtree(workdir / "raw" / "constant_ok", ignore_errors=True)
    shutil.copytree(workdir / "raw" / "constant", workdir / "raw" / "constant_ok")
    allowed["params"]["root"] = "raw/constant_ok"
    datasets["constant_ok"] = {**allowed, "allow_constant_images": True}
    # a label whose image is gone: the case is left out with a warning
    datasets["orphan_label"], _ = _bad_dataset(workdir, "missing_label")
    datasets["orphan_label"]["params"]["root"] = "raw/orphan_label"
    shutil.rmtree(workdir / "raw/orphan_label", ignore_errors=True)
    nnunet_dataset(workdir / "raw/orphan_label")
    write_nifti(workdir / "raw/orphan_label/labelsTr/gone.nii.gz", label())
    targets = [f"results/data/{name}/cases.tsv" for name in [*JOB_CASES, "orphan_label"]]
    targets += ["results/metrics/constant_ok/otsu_box.csv", *GOOD_TARGETS]
    result = snakemake(["--keep-going", *targets], cwd=workdir, config=with_datasets(**datasets))
    return result, expected


def test_bad_datasets_fail_alone_without_traceback(bad_run, workspace):
    result, _ = bad_run
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert "Exiting because a job execution failed" in result.stderr
    assert_good_results_intact(workspace)


@pytest.mark.parametrize("name", JOB_CASES)
def test_bad_dataset_job_prints_one_line(name, bad_run, workspace):
    result, expected = bad_run
    workdir, _ = workspace
    line = expected[name]
    found = [ln for ln in console_lines(result) if ln.startswith(line)]
    assert len(found) == 1, f"{line!r} not on the console:\n{result.stderr[-4000:]}"
    if name not in PREFIX_ONLY:
        assert found[0] == line
    log = (workdir / f"logs/prepare_dataset/{name}.log").read_text(encoding="utf-8")
    errors = [ln for ln in log.splitlines() if " ERROR medsegflow: " in ln]
    assert len(errors) == 1 and errors[0].endswith(f": {found[0]}"), log
    assert "Traceback (most recent call last)" in log  # kept for developers
    assert not (workdir / f"results/data/{name}/cases.tsv").exists()


def test_constant_image_allowed_is_a_warning_everywhere(bad_run, workspace):
    result, _ = bad_run
    workdir, _ = workspace
    image = "raw/constant_ok/imagesTr/bad_0000.nii.gz"
    warning = f"{image}: constant image (every voxel is 7.0)"
    assert f"WARNING: {warning}; written all the same (allow_constant_images)" in (
        console_lines(result)
    )
    cases = pd.read_csv(workdir / "results/data/constant_ok/cases.tsv", sep="\t")
    assert cases.set_index("case_id")["warnings"].fillna("").to_dict() == {
        "ok": "",
        "bad": warning,
    }
    rows = pd.read_csv(workdir / "results/metrics/constant_ok/otsu_box.csv")
    flagged = rows.set_index("case_id")["input_warnings"].fillna("")
    assert flagged["bad"] == warning and flagged["ok"] == ""


ORPHAN = (
    "raw/orphan_label/labelsTr/gone.nii.gz: label file with no image matching params.images "
    "'imagesTr/*.nii.gz'; left out"
)


def test_a_label_without_its_image_is_a_warning_not_a_silent_drop(bad_run, workspace):
    result, _ = bad_run
    workdir, _ = workspace
    assert f"WARNING: {ORPHAN}" in console_lines(result)
    cases = pd.read_csv(workdir / "results/data/orphan_label/cases.tsv", sep="\t")
    assert list(cases["case_id"]) == ["ok"]
    assert list(cases["warnings"]) == [ORPHAN]  # with every case of the dataset


def test_verify_lists_every_bad_dataset_and_the_warning(bad_run, workspace):
    """``python -m medsegflow verify`` names the same problems, and the allowed constant image
    as a warning, before any job."""
    _, expected = bad_run
    workdir, _ = workspace
    config = yaml.safe_load((workdir / "config.yaml").read_text(encoding="utf-8"))
    (workdir / "verify.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "medsegflow", "verify", "--configfile", "verify.yaml"],
        cwd=workdir,
        capture_output=True,
        text=True,
        encoding="utf-8",
    )
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    # verify reads the case, so it names the missing file itself
    expected = {
        **expected,
        "missing_label": "raw/missing_label/labelsTr/bad.nii.gz: file not found",
    }
    for name, line in expected.items():
        assert any(ln.startswith(line) for ln in lines), f"{name}: {line!r} not in\n{result.stdout}"
    warning = (
        "WARNING: raw/constant_ok/imagesTr/bad_0000.nii.gz: constant image (every voxel is 7.0); "
        "written all the same (allow_constant_images)"
    )
    assert warning in lines
    n_bad, n_all = len(JOB_CASES), len(JOB_CASES) + 4  # + 2 good, constant_ok, orphan_label
    assert f"WARNING: {ORPHAN}" in lines
    # the labels of the images behind broken links are named too: their case is not read
    warnings = [ln for ln in lines if ln.startswith("WARNING: ")]
    assert len(warnings) == 5, warnings
    n_problems = len(lines) - len(warnings) - 1
    assert lines[-1].startswith(f"verify: {n_problems} problems in {n_bad} of {n_all} datasets")
    assert lines[-1].endswith(", 5 warnings)")
    assert "Traceback" not in result.stdout + result.stderr


# --- stale results: raw sources are inputs -----------------------------------------------


def _jobs_run(result: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    """(rule, dataset) of every job a run started, from its console output."""
    text = result.stdout + result.stderr
    jobs = []
    for block in text.split("\nrule ")[1:] + text.split("\nlocalrule ")[1:]:
        rule = block.split(":", 1)[0]
        dataset = next(
            (
                ln.split("dataset=")[1].split(",")[0]
                for ln in block.splitlines()
                if "dataset=" in ln
            ),
            "",
        )
        jobs.append((rule, dataset))
    return jobs


def test_editing_one_label_reruns_that_dataset_only(workspace, snakemake):
    workdir, _ = workspace
    config = workdir / "good.yaml"
    config.write_text(yaml.safe_dump(BASE_CONFIG), encoding="utf-8")
    label_file = workdir / "raw/spleen/labelsTr/s1.nii.gz"
    # a touch (same bytes, newer time) reruns nothing
    os.utime(label_file)
    plan = snakemake(["-n", *GOOD_TARGETS], cwd=workdir, config=config, check=True)
    assert "Nothing to be done" in plan.stdout + plan.stderr, plan.stdout
    old = pd.read_csv(workdir / GOOD_TARGETS[0])
    phantom_before = {name: (workdir / name).stat().st_mtime_ns for name in GOOD_FILES[1::2]}
    # the fix of an annotation: the upper half of the spleen's slices lose their label
    reference = sitk.ReadImage(str(label_file))
    edited = sitk.GetArrayFromImage(reference)
    slices = np.flatnonzero(edited.any(axis=(1, 2)))
    edited[slices[len(slices) // 2 :]] = 0
    image = sitk.GetImageFromArray(edited)
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(label_file))
    result = snakemake(GOOD_TARGETS, cwd=workdir, config=config, check=True)
    jobs = _jobs_run(result)
    assert {rule for rule, _ in jobs} >= {"prepare_dataset", "score_method"}
    assert {dataset for _, dataset in jobs} == {"spleen"}, jobs
    assert {name: (workdir / name).stat().st_mtime_ns for name in phantom_before} == (
        phantom_before
    )
    new = pd.read_csv(workdir / GOOD_TARGETS[0])
    prediction = sitk.GetArrayFromImage(
        sitk.ReadImage(str(workdir / "results/predictions/spleen/otsu_box/s1.nii.gz"))
    )
    truth = edited == 1
    expected = (
        2 * np.logical_and(prediction == 1, truth).sum() / ((prediction == 1).sum() + truth.sum())
    )
    assert new["dsc"].iloc[0] == pytest.approx(expected, abs=1e-6)
    assert abs(new["dsc"].iloc[0] - old["dsc"].iloc[0]) > 0.02  # 0.917 -> 0.870


# --- a run killed with kill -9: its lock is named, --unlock and a rerun finish it ---------


def test_lock_of_a_killed_run_is_named(tmp_path, snakemake, workspace):
    config = copy.deepcopy(BASE_CONFIG)
    del config["datasets"]["spleen"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    target = "results/metrics/phantom_us/otsu_box.csv"
    cmd = snakemake.command([target], cwd=tmp_path, config="config.yaml", cores=1)
    run = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    lock = tmp_path / ".snakemake/locks/0.output.lock"
    deadline = time.monotonic() + 120
    while not lock.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lock.exists(), "the run never locked its folder"
    os.killpg(run.pid, signal.SIGKILL)  # kill -9 of the run and its job
    run.wait()
    again = snakemake([target], cwd=tmp_path, config="config.yaml", cores=1)
    assert again.returncode == 1
    assert first_line(again) == (
        f".snakemake/locks/: locked by a run that was killed (process {run.pid} no longer "
        "exists); rerun the same command once with --unlock, then run it again"
    )
    assert len(console_lines(again)) == 1 and "Traceback" not in again.stderr
    snakemake(["--unlock", target], cwd=tmp_path, config="config.yaml", check=True)
    snakemake([target], cwd=tmp_path, config="config.yaml", check=True)
    workdir, _ = workspace
    uninterrupted = (workdir / target).read_text(encoding="utf-8")
    assert (tmp_path / target).read_text(encoding="utf-8") == uninterrupted
