rule plot_metric:
    input:
        paths.fill(paths.TABLE, table="summary"),
    output:
        report(
            paths.METRIC_FIGURE,
            caption="../report/metric_figure.rst",
            category="Metrics",
            subcategory="All datasets",
            labels={"figure": "{metric} by method"},
        ),
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
        prompts=get_dataset_prompt_inputs,
    output:
        report(
            paths.QUALITATIVE_FIGURE,
            caption="../report/qualitative.rst",
            category="Qualitative",
            subcategory="{dataset}",
            labels={
                "dataset": "{dataset}",
                "figure": "worst, median, best per method",
            },
        ),
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
        prompt_files=get_dataset_prompt_files,
        interactive=get_dataset_interactive_methods,
    script:
        "../scripts/plot_qualitative.py"


rule plot_ranking:
    input:
        paths.fill(paths.TABLE, table="all"),
    output:
        report(
            paths.RANKING_FIGURE,
            caption="../report/ranking_figure.rst",
            category="Ranking stability",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "bootstrap ranks"},
        ),
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
        report(
            paths.CONVENTIONS_FIGURE,
            caption="../report/conventions_figure.rst",
            category="Conventions",
            subcategory="All datasets",
            labels={"figure": "ranks under each convention"},
        ),
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


rule plot_cost:
    input:
        cost=paths.fill(paths.TABLE, table="cost"),
        summary=paths.fill(paths.TABLE, table="summary"),
    output:
        report(
            paths.COST_FIGURE,
            caption="../report/cost_figure.rst",
            category="Cost",
            subcategory="All datasets",
            labels={"figure": "DSC against seconds per case"},
        ),
    log:
        "logs/plot_cost/cost.log",
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    script:
        "../scripts/plot_cost.py"
