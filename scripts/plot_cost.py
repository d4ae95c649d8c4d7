import pandas as pd

from medsegflow.logs import log_to
from medsegflow.plots import plot_cost_pareto

with log_to(snakemake.log[0]):
    plot_cost_pareto(
        pd.read_csv(snakemake.input.cost),
        pd.read_csv(snakemake.input.summary),
        out_png=snakemake.output[0],
    )
