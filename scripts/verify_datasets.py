from medsegflow.errors import InputError
from medsegflow.logs import console_warning, log_to
from medsegflow.verify import format_reports, verify_datasets

with log_to(snakemake.log[0]) as log:
    config = {"datasets": snakemake.params.datasets, "seed": snakemake.params.seed}
    reports = verify_datasets(config)
    text = format_reports(reports)
    log.info("%s", text)
    if any(report.problems for report in reports):
        raise InputError(text)
    for report in reports:  # no problem: the warnings still reach the console
        for warning in report.warnings:
            console_warning(log, warning)
