from pathlib import Path

from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.nnunet.train import train_nnunet

# nnU-Net may start worker processes that re-run this file as "__mp_main__": the guard
# keeps them from running the job again.
if __name__ == "__main__":
    with log_to(snakemake.log[0]):
        inject_faults(snakemake)
        train_nnunet(
            planned=snakemake.input.planned,
            method=snakemake.params.method,
            method_name=snakemake.wildcards.method,
            nnunet_dir=Path(snakemake.input.planned).parents[2],  # results/nnunet
            out_marker=snakemake.output[0],
            seed=snakemake.params.seed,
        )
