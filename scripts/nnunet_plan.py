from pathlib import Path

from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.nnunet.plan import plan_and_preprocess

# nnU-Net starts worker processes with "spawn", which re-runs this file as "__mp_main__":
# the guard keeps the workers from running the job again.
if __name__ == "__main__":
    with log_to(snakemake.log[0]):
        inject_faults(snakemake)
        plan_and_preprocess(
            converted=snakemake.input.converted,
            nnunet_dir=Path(snakemake.output[0]).parents[2],  # results/nnunet
            configurations=snakemake.params.plan["configurations"],
            num_processes=snakemake.params.plan["num_processes"],
            fingerprint_voxels=snakemake.params.plan["fingerprint_voxels"],
            out_marker=snakemake.output[0],
        )
