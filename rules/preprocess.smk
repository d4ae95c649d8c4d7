rule preprocess_dataset:
    input:
        paths.DATA_CASES,
    output:
        paths.PREPROCESSED,
    log:
        "logs/preprocess_dataset/{dataset}.log",
    benchmark:
        "benchmarks/preprocess_dataset/{dataset}.tsv"
    priority: 10  # cheap, and every chain starts from it
    conda:
        "../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    params:
        dataset=get_dataset_config,
        preprocess=config["preprocess"],
        seed=config["seed"],
    script:
        "../scripts/preprocess_dataset.py"
