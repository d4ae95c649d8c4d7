# get_* functions of the nnU-Net rules (rules/nnunet.smk): the family's own planning
# (medsegflow.families.nnunet). Kept apart from the rules (snakemake --lint).

from medsegflow.families import nnunet as nnu

# nnU-Net family (medsegflow.families.nnunet)


def get_nnunet_convert_inputs(wildcards):
    return nnu.convert_inputs(config, wildcards.dataset, wildcards.labels)


def get_nnunet_plan_params(wildcards):
    return nnu.plan_params(config, wildcards.dataset, wildcards.labels)


def get_nnunet_plan_threads(wildcards):
    return nnu.plan_params(config, wildcards.dataset, wildcards.labels)["num_processes"]


def get_nnunet_train_inputs(wildcards):
    return nnu.train_inputs(config, wildcards.dataset, wildcards.method)


def get_nnunet_threads(wildcards):
    return nnu.threads(config, wildcards.method)
