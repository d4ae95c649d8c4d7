rule plot_metric:
    input:
        "results/tables/summary.csv",
    output:
        "results/figures/{metric}_by_method.png",
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
        preprocessed="results/preprocessed/{dataset}/manifest.tsv",
        predictions=get_dataset_predictions,
        metrics=get_dataset_metrics_files,
    output:
        "results/figures/qualitative_{dataset}.png",
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
