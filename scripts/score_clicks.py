from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.stages.clicks import score_clicks
from medsegflow.tables import write_csv_atomic

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    metrics = snakemake.params.metrics
    rows = score_clicks(
        predictions_manifest=snakemake.input.predictions,
        preprocessed_manifest=snakemake.input.preprocessed,
        dataset=snakemake.wildcards.dataset,
        method=snakemake.wildcards.method,
        nsd_tolerance_mm=metrics["nsd_tolerance_mm"],
        reference=metrics["reference"],
    )
    write_csv_atomic(rows, snakemake.output[0])
