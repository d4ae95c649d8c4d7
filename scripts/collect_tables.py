from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.tables import collect_metrics, write_csv_atomic

with log_to(snakemake.log[0]) as log:
    inject_faults(snakemake)
    rows = collect_metrics(list(snakemake.input))
    write_csv_atomic(rows, snakemake.output.all)
    log.info("%d rows from %d metric files", len(rows), len(snakemake.input))
