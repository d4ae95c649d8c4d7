from pathlib import Path

from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.models.sam_train import train_demo_sam

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    train_demo_sam(
        preprocessed_dirs=[Path(p).parent for p in snakemake.input],
        out_checkpoint=snakemake.output.checkpoint,
        train=snakemake.params.model["train"],
        seed=snakemake.params.seed,
    )
