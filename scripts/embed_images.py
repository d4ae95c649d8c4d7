from pathlib import Path

from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.stages.embed import embed_dataset

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    embed_dataset(
        preprocessed_dir=Path(snakemake.input.preprocessed).parent,
        checkpoint=snakemake.input.checkpoint,
        arch=snakemake.params.arch,
        family=snakemake.params.model["family"],
        spec=snakemake.params.model,
        out_dir=Path(snakemake.output[0]).parent,
        splits=snakemake.params.splits,
        batch_size=snakemake.params.model["embed_batch_size"],
        threads=snakemake.threads,
        precision=snakemake.params.model["precision"],
    )
