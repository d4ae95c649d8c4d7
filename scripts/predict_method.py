from pathlib import Path

from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.stages.predict import predict_dataset

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    predict_dataset(
        family=snakemake.params.method["family"],
        method=snakemake.params.method,
        method_name=snakemake.wildcards.method,
        inputs=dict(snakemake.input.items()),
        out_dir=Path(snakemake.output[0]).parent,
        splits=tuple(snakemake.params.splits),
    )
