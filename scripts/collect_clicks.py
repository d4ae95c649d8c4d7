from medsegflow.interactive import write_clicks_tables
from medsegflow.logs import log_to

with log_to(snakemake.log[0]):
    write_clicks_tables(list(snakemake.input), snakemake.output.curves, snakemake.output.auc)
