rule prepare_dataset:
    input:
        get_source_manifest,
    output:
        paths.DATA_CASES,
    log:
        "logs/prepare_dataset/{dataset}.log",
    benchmark:
        "benchmarks/prepare_dataset/{dataset}.tsv"
    conda:
        "../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    params:
        dataset=get_dataset_config,
        seed=config["seed"],
    script:
        "../scripts/prepare_dataset.py"


rule verify:
    log:
        "logs/verify.log",
    localrule: True
    conda:
        "../envs/base.yaml"
    params:
        datasets=config["datasets"],
        seed=config["seed"],
    script:
        "../scripts/verify_datasets.py"
