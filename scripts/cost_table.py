from medsegflow.cost import cost_table
from medsegflow.logs import log_to
from medsegflow.tables import write_csv_atomic

with log_to(snakemake.log[0]):
    write_csv_atomic(cost_table(snakemake.config), snakemake.output[0])
