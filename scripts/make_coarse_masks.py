# Coarse masks from the saliency maps of one (dataset, coarse key): medsegflow.stages.coarse.
# input: saliency (manifest), preprocessed (manifest), tuning (optional chosen.json);
# params: method (the text_sam method that defines the stage); output: the coarse manifest.
from pathlib import Path

from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.stages.coarse import make_coarse_masks
from medsegflow.stages.tuning import apply_chosen

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    # values chosen on the validation split (tune: block) override the method's own
    method = apply_chosen(snakemake.params.method, getattr(snakemake.input, "tuning", None))
    make_coarse_masks(
        saliency_dir=Path(snakemake.input.saliency).parent,
        preprocessed_dir=Path(snakemake.input.preprocessed).parent,
        out_dir=Path(snakemake.output[0]).parent,
        config=method.get("coarse") or {},
        key_prefix=f"methods.{snakemake.wildcards.crs}.coarse",
    )
