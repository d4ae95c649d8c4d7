# get_* functions of the MedCLIP-SAMv2 stage rules (rules/saliency.smk): the text_sam
# family's own planning (medsegflow.families.text_stages). Kept apart from the rules
# (snakemake --lint).

from medsegflow.families import text_stages as txt

# MedCLIP-SAMv2 text-driven stages (medsegflow.families.text_stages)


def get_clip_model_config(wildcards):
    return config["clip_models"][wildcards.clip]


def get_clip_caption_inputs(wildcards):
    return txt.clip_caption_inputs(config, wildcards.clip)


def get_clip_finetune_inputs(wildcards):
    return wf.without_paths(
        txt.clip_finetune_inputs(config, wildcards.clip), PLAN_WITHOUT
    )


def get_clip_threads(wildcards):
    return txt.clip_training(config, wildcards.clip)["threads"]


def get_clip_words(wildcards):
    return txt.clip_vocabulary_words(config, wildcards.clip)


def get_tuning_inputs(wildcards):
    return wf.without_paths(
        txt.tuning_inputs(config, wildcards.dataset, wildcards.method), PLAN_WITHOUT
    )


def get_method_clip_config(wildcards):
    return txt.clip_spec(config, config["methods"][wildcards.method]["clip"])


def get_method_text_prompts(wildcards):
    return txt.method_text_prompts(config, wildcards.dataset, wildcards.method)


def get_saliency_inputs(wildcards):
    return wf.without_paths(
        txt.saliency_inputs(config, wildcards.dataset, wildcards.sal), PLAN_WITHOUT
    )


def get_saliency_method(wildcards):
    return txt.stage_method(config, "sal", wildcards.sal)


def get_saliency_clip_config(wildcards):
    return txt.clip_spec(config, config["methods"][wildcards.sal]["clip"])


def get_saliency_text_prompts(wildcards):
    return txt.method_text_prompts(config, wildcards.dataset, wildcards.sal)


def get_saliency_splits(wildcards):
    return txt.stage_splits(config, wildcards.dataset, "sal", wildcards.sal)


def get_coarse_inputs(wildcards):
    return txt.coarse_inputs(config, wildcards.dataset, wildcards.crs)


def get_coarse_method(wildcards):
    return txt.stage_method(config, "crs", wildcards.crs)


def get_mask_prompt_inputs(wildcards):
    return txt.mask_prompt_inputs(config, wildcards.dataset, wildcards.tpk)


def get_mask_prompt_method(wildcards):
    return txt.stage_method(config, "tpk", wildcards.tpk)
