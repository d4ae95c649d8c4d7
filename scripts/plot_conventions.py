import pandas as pd

from medsegflow.logs import log_to
from medsegflow.plots import plot_convention_ranks

with log_to(snakemake.log[0]):
    table = pd.read_csv(snakemake.input[0], dtype={"label_name": str})
    plot_convention_ranks(table, out_png=snakemake.output[0])
