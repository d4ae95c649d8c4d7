# Rule contract (the lead's rules/*.smk):
#   input:  cases=[results/data/{dataset}/cases.tsv, ...],
#           preprocessed=[results/preprocessed/{dataset}/manifest.tsv, ...] (same order)
#   output: results/clip_data/{clip}/captions.csv (images/ beside it)
#   params: clip=<the clip_models.{clip} entry>, seed=<config seed>
#   log:    one file
from medsegflow.clip.captions import make_clip_captions
from medsegflow.debug import inject_faults
from medsegflow.logs import log_to

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    make_clip_captions(
        spec=snakemake.params.clip,
        cases=list(snakemake.input.cases),
        manifests=list(snakemake.input.preprocessed),
        out_csv=snakemake.output[0],
        seed=snakemake.params.seed,
    )
