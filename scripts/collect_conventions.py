from medsegflow.logs import log_to
from medsegflow.stages.replay import write_conventions_table

with log_to(snakemake.log[0]):
    write_conventions_table(snakemake.input.replays, snakemake.input.summary, snakemake.output[0])
