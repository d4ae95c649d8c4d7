from pathlib import Path

from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.sam3d.stage import train_sam3d_model

method = snakemake.params.method

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    train_sam3d_model(
        method=snakemake.wildcards.sam3d,
        spec=method["spec"],
        train=method["train"],
        data_dirs=[Path(p).parent for p in snakemake.input.data],
        preprocessed_dirs=[Path(p).parent for p in snakemake.input.preprocessed],
        out_weights=snakemake.output.weights,
        seed=snakemake.params.seed,
        device=method.get("device"),
        resample_grid=method.get("resample_grid", "torchio"),
    )
