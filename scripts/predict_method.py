from pathlib import Path

from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.prediction.job import parse_scatteritem
from medsegflow.stages.predict import predict_dataset
from medsegflow.threads import limit_threads

# predict_method writes out_dir/manifest.tsv; predict_method_shard (scale.predict_shards > 1)
# writes out_dir/shards/{scatteritem}.tsv and only that shard's cases.
item = snakemake.wildcards.get("scatteritem")
shard = parse_scatteritem(item) if item else None
manifest = Path(snakemake.output[0])
out_dir = manifest.parent if shard is None else manifest.parent.parent

with log_to(snakemake.log[0]):
    limit_threads(snakemake.threads)
    inject_faults(snakemake)
    predict_dataset(
        method=snakemake.params.method,
        method_name=snakemake.wildcards.method,
        inputs=dict(snakemake.input.items()),
        out_dir=out_dir,
        splits=tuple(snakemake.params.splits),
        seed=snakemake.params.seed,
        shard=shard,
    )
