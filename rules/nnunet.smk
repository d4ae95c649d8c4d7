# nnU-Net v2 (medsegflow.nnunet): canonical dataset -> nnU-Net raw -> plans and preprocessed
# data -> trained model; predictions go through predict_method (family nnunet).
# {labels} is "gt" or the method whose train/val predictions are the training labels.


rule predict_pseudolabels:
    input:
        unpack(get_predict_inputs),
    output:
        paths.PSEUDOLABELS,
    log:
        "logs/predict_pseudolabels/{dataset}/{method}.log",
    benchmark:
        "benchmarks/predict_pseudolabels/{dataset}/{method}.tsv"
    conda:
        get_method_env
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        gpu=get_gpu_count,
        attempt=get_attempt,
    params:
        method=get_method_config,
        splits=["train", "val"],
        seed=config["seed"],
    script:
        "../scripts/predict_method.py"


rule convert_nnunet_dataset:
    input:
        unpack(get_nnunet_convert_inputs),
    output:
        paths.NNUNET_CONVERTED,
    log:
        "logs/convert_nnunet_dataset/{dataset}/{labels}.log",
    benchmark:
        "benchmarks/convert_nnunet_dataset/{dataset}/{labels}.tsv"
    conda:
        "../envs/nnunet.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    script:
        "../scripts/nnunet_convert.py"


rule plan_nnunet_dataset:
    input:
        converted=paths.NNUNET_CONVERTED,
    output:
        paths.NNUNET_PLANNED,
    log:
        "logs/plan_nnunet_dataset/{dataset}/{labels}.log",
    benchmark:
        "benchmarks/plan_nnunet_dataset/{dataset}/{labels}.tsv"
    conda:
        "../envs/nnunet.yaml"
    threads: get_nnunet_plan_threads
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    params:
        plan=get_nnunet_plan_params,
    script:
        "../scripts/nnunet_plan.py"


rule train_nnunet:
    input:
        unpack(get_nnunet_train_inputs),
    output:
        paths.NNUNET_TRAINED,
    log:
        "logs/train_nnunet/{dataset}/{method}.log",
    benchmark:
        "benchmarks/train_nnunet/{dataset}/{method}.tsv"
    conda:
        "../envs/nnunet.yaml"
    threads: get_nnunet_threads
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        gpu=get_gpu_count,
        attempt=get_attempt,
    params:
        method=get_method_config,
        seed=config["seed"],
    script:
        "../scripts/nnunet_train.py"
