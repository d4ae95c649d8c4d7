"""The training stage of SAM-family models (:mod:`~medsegflow.training.stage`) and its
recipes (:mod:`~medsegflow.training.scratch`, ...), with their shared sampling of training
pairs (:mod:`~medsegflow.training.pairs`) and schedules (:mod:`~medsegflow.training.schedule`)."""
