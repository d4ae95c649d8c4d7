# scale.predict_shards > 1 (rules/predict.smk): shard jobs, then one gather job writing
# manifest.tsv. Shard jobs ask for the same resources and env as predict_method.


rule predict_method_shard:
    input:
        unpack(get_predict_inputs),
    output:
        paths.PREDICTION_SHARD,
    log:
        "logs/predict_method_shard/{dataset}/{method}/{scatteritem}.log",
    benchmark:
        "benchmarks/predict_method_shard/{dataset}/{method}/{scatteritem}.tsv"
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
        splits=config["metrics"]["splits"],
        seed=config["seed"],
    script:
        "../scripts/predict_method.py"


rule gather_predictions:
    input:
        shards=gather.predict(paths.keep_only(paths.PREDICTION_SHARD, "scatteritem")),
        preprocessed=get_preprocessed_manifest,
    output:
        paths.PREDICTIONS,
    log:
        "logs/gather_predictions/{dataset}/{method}.log",
    benchmark:
        "benchmarks/gather_predictions/{dataset}/{method}.tsv"
    conda:
        "../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        gpu=get_gpu_count,
        attempt=get_attempt,
    params:
        splits=config["metrics"]["splits"],
    script:
        "../scripts/gather_predictions.py"
