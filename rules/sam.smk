# The SAM image-embedding cache: one job per dataset and SAM-family model, whose outputs
# every method of an embedding-cache family reuses (models trained here: rules/train.smk).


rule embed_images:
    input:
        preprocessed=paths.PREPROCESSED,
        checkpoint=get_sam_checkpoint,
    output:
        paths.EMBEDDINGS,
    log:
        "logs/embed_images/{dataset}/{model}.log",
    benchmark:
        "benchmarks/embed_images/{dataset}/{model}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        gpu=get_gpu_count,
        attempt=get_attempt,
    params:
        arch=get_sam_model_arch,
        model=get_sam_model_config,
        splits=get_embedding_splits,
    script:
        "../scripts/embed_images.py"
