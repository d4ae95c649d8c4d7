# Predictions of one (dataset, method). scale.predict_shards (or --set-scatter predict=N)
# is the number of prediction jobs per (dataset, method):
#   1: predict_method writes every case and manifest.tsv (predict_single.smk);
#   N > 1: N predict_method_shard jobs write the cases of their shard (round robin in
#     preprocessed-manifest order, medsegflow.stages.predict) into the same folder, and
#     gather_predictions writes manifest.tsv from their manifests (predict_shards.smk).


scattergather:
    predict=config["scale"]["predict_shards"],


# the number of shards after --set-scatter, from the public scatter function
PREDICT_SHARDS = len(scatter.predict("{scatteritem}"))
if not isinstance(PREDICT_SHARDS, int) or PREDICT_SHARDS < 1:
    raise ConfigError(
        f"scale.predict_shards (or --set-scatter predict=N): {PREDICT_SHARDS!r} "
        "must be an integer >= 1"
    )


if PREDICT_SHARDS == 1:

    include: "predict_single.smk"

else:

    include: "predict_shards.smk"
