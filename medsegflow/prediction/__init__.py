"""The prediction loop every method family shares, and the files it writes.

A prediction job (one dataset, one method, optionally one shard) writes
``results/predictions/{dataset}/{method}/``:

- ``{case_id}.nii.gz``: the predicted labels in the ORIGINAL image geometry (shape,
  spacing, origin and direction of the canonical image);
- ``manifest.tsv`` (written last): ``case_id, split, n_prompts, seconds``;
- with shards, ``shards/{index + 1}-of-{count}.tsv`` instead of ``manifest.tsv``.

:mod:`~medsegflow.prediction.job` describes a job (:class:`PredictJob`, shards),
:mod:`~medsegflow.prediction.cases` runs a family's per-case function over its cases,
:mod:`~medsegflow.prediction.manifest` writes, reads and gathers the manifests, and
:mod:`~medsegflow.prediction.painting` paints per-slice object masks into label volumes.
"""
