"""The ``sam3d`` family's predictor: the generic 3D protocol with SAM-Med3D.

:func:`predict_sam3d` builds :class:`~medsegflow.sam3d.promptable.Sam3dPromptable` from
the method's config and checkpoint and runs
:func:`~medsegflow.promptable.volume_protocol.predict_volume_sessions`: for each case the
canonical image (original intensities, original geometry; SAM-Med3D z-normalises each
crop over its foreground itself) is resampled once to the 1.5 mm model frame, and each
label value of the cleaned reference (the simulated user's target; the score stage's
reference by default) is one object: a simulated first click on it (``clicks.first``:
its distance-transform centre, or a seeded random voxel), the 128^3 crop centred on that
click and encoded once, then ``clicks.n - 1`` corrective clicks at the centre of the
largest error inside the crop (``clicks.mode``), each decoded with the previous
low-resolution logits as the mask prompt. The simulated user clicks in SAM-Med3D's own
frame, as the official script (:meth:`~medsegflow.sam3d.promptable.Sam3dSession.user_frame`).
The masks are mapped back to the original grid and painted in ascending label order.

With ``windows: {enabled: true}``, an object whose 3D box (the reference's bounding box,
as a box prompt gives it) exceeds one crop on some axis gets its final mask, after the
clicks, from sliding crops over that box with all of its clicks (the session's
``finish``, :func:`medsegflow.sam3d.windows.window_final_box`); its masks after the
earlier clicks stay the single crop's, and objects that fit are unchanged. The table
:func:`predict_sam3d` returns has per case ``n_windows`` (crops run), ``window_seconds``
and ``encode_seconds``; ``manifest.tsv`` has the shared columns only (the case's
``seconds`` include the windows).

The 1.5 mm grid follows ``resample_grid`` (:mod:`medsegflow.sam3d.preprocess`: torchio's
own, as installed, or torchio < 0.20.11's); the job logs the torchio version and the grid
rule, and the table has them per case (``torchio``, ``grid_rule``). ``precision``
(default float32, as the official script) is the encoder's and decoder's.

Written: ``{case_id}.nii.gz``, the labels after the last click (scored like any method),
and ``clicks/{case_id}.npz``, the labels after every click (the first click is click 1)
with the clicks in original voxel indices (:mod:`medsegflow.interactive`). Random draws
use ``case_rng(seed, case_id, "clicks3d", method)``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from medsegflow.prediction.job import PredictJob

log = logging.getLogger(__name__)


def predict_sam3d(job: PredictJob) -> pd.DataFrame:
    """The family predictor (``family: sam3d``); ``job.inputs``: ``preprocessed``, ``data``
    (the canonical ``cases.tsv``) and ``checkpoint``. Returns the manifest with more
    columns per case: ``n_windows`` (sliding crops run), ``window_seconds``,
    ``encode_seconds``, ``torchio`` (its version) and ``grid_rule`` (the 1.5 mm grid:
    ``floor_centred`` or ``ceil_corner``)."""
    from medsegflow.promptable.volume_protocol import ClickOptions, predict_volume_sessions
    from medsegflow.sam3d.promptable import Sam3dPromptable

    job.require("data", "checkpoint", family="sam3d")
    spec = job.method
    model = Sam3dPromptable.build(spec, job.inputs["checkpoint"], device=job.device)
    if model.crop_centre == "gt_centre":
        log.warning(
            "%s: crops centred on the reference's centre (crop_centre: gt_centre), the "
            "official validation script's oracle",
            job.method_name,
        )
    facts = model.describe()
    log.info(
        "%s: torchio %s, resample_grid %s: the 1.5 mm grid is %s (floor_centred: torchio "
        ">= 0.20.11; ceil_corner: torchio < 0.20.11, the official script's original); "
        "precision %s",
        job.method_name,
        facts["torchio"],
        facts["resample_grid"],
        facts["grid_rule"],
        facts["precision"],
    )
    clicks = spec["clicks"]
    options = ClickOptions(int(clicks["n"]) - 1, mode=clicks["mode"], first=clicks["first"])
    manifest = predict_volume_sessions(job, model, options=options)
    return manifest.assign(torchio=facts["torchio"], grid_rule=facts["grid_rule"])
