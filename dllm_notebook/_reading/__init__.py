"""Reading papers: files in, clean text with its pages out.

Owns: finding paper files (``papers``), reading PDFs with PyMuPDF (``pdf``), cleaning and
checking extracted text (``text``), judging whether a page's text is language
(``language``), splitting long text into chunks (``chunking``), and checking a model's
quotes against the paper's text and pages (``evidence``).
May import: the core modules at the top of the package (``_errors``, ``_types``) and
``_prompts``. Never the running, results, analysis or display stages.
"""
