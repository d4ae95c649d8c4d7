"""The prediction loop every method family shares, and the files it writes.

A prediction job (one dataset, one method, optionally one shard) writes
``results/predictions/{dataset}/{method}/``:

- ``{case_id}.nii.gz``: the predicted labels in the ORIGINAL image geometry (shape,
  spacing, origin and direction of the canonical image);
- ``{case_id}_probs.npz`` (SAM-family methods with ``save_probabilities: true``): float16
  ``probs`` ``(C, Z, Y, X)``, one foreground-probability map per label of ``labels``,
  written before the label volume (:func:`~medsegflow.prediction.cases.write_probabilities`);
- ``manifest.tsv`` (written last): ``case_id, split, n_prompts, seconds, gpu_mem_mb``;
- with shards, ``shards/{index + 1}-of-{count}.tsv`` instead of ``manifest.tsv``.

:mod:`~medsegflow.prediction.job` describes a job (:class:`PredictJob`, shards),
:mod:`~medsegflow.prediction.cases` runs a family's per-case function over its cases,
:mod:`~medsegflow.prediction.manifest` writes, reads and gathers the manifests, and
:mod:`~medsegflow.prediction.painting` paints per-slice object masks into label volumes.
"""
