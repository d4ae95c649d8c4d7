import pandas as pd

from medsegflow.logs import log_to
from medsegflow.ranking import rank_methods
from medsegflow.tables import write_csv_atomic

with log_to(snakemake.log[0]):
    tables = snakemake.params.tables
    rows = pd.read_csv(snakemake.input[0], dtype={"case_id": str})
    ranking = rank_methods(
        rows,
        metrics=tables["ranking_metrics"],
        n_boot=tables["bootstrap"],
        seed=snakemake.params.seed,
        confidence=tables["confidence"],
    )
    write_csv_atomic(ranking, snakemake.output[0])
