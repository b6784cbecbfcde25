"""Prompts as data: presets (TOML files), safe templates and typed answers.

Owns: loading and validating presets (``presets``), one prompt's table in a preset or in
``prompts=`` (``specs``), rendering templates without ``str.format`` on user text
(``templates``), and the JSON schema of a typed answer and the check of a model's answer
against it (``schemas``).
May import: the core modules at the top of the package (``_errors``). Nothing else.
"""
