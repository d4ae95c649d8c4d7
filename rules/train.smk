# The training stage of SAM-family models: one job per sam_models entry with a train:
# recipe, from scratch or from its base model, writing results/models/{model}/ (weights,
# model card with base, recipe and architecture, and the loss history).


rule train_sam_model:
    input:
        unpack(get_sam_train_inputs),
    output:
        weights=paths.SAM_MODEL_WEIGHTS,
        card=paths.SAM_MODEL_CARD,
        history=paths.SAM_MODEL_HISTORY,
    log:
        "logs/train_sam_model/{model}.log",
    benchmark:
        "benchmarks/train_sam_model/{model}.tsv"
    # each model heads a chain (training, embedding or SAMed's own encoding, prediction,
    # scoring): started first, the chains end before the cheap jobs do (demo wall time)
    priority: 10
    conda:
        "../envs/torch.yaml"
    threads: get_sam_train_threads
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        gpu=get_gpu_count,
        attempt=get_attempt,
    params:
        model=get_sam_model_config,
        arch=get_sam_model_arch,
        seed=config["seed"],
    script:
        "../scripts/train_sam_model.py"
