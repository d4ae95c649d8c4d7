# MedCLIP-SAMv2 (medsegflow.families.text_stages): CLIP captions and training, text-driven saliency
# (CLIP + M2IB), coarse masks, SAM prompts from the coarse masks, and validation-only tuning.
# Stage folders are keyed by the first text_sam method with the same settings ({sal},
# {crs}, {tpk}), so an ablation grid shares every stage it does not vary.


rule make_clip_captions:
    input:
        unpack(get_clip_caption_inputs),
    output:
        paths.CLIP_CAPTIONS,
    log:
        "logs/make_clip_captions/{clip}.log",
    # the CLIP heads the longest chain of the demo (saliency, coarse masks, SAM, the weak
    # nnU-Net's pseudo-labels and training): started first, as the SAM trainings are
    priority: 10
    conda:
        "../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    params:
        clip=get_clip_model_config,
        phantoms=lambda wildcards: txt.clip_phantoms(config, wildcards.clip),
        seed=config["seed"],
    script:
        "../scripts/make_clip_captions.py"


rule finetune_clip:
    input:
        unpack(get_clip_finetune_inputs),
    output:
        paths.CLIP_MODEL,
    log:
        "logs/finetune_clip/{clip}.log",
    benchmark:
        "benchmarks/finetune_clip/{clip}.tsv"
    priority: 10
    conda:
        "../envs/torch.yaml"
    threads: get_clip_threads
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        gpu=get_gpu_count,
        attempt=get_attempt,
    params:
        clip=get_clip_model_config,
        weights=config["weights"],
        words=get_clip_words,
        seed=config["seed"],
    script:
        "../scripts/finetune_clip.py"


rule tune_text_method:
    input:
        unpack(get_tuning_inputs),
    output:
        paths.TUNING,
    log:
        "logs/tune_text_method/{dataset}/{method}.log",
    benchmark:
        "benchmarks/tune_text_method/{dataset}/{method}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        gpu=get_gpu_count,
        attempt=get_attempt,
    params:
        method=get_method_config,
        clip=get_method_clip_config,
        text_prompts=get_method_text_prompts,
        weights=config["weights"],
        seed=config["seed"],
    script:
        "../scripts/tune_text_method.py"


rule compute_saliency:
    input:
        unpack(get_saliency_inputs),
    output:
        paths.SALIENCY,
    log:
        "logs/compute_saliency/{dataset}/{sal}.log",
    benchmark:
        "benchmarks/compute_saliency/{dataset}/{sal}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        gpu=get_gpu_count,
        attempt=get_attempt,
    params:
        method=get_saliency_method,
        clip=get_saliency_clip_config,
        text_prompts=get_saliency_text_prompts,
        weights=config["weights"],
        splits=get_saliency_splits,
        seed=config["seed"],
    script:
        "../scripts/compute_saliency.py"


rule make_coarse_masks:
    input:
        unpack(get_coarse_inputs),
    output:
        paths.COARSE,
    log:
        "logs/make_coarse_masks/{dataset}/{crs}.log",
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    params:
        method=get_coarse_method,
    script:
        "../scripts/make_coarse_masks.py"


rule make_mask_prompts:
    input:
        unpack(get_mask_prompt_inputs),
    output:
        paths.MASK_PROMPTS,
    log:
        "logs/make_mask_prompts/{dataset}/{tpk}.log",
    conda:
        "../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    params:
        method=get_mask_prompt_method,
        seed=config["seed"],
    script:
        "../scripts/make_mask_prompts.py"
