"""Reading papers: files in, clean text with its pages out.

Owns: finding paper files (``papers``), reading PDFs with PyMuPDF (``pdf``), cleaning and
checking extracted text (``text``), judging whether a page's text is language
(``language``), and splitting long text into chunks (``chunking``).
May import: the core modules at the top of the package (``_errors``, ``_types``) and
``_prompts``. Never the running, results, analysis or display stages.
"""
