# One prediction job per (dataset, method): scale.predict_shards is 1 (rules/predict.smk).


rule predict_method:
    input:
        unpack(get_predict_inputs),
    output:
        paths.PREDICTIONS,
    log:
        "logs/predict_method/{dataset}/{method}.log",
    benchmark:
        "benchmarks/predict_method/{dataset}/{method}.tsv"
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
