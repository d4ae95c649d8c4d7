rule predict_method:
    input:
        unpack(get_predict_inputs),
    output:
        "results/predictions/{dataset}/{method}/manifest.tsv",
    log:
        "logs/predict_method/{dataset}/{method}.log",
    benchmark:
        "benchmarks/predict_method/{dataset}/{method}.tsv"
    conda:
        "../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        method=get_method_config,
        splits=config["metrics"]["splits"],
    script:
        "../scripts/predict_method.py"
