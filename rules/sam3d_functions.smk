# get_* functions of the SAM-Med3D training stage (rules/sam3d.smk): the family's own
# planning (medsegflow.families.sam3d). Kept apart from the rules (snakemake --lint).

from medsegflow.families import sam3d as s3d


def get_sam3d_train_inputs(wildcards):
    return s3d.train_inputs(config, wildcards.sam3d)


def get_sam3d_method_config(wildcards):
    return pl.method_config(config, wildcards.sam3d)


def get_sam3d_train_threads(wildcards):
    return pl.method_config(config, wildcards.sam3d)["train"]["threads"]
