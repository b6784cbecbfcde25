"""Analysis: papers x prompts planned into tasks, run through the dispatcher, and the
public ``analyze()`` family.

Owns: planning cells and settling their answers (``analysis``), the models each cell
asks and the workers each may go to (``targets``), running a plan with the
store in front of it (``runner``), background jobs (``jobs``) and the ``analyze``,
``aanalyze`` and ``submit`` methods (``methods``).
May import: every stage below it (core, ``_reading``, ``_prompts``, ``_running``,
``_results``, ``_display``). Only ``_cluster`` imports it.
"""
