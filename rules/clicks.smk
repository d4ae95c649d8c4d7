# The interactive protocol: the labels after every click of an interactive method, scored
# per click with the one metric implementation, tables of the curves and their areas, and
# one figure per dataset (medsegflow.interactive).


rule score_clicks:
    input:
        predictions=paths.PREDICTIONS,
        preprocessed=paths.PREPROCESSED,
    output:
        paths.CLICK_METRICS,
    log:
        "logs/score_clicks/{dataset}/{method}.log",
    benchmark:
        "benchmarks/score_clicks/{dataset}/{method}.tsv"
    wildcard_constraints:
        method=wf.interactive_method_pattern(config),
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
        "../scripts/score_clicks.py"


rule collect_clicks:
    input:
        get_click_metrics_files,
    output:
        curves=report(
            paths.fill(paths.TABLE, table="clicks"),
            caption="../report/clicks_table.rst",
            category="Interactive",
            subcategory="All datasets",
            labels={"table": "clicks"},
        ),
        auc=report(
            paths.fill(paths.TABLE, table="clicks_auc"),
            caption="../report/clicks_auc_table.rst",
            category="Interactive",
            subcategory="All datasets",
            labels={"table": "clicks_auc"},
        ),
    log:
        "logs/collect_clicks/clicks.log",
    conda:
        "../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    script:
        "../scripts/collect_clicks.py"


rule plot_clicks:
    input:
        paths.fill(paths.TABLE, table="clicks"),
    output:
        report(
            paths.CLICKS_FIGURE,
            caption="../report/clicks_figure.rst",
            category="Interactive",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "DSC against clicks"},
        ),
    log:
        "logs/plot_clicks/{dataset}.log",
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    script:
        "../scripts/plot_clicks.py"
