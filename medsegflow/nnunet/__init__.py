"""nnU-Net v2 as the supervised reference: the real ``nnunetv2`` pipeline, run per job.

Stages (one module each; ``nnunetv2`` and ``torch`` are imported lazily inside functions):

- :mod:`~medsegflow.nnunet.naming`: dataset ids and names, label sources (no heavy imports);
- :mod:`~medsegflow.nnunet.env`: nnU-Net's folder variables, device choice, output capture;
- :mod:`~medsegflow.nnunet.convert`: canonical dataset -> nnU-Net raw ``DatasetNNN_Name``;
- :mod:`~medsegflow.nnunet.plan`: fingerprint, plans and preprocessing (Python API);
- :mod:`~medsegflow.nnunet.trainer`: the short-schedule ``nnUNetTrainer`` subclass;
- :mod:`~medsegflow.nnunet.train`: training, with a ``training.json`` marker written last;
- :mod:`~medsegflow.nnunet.predict`: ``nnUNetPredictor`` on a split, masks in canonical geometry.
"""
