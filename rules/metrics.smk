rule score_method:
    input:
        predictions=paths.PREDICTIONS,
        preprocessed=paths.PREPROCESSED,
    output:
        metrics=paths.METRICS,
        conventions=paths.CONVENTION_METRICS,
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
        all=paths.fill(paths.TABLE, table="all"),
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
        paths.fill(paths.TABLE, table="all"),
    output:
        summary=paths.fill(paths.TABLE, table="summary"),
        stats=paths.fill(paths.TABLE, table="stats"),
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


rule rank_methods:
    input:
        paths.fill(paths.TABLE, table="all"),
    output:
        paths.fill(paths.TABLE, table="ranking"),
    log:
        "logs/rank_methods/ranking.log",
    benchmark:
        "benchmarks/rank_methods/ranking.tsv"
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
        "../scripts/rank_methods.py"


rule collect_conventions:
    input:
        replays=get_convention_files,
        summary=paths.fill(paths.TABLE, table="summary"),
    output:
        paths.fill(paths.TABLE, table="conventions"),
    log:
        "logs/collect_conventions/conventions.log",
    conda:
        "../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    script:
        "../scripts/collect_conventions.py"
