# Choose saliency/coarse-mask settings of a text_sam method on the validation split.
# input: preprocessed (manifest.tsv), cases (canonical cases.tsv), clip (model file/folder)
# params: method, clip, text_prompts, weights, seed; output: chosen.json
from pathlib import Path

from medsegflow.clip.backends import load_clip
from medsegflow.debug import inject_faults
from medsegflow.logs import log_to
from medsegflow.stages.tuning import tune_text_method
from medsegflow.text_prompts import dataset_texts

with log_to(snakemake.log[0]):
    inject_faults(snakemake)
    preprocessed_dir = Path(snakemake.input.preprocessed).parent
    clip = snakemake.params.method["clip"]
    tune_text_method(
        preprocessed_dir=preprocessed_dir,
        out_dir=Path(snakemake.output[0]).parent,
        bundle=load_clip(snakemake.params.clip, name=clip, weights=snakemake.params.weights),
        texts=dataset_texts(
            snakemake.params.text_prompts,
            cases_tsv=snakemake.input.cases,
            preprocessed_dir=preprocessed_dir,
        ),
        method=snakemake.params.method,
        method_name=snakemake.wildcards.method,
        seed=snakemake.params.seed,
    )
