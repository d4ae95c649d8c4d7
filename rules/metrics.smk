rule score_method:
    input:
        predictions="results/predictions/{dataset}/{method}/manifest.tsv",
        preprocessed="results/preprocessed/{dataset}/manifest.tsv",
    output:
        "results/metrics/{dataset}/{method}.csv",
    log:
        "logs/score_method/{dataset}/{method}.log",
    benchmark:
        "benchmarks/score_method/{dataset}/{method}.tsv"
    conda:
        "../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    params:
        metrics=config["metrics"],
    script:
        "../scripts/score_method.py"


rule collect_tables:
    input:
        get_metrics_files,
    output:
        all="results/tables/all.csv",
    log:
        "logs/collect_tables/all.log",
    conda:
        "../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    script:
        "../scripts/collect_tables.py"


rule summarise_tables:
    input:
        "results/tables/all.csv",
    output:
        summary="results/tables/summary.csv",
        stats="results/tables/stats.csv",
    log:
        "logs/summarise_tables/summary.log",
    conda:
        "../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    params:
        tables=config["tables"],
        seed=config["seed"],
    script:
        "../scripts/summarise_tables.py"
