# SAM-Med3D trained by the pipeline (family sam3d with train:): one job per method,
# writing results/models/sam3d/{sam3d}/ (weights in the released checkpoint's layout,
# model card, loss history). Its predictions run in predict_method like every family.


rule train_sam3d_model:
    input:
        unpack(get_sam3d_train_inputs),
    output:
        weights=paths.SAM3D_WEIGHTS,
        card=paths.SAM3D_CARD,
        history=paths.SAM3D_HISTORY,
    log:
        "logs/train_sam3d_model/{sam3d}.log",
    benchmark:
        "benchmarks/train_sam3d_model/{sam3d}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: get_sam3d_train_threads
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        gpu=get_gpu_count,
        attempt=get_attempt,
    params:
        method=get_sam3d_method_config,
        seed=config["seed"],
    script:
        "../scripts/train_sam3d_model.py"
