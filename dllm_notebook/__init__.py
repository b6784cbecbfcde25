"""dllm_notebook: spread LLM prompts over the lab's machines from a notebook."""
