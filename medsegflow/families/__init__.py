"""The registry of method families: each family declares, in one place, all the workflow
needs to plan, run and place its prediction jobs.

A family is a :class:`~medsegflow.families.family.Family` value; the registry is
:data:`medsegflow.families.registry.FAMILIES`. The built-in ones are declared in this
package, one module each (:mod:`~medsegflow.families.classical`, ...), and listed in
:data:`~medsegflow.families.registry.BUILTIN`; a family defined elsewhere (a
lab's own package, a test) registers itself with an entry point in the group
``medsegflow.families`` whose object is its :class:`~medsegflow.families.family.Family`::

    [project.entry-points."medsegflow.families"]
    threshold = "my_lab.threshold_family:FAMILY"

Nothing in ``rules/`` or in the workflow logic names a family: the prediction rule runs
:attr:`Family.predict`, its inputs are :attr:`Family.inputs`, its conda env and GPU
request come from :attr:`Family.env` and :attr:`Family.gpu`, the SAM embedding jobs are
planned for the families whose :attr:`Family.cache` is ``"sam_embeddings"``, and the
config schema of ``methods:`` is generated from every family's :attr:`Family.schema`.
"""
