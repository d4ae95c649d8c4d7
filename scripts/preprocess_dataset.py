from pathlib import Path

from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.stages.preprocess import preprocess_dataset

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    preprocess_dataset(
        data_dir=Path(snakemake.input[0]).parent,
        out_dir=Path(snakemake.output[0]).parent,
        window=snakemake.params.dataset["window"],
        cleaning=snakemake.params.preprocess["cleaning"],
        n_empty_slices=snakemake.params.preprocess["n_empty_slices"],
        seed=snakemake.params.seed,
    )
