"""The reduced demo end to end: phantoms -> tables and figures, then a no-op rerun.

The run is the session's shared one (``demo_run``, tests/conftest.py).
"""

from __future__ import annotations

import shutil
import subprocess

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import yaml

from medsegflow.io import read_volume

pytestmark = pytest.mark.slow


def expected_methods(config: dict, dataset: str) -> set[str]:
    from medsegflow.config import load_config
    from medsegflow.workflow import methods_for_dataset

    return set(methods_for_dataset(load_config(config), dataset))


@pytest.fixture
def demo(demo_run):
    return demo_run


def test_all_csv_has_one_row_per_test_case_class_and_method(demo):
    rows = pd.read_csv(demo / "results/tables/all.csv", dtype={"case_id": str})
    config = yaml.safe_load((demo / "config.yaml").read_text(encoding="utf-8"))
    shown = {"phantom_ct": {"sam_box3d", "sam3d_clicks"}, "phantom_us": {"medclip_sam"}}
    for dataset, n_classes in (("phantom_ct", 4), ("phantom_us", 1)):
        methods = expected_methods(config, dataset)
        assert shown[dataset] <= methods
        cases = pd.read_csv(
            demo / f"results/data/{dataset}/cases.tsv", sep="\t", dtype={"case_id": str}
        )
        test_ids = set(cases.loc[cases["split"] == "test", "case_id"])
        assert test_ids
        sub = rows[rows["dataset"] == dataset]
        assert set(sub["method"]) == methods
        assert set(sub["case_id"]) == test_ids
        assert len(sub) == len(test_ids) * n_classes * len(methods)
        assert set(sub["split"]) == {"test"}
    assert rows["dsc"].between(0, 1).all()
    assert not rows["dsc"].isna().any()


def test_baselines_segment_the_phantoms_reasonably(demo):
    rows = pd.read_csv(demo / "results/tables/all.csv")
    us = rows[(rows["dataset"] == "phantom_us") & (rows["method"] == "otsu_box")]
    assert us["dsc"].mean() > 0.5
    ct = rows[(rows["dataset"] == "phantom_ct") & (rows["method"] == "otsu_box")]
    assert ct.loc[ct["label_name"] == "liver", "dsc"].mean() > 0.3


def test_metric_rows_match_a_recomputation_from_the_files(demo):
    from medsegflow.metrics import compute_metrics

    rows = pd.read_csv(demo / "results/metrics/phantom_us/otsu_box.csv", dtype={"case_id": str})
    row = rows.iloc[0]
    gt = read_volume(demo / f"results/preprocessed/phantom_us/labels/{row.case_id}.nii.gz")
    pred = read_volume(demo / f"results/predictions/phantom_us/otsu_box/{row.case_id}.nii.gz")
    image = read_volume(demo / f"results/data/phantom_us/images/{row.case_id}.nii.gz")
    assert pred.array_zyx.shape == image.array_zyx.shape
    assert pred.geometry.matches(image.geometry)
    expected = compute_metrics(pred.array_zyx, gt.array_zyx, gt.spacing_zyx, 2.0, labels=[1])[1]
    assert row.dsc == pytest.approx(expected["dsc"], rel=1e-5)
    assert row.nsd == pytest.approx(expected["nsd"], rel=1e-5)


def test_summary_counts_and_intervals(demo):
    summary = pd.read_csv(demo / "results/tables/summary.csv")
    rows = pd.read_csv(demo / "results/tables/all.csv")
    dsc = summary[
        (summary["metric"] == "dsc")
        & (summary["dataset"] == "phantom_us")
        & (summary["method"] == "otsu_box")
    ].iloc[0]
    sub = rows[(rows["dataset"] == "phantom_us") & (rows["method"] == "otsu_box")]
    assert dsc["n"] == len(sub)
    assert dsc["mean"] == pytest.approx(sub["dsc"].mean(), rel=1e-5)
    assert dsc["ci_low"] <= dsc["mean"] <= dsc["ci_high"]
    hd = summary[summary["metric"] == "hd95_mm"]
    assert ((hd["n"] + hd["n_excluded"]) > 0).all()


def test_figures_are_real_images(demo):
    for name in (
        "dsc_by_method",
        "nsd_by_method",
        "qualitative_phantom_ct",
        "qualitative_phantom_us",
    ):
        image = mpimg.imread(demo / f"results/figures/{name}.png")
        assert image.shape[0] > 200 and image.shape[1] > 200
        assert float(np.std(image)) > 0.01
    # the qualitative figure picks each method's own worst, median and best case
    log = (demo / "logs/plot_qualitative/phantom_us.log").read_text(encoding="utf-8")
    rows = pd.read_csv(demo / "results/tables/all.csv")
    for method in rows.loc[rows["dataset"] == "phantom_us", "method"].unique():
        assert f"{method}: cases worst " in log, method


def test_text_driven_rows_and_their_stages(demo):
    """MedCLIP-SAMv2 in the demo: text -> saliency -> coarse mask (-> SAM), tuned on val
    only, and nnU-Net trained on its train/val masks."""
    import json

    rows = pd.read_csv(demo / "results/tables/all.csv")
    us = rows[rows["dataset"] == "phantom_us"]
    for method in ("medclip_coarse", "medclip_sam", "medclip_sam_tuned", "sam_auto"):
        assert us.loc[us["method"] == method, "dsc"].between(0, 1).all(), method
    # one saliency job serves medclip_coarse, medclip_sam and the post-processing grid
    maps = sorted((demo / "results/saliency/phantom_us/medclip_coarse/maps").iterdir())
    assert len(maps) == 8  # every case: medclip_coarse also labels train/val for nnunet_weak
    saliency = read_volume(maps[0]).array_zyx
    assert saliency.dtype == np.float32 and saliency.min() == 0.0 and saliency.max() == 1.0
    chosen = json.loads(
        (demo / "results/tuning/phantom_us/medclip_sam_tuned/chosen.json").read_text(
            encoding="utf-8"
        )
    )
    assert chosen["split"] == "val" and chosen["saliency"]["vlayer"] in (7, 8)
    assert chosen["coarse"]["method"] in ("kmeans", "threshold")
    weak = pd.read_csv(
        demo / "results/pseudolabels/phantom_us/medclip_coarse/manifest.tsv", sep="\t"
    )
    assert set(weak["split"]) == {"train", "val"}
    assert (us["method"] == "nnunet_weak").any()


def test_lite_medsam_rows_zero_shot(demo):
    """LiteMedSAM (the packaged official checkpoint) for every SAM row, and its 3D row."""
    import json

    rows = pd.read_csv(demo / "results/tables/all.csv")
    info = json.loads(
        (demo / "results/embeddings/phantom_us/lite_medsam/model.json").read_text(encoding="utf-8")
    )
    assert info["arch"] == "lite_medsam" and info["checkpoint"].endswith("lite_medsam.pth")
    us = rows[rows["dataset"] == "phantom_us"].groupby("method")["dsc"].mean()
    assert us["sam_box"] > 0.75  # zero-shot from a jittered box (demo: 0.90)
    ct = rows[rows["dataset"] == "phantom_ct"]
    box3d = ct[ct["method"] == "sam_box3d"].groupby("label_name")["dsc"].mean()
    assert set(box3d.index) == {"liver", "spleen", "kidney", "lesion"}
    assert box3d["liver"] > 0.6  # one 3D box per organ, propagated (demo: 0.84)
    prompts = pd.read_csv(demo / "results/prompts/phantom_ct/box3d_j20/prompts.tsv", sep="\t")
    assert (prompts["z_max"] > prompts["z_min"]).any()


def test_fine_tuned_rows_and_their_models(demo):
    """LiteMedSAM fine-tuned by MedSAM's, SAMed's and Med-SA's recipes on phantom_ct's
    train split (2 iterations here), checked on val, predicted on test."""
    import json

    cards = {
        name: json.loads((demo / f"results/models/{name}/model.json").read_text(encoding="utf-8"))
        for name in ("lite_medsam_medsam", "lite_medsam_samed", "lite_medsam_medsa")
    }
    for name, card in cards.items():
        assert card["base"]["model"] == "lite_medsam" and card["arch"] == "lite_medsam", name
        assert card["training"]["iterations"] == 2 and card["training"]["val_targets"] > 0
        assert 0.0 <= card["training"]["val_dsc"] <= 1.0
        assert set(card["training"]["samples"]) == {"phantom_ct"}
    medsam, samed, medsa = cards.values()
    assert medsam["recipe"]["recipe"] == "medsam" and medsam["modules"] == []
    assert medsam["training"]["n_trainable"] > 0.9 * medsam["training"]["n_parameters"]
    assert [m["kind"] for m in samed["modules"]] == ["lora"]
    assert samed["classes"] == ["liver", "spleen", "kidney", "lesion"]
    assert [m["kind"] for m in medsa["modules"]] == ["medsa_adapters"]
    assert medsa["training"]["n_trainable"] < 0.05 * medsa["training"]["n_parameters"]

    rows = pd.read_csv(demo / "results/tables/all.csv", dtype={"case_id": str})
    ct = rows[rows["dataset"] == "phantom_ct"]
    for method in ("medsam_ft_box", "medsa_box", "samed_lora"):
        sub = ct[ct["method"] == method]
        assert set(sub["label_name"]) == {"liver", "spleen", "kidney", "lesion"}, method
        assert sub["dsc"].between(0, 1).all()
    assert "samed_lora" not in set(rows.loc[rows["dataset"] == "phantom_us", "method"])
    # box-prompted fine-tuning starts from LiteMedSAM: 2 iterations keep the liver
    liver = ct[ct["label_name"] == "liver"].groupby("method")["dsc"].mean()
    assert liver["medsam_ft_box"] > 0.6 and liver["medsa_box"] > 0.6
    # SAMed writes one label map of every class at once, in the image geometry
    case = sorted(ct.loc[ct["method"] == "samed_lora", "case_id"])[0]
    pred = read_volume(demo / f"results/predictions/phantom_ct/samed_lora/{case}.nii.gz")
    image = read_volume(demo / f"results/data/phantom_ct/images/{case}.nii.gz")
    assert pred.array_zyx.shape == image.array_zyx.shape
    labels = json.loads((demo / "results/data/phantom_ct/labels.json").read_text(encoding="utf-8"))
    assert set(np.unique(pred.array_zyx)) <= set(labels.values())


def test_ranking_conventions_and_cost_tables(demo):
    rows = pd.read_csv(demo / "results/tables/all.csv", dtype={"case_id": str})
    ranking = pd.read_csv(demo / "results/tables/ranking.csv")
    us = ranking[(ranking["dataset"] == "phantom_us") & (ranking["metric"] == "dsc")]
    assert set(us["label_name"]) == {"lesion"}  # one class: no "all classes" group
    methods = expected_methods(
        yaml.safe_load((demo / "config.yaml").read_text(encoding="utf-8")), "phantom_us"
    )
    assert set(us["method"]) == methods
    best = us.sort_values("rank").iloc[0]
    means = rows[rows["dataset"] == "phantom_us"].groupby("method")["dsc"].mean()
    assert best["method"] == means.idxmax()
    assert (us["rank_ci_low"] <= us["rank"]).all() and (us["rank"] <= us["rank_ci_high"]).all()
    conventions = pd.read_csv(demo / "results/tables/conventions.csv")
    assert list(dict.fromkeys(conventions["convention"])) == [
        "medsegflow", "samed", "medsam_cvpr24", "sam_med3d", "med_sa", "medclip_samv2",
    ]  # fmt: skip
    own = conventions[
        (conventions["convention"] == "medsegflow")
        & (conventions["dataset"] == "phantom_us")
        & (conventions["label_name"] == "lesion")
        & (conventions["method"] == "otsu_box")
    ]
    assert own["dsc"].iloc[0] == pytest.approx(means["otsu_box"], rel=1e-5)
    cost = pd.read_csv(demo / "results/tables/cost.csv").set_index(["dataset", "method"])
    sam = cost.loc[("phantom_us", "sam_box")]
    assert sam["encoder_s_per_case"] > 0 and sam["decoder_s_per_case"] > 0
    total = sam["encoder_s_per_case"] + sam["decoder_s_per_case"]
    assert sam["s_per_case"] == pytest.approx(total, rel=1e-5)  # the CSV keeps 6 digits
    assert sam["n_parameters"] == 9801439  # LiteMedSAM, counted from its checkpoint
    assert cost.loc[("phantom_ct", "medsam_ft_box"), "n_trainable"] > 0
    assert cost.loc[("phantom_us", "otsu_box"), "n_parameters"] == 0
    for name in ("ranking_phantom_us", "ranking_phantom_ct", "conventions_rank", "cost_pareto"):
        image = mpimg.imread(demo / f"results/figures/{name}.png")
        assert image.shape[0] > 200 and float(np.std(image)) > 0.01
    # medsa_box saves probability maps (save_probabilities), but phantom_ct has 4 classes:
    # Med-SA's eval_seg crashes on more than 2 (AttributeError), and the replay records that
    medsa = conventions[
        (conventions["convention"] == "med_sa")
        & (conventions["method"] == "medsa_box")
        & (conventions["dataset"] == "phantom_ct")
    ]
    assert len(medsa) and (medsa["error"] == "AttributeError").all()
    assert medsa["dsc"].isna().all()


def test_robustness_curves_from_the_cached_embeddings(demo):
    config = yaml.safe_load((demo / "config.yaml").read_text(encoding="utf-8"))
    grid = config["robustness"]
    table = pd.read_csv(demo / "results/tables/robustness.csv")
    assert set(zip(table["dataset"], table["model"], strict=True)) == {
        ("phantom_us", "lite_medsam")
    }
    cases = pd.read_csv(demo / "results/data/phantom_us/cases.tsv", sep="\t", dtype=str)
    n_test = int((cases["split"] == "test").sum())
    per_case = pd.read_csv(demo / "results/robustness/phantom_us/lite_medsam.csv", dtype=str)
    assert per_case["case_id"].nunique() == min(n_test, grid["max_cases"])
    curves = table.set_index(["curve", "x"])
    for curve, xs in (
        ("box_jitter", grid["box_px"]),
        ("box_shift", grid["box_px"]),
        ("positive_points", grid["positive_points"]),
        ("negative_points", grid["negative_points"]),
        ("clicks", range(1, grid["max_clicks"] + 1)),
    ):
        values = curves.loc[curve, "dsc"].loc[[float(x) for x in xs]]
        assert values.between(0, 1).all(), curve
    # LiteMedSAM keeps a tight box's lesion, loses it to a box moved by 80 px at 1024
    assert curves.loc[("box_jitter", 0.0), "dsc"] > 0.6
    assert curves.loc[("box_shift", 80.0), "dsc"] < curves.loc[("box_shift", 0.0), "dsc"]
    noc = curves.loc["noc", "noc"]
    assert list(noc.index) == [0.85, 0.90] and noc.between(1, grid["max_clicks"]).all()
    image = mpimg.imread(demo / "results/figures/robustness_phantom_us.png")
    assert image.shape[1] > 1000 and float(np.std(image)) > 0.01


def test_the_interactive_protocol_scores_every_click(demo):
    """SAM-Med3D (clicks 1..5) and LiteMedSAM's 3D box with 3D clicks (box = click 0, then
    4) on the CT phantoms; the last click is the method's prediction."""
    rows = pd.read_csv(demo / "results/tables/all.csv", dtype={"case_id": str})
    curves = pd.read_csv(demo / "results/tables/clicks.csv")
    auc = pd.read_csv(demo / "results/tables/clicks_auc.csv")
    assert set(curves["method"]) == {"sam3d_clicks", "sam_box3d_interactive"}
    assert set(curves["dataset"]) == {"phantom_ct"}
    clicks = curves.groupby("method")["click"].agg(["min", "max"])
    assert clicks.loc["sam3d_clicks"].tolist() == [1, 5]
    assert clicks.loc["sam_box3d_interactive"].tolist() == [0, 4]
    assert curves["dsc"].between(0, 1).all() and curves["nsd"].between(0, 1).all()
    for method, last in (("sam3d_clicks", 5), ("sam_box3d_interactive", 4)):
        per_case = pd.read_csv(
            demo / f"results/metrics/phantom_ct/{method}_clicks.csv", dtype={"case_id": str}
        )
        final = per_case[per_case["click"] == last].set_index(["case_id", "label_name"])["dsc"]
        scored = rows[rows["method"] == method].set_index(["case_id", "label_name"])["dsc"]
        pd.testing.assert_series_equal(
            final.sort_index(),
            scored.sort_index(),
            check_names=False,
            check_dtype=False,  # a column of only 0 and 1 reads back as integers
            rtol=1e-5,
        )
    # the box step of the 2D model is LiteMedSAM's plain 3D box protocol
    box = curves[(curves["method"] == "sam_box3d_interactive") & (curves["click"] == 0)]
    box3d = rows[rows["method"] == "sam_box3d"].groupby("label_name")["dsc"].mean()
    for row in box[box["label_name"] != "all classes"].itertuples():
        assert row.dsc == pytest.approx(box3d[row.label_name], abs=5e-3), row.label_name
    overall = auc[auc["label_name"] == "all classes"].set_index("method")
    assert overall.loc["sam3d_clicks", "n_clicks"] == 5
    assert 0 <= overall.loc["sam3d_clicks", "dsc_auc"] <= 4
    image = mpimg.imread(demo / "results/figures/clicks_phantom_ct.png")
    assert image.shape[1] > 1000 and float(np.std(image)) > 0.01


def test_html_report_opens_in_a_browser(demo, snakemake, tmp_path):
    """Snakemake's own report, rendered by headless Chromium (Debian's chromium package)."""
    html = tmp_path / "report.html"
    snakemake(["--report", html], cwd=demo, config=demo / "config.yaml", check=True)
    assert html.stat().st_size > 100_000
    chromium = shutil.which("chromium")
    assert chromium, "chromium not found: run tests/install_system_deps.sh"
    common = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--virtual-time-budget=10000",
    ]
    dom = subprocess.run(
        [*common, "--dump-dom", html.as_uri()],
        capture_output=True,
        text=True,
        encoding="utf-8",
    ).stdout
    categories = (
        "Metrics",
        "Ranking stability",
        "Conventions",
        "Cost",
        "Qualitative",
        "Robustness",
        "Interactive",
    )
    for category in categories:
        assert category in dom, category
    shot = tmp_path / "report.png"
    subprocess.run(
        [*common, "--window-size=1400,900", f"--screenshot={shot}", html.as_uri()],
        capture_output=True,
        check=True,
    )
    image = mpimg.imread(shot)
    assert image.shape[:2] == (900, 1400)
    assert float(np.std(image)) > 0.05  # not blank


def test_rerun_is_a_no_op(demo, snakemake):
    result = snakemake(["all", "-n"], cwd=demo, config=demo / "config.yaml", check=True)
    assert "Nothing to be done" in result.stdout + result.stderr
