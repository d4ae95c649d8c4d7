import pandas as pd

from medsegflow.curve_figures import plot_clicks
from medsegflow.logs import log_to

with log_to(snakemake.log[0]):
    curves = pd.read_csv(snakemake.input[0], dtype={"label_name": str})
    plot_clicks(curves, dataset=snakemake.wildcards.dataset, out_png=snakemake.output[0])
