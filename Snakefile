# MedSegFlow: reproducible benchmark of prompt-based medical image segmentation.
# The default config.yaml is the offline demo on generated phantoms (CPU, minutes).


from snakemake.utils import min_version

min_version("9.0")


# The demo config, unless a study is given with --configfile: a study names its datasets
# and stands alone (the configfile directive would merge the demo's datasets and methods
# into it). Before this directive, `config` holds what the command line gave.
if "datasets" not in config:

    configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/nnunet_functions.smk"
include: "rules/sam3d_functions.smk"
include: "rules/saliency_functions.smk"
include: "rules/data.smk"
include: "rules/preprocess.smk"
include: "rules/prompts.smk"
include: "rules/saliency.smk"
include: "rules/train.smk"
include: "rules/sam.smk"
include: "rules/predict.smk"
include: "rules/metrics.smk"
include: "rules/figures.smk"
include: "rules/robustness.smk"
include: "rules/sam3d.smk"
include: "rules/clicks.smk"
include: "rules/nnunet.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
