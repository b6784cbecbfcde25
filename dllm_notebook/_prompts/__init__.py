"""Prompts as data: presets (TOML files) and safe templates.

Owns: loading and validating presets (``presets``) and rendering templates without
``str.format`` on user text (``templates``).
May import: the core modules at the top of the package (``_errors``). Nothing else.
"""
