rule make_prompts:
    input:
        paths.PREPROCESSED,
    output:
        paths.GT_PROMPTS,
    log:
        "logs/make_prompts/{dataset}/{prompt}.log",
    conda:
        "../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        attempt=get_attempt,
    params:
        prompt=get_prompt_config,
        seed=config["seed"],
    script:
        "../scripts/make_prompts.py"
