from pathlib import Path

from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.stages.prompts import make_prompts

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    make_prompts(
        preprocessed_dir=Path(snakemake.input[0]).parent,
        out_path=snakemake.output[0],
        prompt=snakemake.params.prompt,
        seed=snakemake.params.seed,
        prompt_name=snakemake.wildcards.prompt,
    )
