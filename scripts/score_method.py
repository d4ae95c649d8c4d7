from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.stages.score import score_predictions

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    score_predictions(
        dataset=snakemake.wildcards.dataset,
        method=snakemake.wildcards.method,
        predictions_manifest=snakemake.input.predictions,
        preprocessed_manifest=snakemake.input.preprocessed,
        metrics=snakemake.params.metrics,
        out_csv=snakemake.output.metrics,
        conventions_csv=snakemake.output.conventions,
    )
