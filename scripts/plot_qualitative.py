from pathlib import Path

from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.qualitative import render_qualitative_figure

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    render_qualitative_figure(
        dataset=snakemake.wildcards.dataset,
        metrics_csvs=list(snakemake.input.metrics),
        preprocessed_dir=Path(snakemake.input.preprocessed).parent,
        predictions_dirs={Path(p).parent.name: Path(p).parent for p in snakemake.input.predictions},
        n_cases=snakemake.params.n_cases,
        out_png=snakemake.output[0],
        prompt_files=snakemake.params.prompt_files,
        interactive=snakemake.params.interactive,
    )
