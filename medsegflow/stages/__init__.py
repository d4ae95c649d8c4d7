"""Stage drivers: the I/O over one dataset that each Snakemake script calls.

- :mod:`~medsegflow.stages.preprocess`: ``results/data/{dataset}/`` ->
  ``results/preprocessed/{dataset}/`` (uint8 images, cleaned labels, slices, manifest);
- :mod:`~medsegflow.stages.prompts`: preprocessed labels -> ``prompts.tsv``;
- :mod:`~medsegflow.stages.embed`: preprocessed images -> SAM-family image embeddings;
- :mod:`~medsegflow.stages.predict`: preprocessed images + prompts -> predicted label
  volumes in the original geometry, through the family registry
  (:mod:`medsegflow.families.registry`); saliency, coarse masks, tuning and scoring are
  the other modules.

Each stage writes per-case files first and its table (``manifest.tsv``/``prompts.tsv``)
last and atomically: the table is the Snakemake file target.
"""

from __future__ import annotations
