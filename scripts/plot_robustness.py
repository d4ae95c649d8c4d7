import pandas as pd

from medsegflow.curve_figures import plot_robustness
from medsegflow.logs import log_to

with log_to(snakemake.log[0]):
    table = pd.read_csv(snakemake.input[0])
    plot_robustness(table, dataset=snakemake.wildcards.dataset, out_png=snakemake.output[0])
