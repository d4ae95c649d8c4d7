from pathlib import Path

from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.nnunet.convert import convert_dataset

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    convert_dataset(
        data_dir=Path(snakemake.input.cases).parent,
        nnunet_dir=Path(snakemake.output[0]).parents[2],  # results/nnunet
        dataset=snakemake.wildcards.dataset,
        labels=snakemake.wildcards.labels,
        pseudolabels=snakemake.input.get("pseudolabels"),
        out_marker=snakemake.output[0],
    )
