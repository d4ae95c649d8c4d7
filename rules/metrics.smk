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
        summary=report(
            paths.fill(paths.TABLE, table="summary"),
            caption="../report/summary_table.rst",
            category="Metrics",
            subcategory="All datasets",
            labels={"table": "summary"},
        ),
        stats=report(
            paths.fill(paths.TABLE, table="stats"),
            caption="../report/stats_table.rst",
            category="Metrics",
            subcategory="All datasets",
            labels={"table": "paired tests"},
        ),
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
        methods=config["methods"],
        seed=config["seed"],
    script:
        "../scripts/summarise_tables.py"


rule rank_methods:
    input:
        paths.fill(paths.TABLE, table="all"),
    output:
        report(
            paths.fill(paths.TABLE, table="ranking"),
            caption="../report/ranking_table.rst",
            category="Ranking stability",
            subcategory="All datasets",
            labels={"table": "ranking"},
        ),
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
        report(
            paths.fill(paths.TABLE, table="conventions"),
            caption="../report/conventions_table.rst",
            category="Conventions",
            subcategory="All datasets",
            labels={"table": "conventions"},
        ),
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


rule cost_table:
    input:
        get_metrics_files,
    output:
        report(
            paths.fill(paths.TABLE, table="cost"),
            caption="../report/cost_table.rst",
            category="Cost",
            subcategory="All datasets",
            labels={"table": "cost"},
        ),
    log:
        "logs/cost_table/cost.log",
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    script:
        "../scripts/cost_table.py"
