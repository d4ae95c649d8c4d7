from medsegflow.clip.captions import make_clip_captions
from medsegflow.debug import inject_faults
from medsegflow.logs import log_to

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    make_clip_captions(
        spec=snakemake.params.clip,
        name=snakemake.wildcards.clip,
        cases=list(snakemake.input.cases),
        manifests=list(snakemake.input.preprocessed),
        out_csv=snakemake.output[0],
        seed=snakemake.params.seed,
        phantoms=snakemake.params.phantoms,
    )
