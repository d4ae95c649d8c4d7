"""Promptable models behind one interface (:mod:`medsegflow.promptable.interface`)."""
