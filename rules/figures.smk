rule plot_metric:
    input:
        paths.fill(paths.TABLE, table="summary"),
    output:
        paths.METRIC_FIGURE,
    log:
        "logs/plot_metric/{metric}.log",
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    script:
        "../scripts/plot_metric.py"


rule plot_qualitative:
    input:
        preprocessed=paths.PREPROCESSED,
        predictions=get_dataset_predictions,
        metrics=get_dataset_metrics_files,
    output:
        paths.QUALITATIVE_FIGURE,
    log:
        "logs/plot_qualitative/{dataset}.log",
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    params:
        n_cases=config["figures"]["qualitative_cases"],
    script:
        "../scripts/plot_qualitative.py"


rule plot_ranking:
    input:
        paths.fill(paths.TABLE, table="all"),
    output:
        paths.RANKING_FIGURE,
    log:
        "logs/plot_ranking/{dataset}.log",
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    params:
        tables=config["tables"],
        seed=config["seed"],
    script:
        "../scripts/plot_ranking.py"


rule plot_conventions:
    input:
        paths.fill(paths.TABLE, table="conventions"),
    output:
        paths.CONVENTIONS_FIGURE,
    log:
        "logs/plot_conventions/conventions.log",
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    script:
        "../scripts/plot_conventions.py"
