from pathlib import Path

from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.stages.predict import gather_shard_manifests, select_cases
from medsegflow.stages.preprocess import read_preprocessed_manifest

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    preprocessed = snakemake.input.preprocessed
    cases = select_cases(
        read_preprocessed_manifest(Path(preprocessed).parent),
        snakemake.params.splits,
        source=preprocessed,
    )
    gather_shard_manifests(
        list(snakemake.input.shards), snakemake.output[0], cases["case_id"].tolist()
    )
