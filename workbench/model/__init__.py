"""The model wing: loading, the embedded weights, prompts and tokens, the KV helpers,
the fast decode path, and the hook checks every higher wing shares.

Imports only the root (`errors`, `options`, `files`).
"""
