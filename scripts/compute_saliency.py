# Text-driven saliency (CLIP + M2IB) of one (dataset, saliency key): medsegflow.stages.saliency.
# input: preprocessed (manifest.tsv), cases (canonical cases.tsv: captions), clip (model
# folder marker or weight path), tuning (optional chosen.json); params: method (the
# text_sam method that defines the stage), clip (its clip_models entry), text_prompts
# ({key, set}), weights, splits, seed; output: the saliency manifest.
from pathlib import Path

from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.stages.tuning import apply_chosen

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    import torch

    from medsegflow.clip.backends import load_clip
    from medsegflow.saliency.m2ib import M2IBParams
    from medsegflow.stages.saliency import compute_saliency
    from medsegflow.text_prompts import dataset_texts

    # values chosen on the validation split (tune: block) override the method's own
    method = apply_chosen(snakemake.params.method, getattr(snakemake.input, "tuning", None))
    key_prefix = f"methods.{snakemake.wildcards.sal}.saliency"
    preprocessed_dir = Path(snakemake.input.preprocessed).parent
    bundle = load_clip(
        snakemake.params.clip,
        name=method["clip"],
        weights=snakemake.params.weights,
        device="cuda" if torch.cuda.is_available() else "cpu",
        folder=Path(snakemake.input.clip).parent,  # used for pipeline-trained models only
    )
    compute_saliency(
        preprocessed_dir=preprocessed_dir,
        out_dir=Path(snakemake.output[0]).parent,
        bundle=bundle,
        texts=dataset_texts(
            snakemake.params.text_prompts,
            cases_tsv=snakemake.input.cases,
            preprocessed_dir=preprocessed_dir,
        ),
        params=M2IBParams.from_config(method.get("saliency"), key_prefix=key_prefix),
        splits=tuple(snakemake.params.splits),
        slice_mode=method.get("slice_mode", "labelled"),
        seed=snakemake.params.seed,
        key_prefix=key_prefix,
        threads=snakemake.threads,
    )
