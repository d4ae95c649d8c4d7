from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.stages.robustness import robustness_curves
from medsegflow.threads import limit_threads

with log_to(snakemake.log[0]):
    limit_threads(snakemake.threads)
    inject_faults(snakemake)
    robustness_curves(
        dataset=snakemake.wildcards.dataset,
        model=snakemake.wildcards.model,
        preprocessed_manifest=snakemake.input.preprocessed,
        inputs={"embeddings": snakemake.input.embeddings, "checkpoint": snakemake.input.checkpoint},
        splits=snakemake.params.splits,
        grid=snakemake.params.grid,
        seed=snakemake.params.seed,
        out_csv=snakemake.output[0],
        threads=snakemake.threads,
    )
