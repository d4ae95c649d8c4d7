import pandas as pd

from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.tables import compare_methods, mark_smoke_tests, summarise, write_csv_atomic

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    rows = pd.read_csv(snakemake.input[0], dtype={"case_id": str})
    tables = snakemake.params.tables
    summary = summarise(
        rows,
        n_boot=tables["bootstrap"],
        seed=snakemake.params.seed,
        confidence=tables["confidence"],
    )
    summary = mark_smoke_tests(summary, snakemake.params.methods)
    write_csv_atomic(summary, snakemake.output.summary)
    write_csv_atomic(compare_methods(rows), snakemake.output.stats)
