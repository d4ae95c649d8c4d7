# SAM engine: the demo SAM trained on the phantoms' train split, and the image-embedding
# cache (one job per dataset and SAM model) that every SAM method's prompts reuse.


rule train_demo_sam:
    input:
        get_demo_sam_training_inputs,
    output:
        checkpoint="results/models/{model}/sam.pth",
        arch="results/models/{model}/sam.json",
        history="results/models/{model}/train_log.csv",
    log:
        "logs/train_demo_sam/{model}.log",
    benchmark:
        "benchmarks/train_demo_sam/{model}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: get_demo_sam_threads
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        gpu=get_gpu_count,
        attempt=get_attempt,
    params:
        model=get_sam_model_config,
        seed=config["seed"],
    script:
        "../scripts/train_demo_sam.py"


rule embed_images:
    input:
        preprocessed="results/preprocessed/{dataset}/manifest.tsv",
        checkpoint=get_sam_checkpoint,
    output:
        "results/embeddings/{dataset}/{model}/manifest.tsv",
    log:
        "logs/embed_images/{dataset}/{model}.log",
    benchmark:
        "benchmarks/embed_images/{dataset}/{model}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        gpu=get_gpu_count,
        attempt=get_attempt,
    params:
        model=get_sam_model_config,
        splits=get_embedding_splits,
    script:
        "../scripts/embed_images.py"
