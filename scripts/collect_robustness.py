from medsegflow.logs import log_to
from medsegflow.stages.robustness import write_robustness_table

with log_to(snakemake.log[0]):
    write_robustness_table(list(snakemake.input), snakemake.output[0])
