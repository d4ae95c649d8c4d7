"""SAM-Med3D (uni-medical/SAM-Med3D; medim's classes): model, preprocessing, clicks, inference.

Modules: :mod:`~medsegflow.sam3d.model` (specs, builder, checkpoint loader),
:mod:`~medsegflow.sam3d.preprocess` (1.5 mm model frame, crops, inverse),
:mod:`~medsegflow.sam3d.session` (a crop encoded once, decoded per click),
:mod:`~medsegflow.prompts.clicks` (the simulated clicks, 2D and 3D), :mod:`~medsegflow.sam3d.infer`
(interactive loop), :mod:`~medsegflow.sam3d.windows` (sliding crops) and
:mod:`~medsegflow.sam3d.train` (tiny training loop). Each cites the official file it follows.
"""
