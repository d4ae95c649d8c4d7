from pathlib import Path

from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.stages.prompts import make_mask_prompts

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    make_mask_prompts(
        mask_dir=Path(snakemake.input.coarse).parent,
        cases_manifest=snakemake.input.coarse,
        out_path=snakemake.output[0],
        prompt=snakemake.params.method.get("sam_prompts") or {},
        seed=snakemake.params.seed,
        prompt_name=snakemake.wildcards.tpk,
        key_prefix=f"methods.{snakemake.wildcards.tpk}.sam_prompts",
    )
