# Prompt-robustness curves: one job per (dataset, SAM model) decoding every object of the
# scored splits from the cached embeddings under worse and worse prompts, then the table
# and one figure per dataset (medsegflow.robustness, config robustness:).


rule compute_robustness:
    input:
        unpack(get_robustness_inputs),
    output:
        paths.ROBUSTNESS,
    log:
        "logs/compute_robustness/{dataset}/{model}.log",
    benchmark:
        "benchmarks/compute_robustness/{dataset}/{model}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        gpu=get_gpu_count,
        attempt=get_attempt,
    params:
        grid=wf.robustness_grid(config),
        splits=config["metrics"]["splits"],
        seed=config["seed"],
    script:
        "../scripts/compute_robustness.py"


rule collect_robustness:
    input:
        get_robustness_files,
    output:
        report(
            paths.fill(paths.TABLE, table="robustness"),
            caption="../report/robustness_table.rst",
            category="Robustness",
            subcategory="All datasets",
            labels={"table": "robustness"},
        ),
    log:
        "logs/collect_robustness/robustness.log",
    conda:
        "../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    script:
        "../scripts/collect_robustness.py"


rule plot_robustness:
    input:
        paths.fill(paths.TABLE, table="robustness"),
    output:
        report(
            paths.ROBUSTNESS_FIGURE,
            caption="../report/robustness_figure.rst",
            category="Robustness",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "DSC against prompt quality"},
        ),
    log:
        "logs/plot_robustness/{dataset}.log",
    conda:
        "../envs/plots.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    script:
        "../scripts/plot_robustness.py"
