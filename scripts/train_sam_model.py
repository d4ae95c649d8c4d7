from pathlib import Path

from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.training.stage import train_sam_model

spec = snakemake.params.model
base = {"model": spec["base"], "checkpoint": snakemake.input.base} if spec["base"] else None

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    train_sam_model(
        model=snakemake.wildcards.model,
        arch=snakemake.params.arch,
        train=spec["train"],
        preprocessed_dirs=[Path(p).parent for p in snakemake.input.get("preprocessed", [])],
        out_weights=snakemake.output.weights,
        seed=snakemake.params.seed,
        base=base,
        checkpoint=snakemake.input.get("released"),
    )
