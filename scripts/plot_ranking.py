import pandas as pd

from medsegflow.logs import log_to
from medsegflow.plots import plot_ranking

with log_to(snakemake.log[0]):
    tables = snakemake.params.tables
    rows = pd.read_csv(snakemake.input[0], dtype={"case_id": str})
    plot_ranking(
        rows,
        dataset=snakemake.wildcards.dataset,
        metric=tables["ranking_metrics"][0],
        n_boot=tables["bootstrap"],
        seed=snakemake.params.seed,
        confidence=tables["confidence"],
        out_png=snakemake.output[0],
    )
