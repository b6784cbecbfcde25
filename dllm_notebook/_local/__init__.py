"""The local worker: a llama.cpp server started as a child process, with its model file.

Owns: starting and stopping the server (``server``), the child process's entry point and
watchdog (``launch``), finding and checking the model file (``model_files``) and the
embedded default used when no workers are configured (``embedded``).
May import: the core modules only.
"""
