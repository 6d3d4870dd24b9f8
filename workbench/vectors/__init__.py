"""The vectors wing: instruction pairs, reading the residual stream, extraction, the
`InstructionVector` and its files (safetensors, GGUF), and vector diagnostics.

Imports the root and `workbench.model`.
"""
