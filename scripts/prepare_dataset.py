from pathlib import Path

from medsegflow.datasets.registry import prepare_dataset
from medsegflow.debug import inject_faults
from medsegflow.logs import log_to

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    prepare_dataset(
        adapter=snakemake.params.dataset["adapter"],
        params=snakemake.params.dataset["params"],
        seed=snakemake.params.seed,
        out_dir=Path(snakemake.output[0]).parent,
        key=f"datasets.{snakemake.wildcards.dataset}.adapter",
        allow_constant_images=snakemake.params.dataset.get("allow_constant_images", False),
    )
