import pandas as pd

from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.plots import plot_metric_by_method

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    summary = pd.read_csv(snakemake.input[0])
    plot_metric_by_method(summary, metric=snakemake.wildcards.metric, out_png=snakemake.output[0])
