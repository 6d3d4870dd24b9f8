"""The steering wing: steering terms, the one setting → term translation, the hooks
that apply terms, generation, and the slow reference loop generation is tested against.

Imports the root, `workbench.model` and `workbench.vectors`.
"""
