"""The predictors of the method families (one module per family's method code).

A family is declared once, in the registry (:mod:`medsegflow.families.registry`); its
``Family.predict`` imports its module here lazily. The generic 2D promptable predictor is
:func:`medsegflow.promptable.predict2d.predict_promptable_2d`.
"""
