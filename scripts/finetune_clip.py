# Rule contract (the lead's rules/*.smk):
#   input:  captions=results/clip_data/{clip}/captions.csv (+ base=<weights path> when
#           fine-tuning a downloaded model; read through params.weights)
#   output: results/models/{clip}/open_clip_config.json (the folder is written atomically)
#   params: clip=<the clip_models.{clip} entry>, weights=<the weights: block>,
#           seed=<config seed>, words=<text prompt words for the demo vocabulary, optional>
#   threads: torch threads of the training (on CUDA when the job has a GPU)
from pathlib import Path

from medsegflow.clip.finetune import train_clip_model
from medsegflow.debug import inject_faults
from medsegflow.logs import log_to

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    train_clip_model(
        spec=snakemake.params.clip,
        name=snakemake.wildcards.clip,
        weights=snakemake.params.weights,
        captions_csv=snakemake.input.captions,
        out_dir=Path(snakemake.output[0]).parent,
        seed=snakemake.params.seed,
        words=snakemake.params.get("words", []),
        threads=snakemake.threads,
        device="auto",
    )
