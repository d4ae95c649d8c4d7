from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.stages.predict import gather_predictions

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    gather_predictions(
        shard_paths=list(snakemake.input.shards),
        preprocessed=snakemake.input.preprocessed,
        out_path=snakemake.output[0],
        splits=snakemake.params.splits,
    )
